-- The dead-letter queue: one row per time a job ended `failed`, holding its
-- error history, until an operator retries or discards it.
CREATE TABLE sluice.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key (sluice.jobs has no unique key on id alone): only the engine
    -- writes letters, for the job row it holds locked; jobs_after_delete and
    -- history retirement delete the letters of deleted jobs.
    job_id      bigint NOT NULL,
    attempts    integer NOT NULL,   -- the job's attempt counter when it died
    reason      text NOT NULL,      -- attempts_exhausted | non_retryable | a data-flow reason (docs/dags.md)
    last_error  text,
    errors      jsonb NOT NULL DEFAULT '[]',  -- [{attempt, outcome, error, finished_at}]
    failed_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolution  text,
    CONSTRAINT dead_letters_resolution_valid CHECK (resolution IN ('retried', 'discarded', 'rerun')),
    CONSTRAINT dead_letters_resolved_together CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
-- At most one open entry per job; also the lookup used by retry and discard.
CREATE UNIQUE INDEX dead_letters_open ON sluice.dead_letters (job_id) WHERE resolved_at IS NULL;
