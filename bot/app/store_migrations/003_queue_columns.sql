-- What the queue needs on a run: its procrastinate job, how many times a worker took it,
-- the shared resource it waits for, the policy's report switches (so a status posted again
-- reports the same way), and whether its final status still has to be posted (set in the
-- same UPDATE that ends the run, cleared once GitHub took the post).
ALTER TABLE gatekeeper.runs ADD COLUMN job_id bigint;
ALTER TABLE gatekeeper.runs ADD COLUMN attempts int NOT NULL DEFAULT 0;
ALTER TABLE gatekeeper.runs ADD COLUMN resource text;
ALTER TABLE gatekeeper.runs ADD COLUMN publish jsonb;
ALTER TABLE gatekeeper.runs ADD COLUMN unposted boolean NOT NULL DEFAULT false;
CREATE INDEX runs_unposted ON gatekeeper.runs (id) WHERE unposted;
