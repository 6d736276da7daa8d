-- The execution log: every attempt a job made, as `sluice.job_attempts` (a
-- view, below) shows it. Most attempts end the job in success, and every fact
-- about such an attempt (its number, worker, start, end) is already on the job
-- row, where the claim and the completion wrote it. Writing them again as a row
-- of their own cost 194 bytes of WAL per job (heap, key and splits: 12% of a
-- job's life). So the table keeps only the attempts the job row cannot tell:
-- failed, timed-out, rescued, released and cancelled attempts, and successes
-- that left output (a shell task's tail). The view adds the last successful
-- attempt of every succeeded job from the job row.
--
-- Nothing may change a succeeded job's attempt, worker_id, started_at or
-- finished_at without first writing its derived row here (a revival of a
-- succeeded DAG node does: sluice.job_attempts_keep).
--
-- No foreign key to sluice.jobs: rows are only written by the engine's own
-- functions, for the job row they have just updated under its lock, and a
-- foreign key would check that row again and lock it FOR KEY SHARE (an extra
-- heap write and WAL record). The rows still go with their job:
-- jobs_after_delete removes them.
CREATE TABLE sluice.job_attempt_log (
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
ALTER TABLE sluice.job_attempt_log SET (autovacuum_vacuum_insert_scale_factor = 0.05);

-- One row per attempt (SPEC: sluice.job_attempts). `WHERE job_id = ...` is
-- pushed into both arms: a probe of the log's key and one of the job's id.
CREATE VIEW sluice.job_attempts AS
SELECT l.job_id, l.attempt, l.worker_id, l.started_at, l.finished_at, l.outcome, l.error, l.output
  FROM sluice.job_attempt_log l
UNION ALL
SELECT j.id, j.attempt, j.worker_id, j.started_at, j.finished_at, 'succeeded', NULL, NULL
  FROM sluice.jobs j
 WHERE j.state = 'succeeded'
   AND NOT EXISTS (SELECT 1 FROM sluice.job_attempt_log l WHERE l.job_id = j.id AND l.attempt = j.attempt);

-- Write the derived attempt rows of these jobs into the log, for a caller about
-- to revive succeeded jobs (their row will no longer tell their last attempt).
-- The caller holds the jobs' row locks.
CREATE FUNCTION sluice.job_attempts_keep(p_ids bigint[]) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO sluice.job_attempt_log (job_id, attempt, worker_id, started_at, finished_at, outcome)
    SELECT j.id, j.attempt, j.worker_id, j.started_at, coalesce(j.finished_at, now()), 'succeeded'
      FROM sluice.jobs j
     WHERE j.id = ANY(p_ids) AND j.state = 'succeeded'
    ON CONFLICT DO NOTHING;
$$;
