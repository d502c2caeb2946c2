-- Monthly partitions for the events table, created ahead of time by a helper function.
SET lock_timeout = '3s';

CREATE OR REPLACE FUNCTION create_event_partition(month date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    partition text := format('events_%s', to_char(month, 'YYYY_MM'));
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
        partition, month, month + interval '1 month'
    );
END;
$$;

SELECT create_event_partition(date_trunc('month', now())::date);
SELECT create_event_partition((date_trunc('month', now()) + interval '1 month')::date);

-- Retire the oldest month.
ALTER TABLE events DETACH PARTITION events_2023_01;
