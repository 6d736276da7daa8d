-- The execution log: one row per attempt, written when the attempt ends.
--
-- No foreign key to sluice.jobs: rows are only written by the engine's own
-- functions, for the job row they have just updated under its lock, and a
-- foreign key would check that row again and lock it FOR KEY SHARE for every
-- completed job (an extra heap write and WAL record on the hottest path).
-- The rows still go with their job: jobs_after_delete removes them.
CREATE TABLE sluice.job_attempts (
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL,
    worker_id   text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text NOT NULL,
    error       text,
    output      text,          -- tail of what the task printed (shell tasks)
    PRIMARY KEY (job_id, attempt),
    CONSTRAINT job_attempts_outcome_valid CHECK (
        outcome IN ('succeeded', 'failed', 'timeout', 'rescued', 'released', 'cancelled'))
);
-- Append-only: vacuum for the visibility map, not for dead rows.
ALTER TABLE sluice.job_attempts SET (autovacuum_vacuum_insert_scale_factor = 0.05);
