-- Archive January 2023: detach the partition to dump it and drop it later.
SET lock_timeout = '3s';

ALTER TABLE events DETACH PARTITION events_2023_01;
