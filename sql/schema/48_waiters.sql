-- Waiting for a job or a run to end, woken by a notification instead of polling.
--
--   LISTEN sluice_job_done;               -- first: notifications sent after it count
--   SELECT * FROM sluice.job_await(42);   -- the job now; registers a waiter if unfinished
--   -- ... a notification on sluice_job_done whose payload (job ids, comma
--   -- separated) holds 42: read the job again (sluice.job_await(42) will do).
--
-- The same for runs: LISTEN sluice_run_done, sluice.run_await(id).
--
-- Only jobs someone waits for are notified. A NOTIFY takes a database-wide lock
-- at commit (notifying transactions commit one at a time), so the completion of
-- a job nobody waits for must not send one: it pays one probe of an empty
-- sluice.job_waiters table (jobs_wake_waiters, below) and nothing more.
--
-- Why no end is missed. sluice.job_await locks the job row FOR SHARE, reads its
-- state, and registers the waiter in the same transaction. Every change of a
-- job's state is an UPDATE of its row, which needs a lock that conflicts with
-- FOR SHARE. So a transaction T ending the job either
--   * committed before job_await's lock was granted: job_await reads the
--     finished job and answers it (no waiter is needed); or
--   * updates the row after job_await committed (its lock waits until then):
--     T's trigger runs after its UPDATE, in a statement whose snapshot is taken
--     after that commit, so it sees the waiter row and notifies; and the waiter
--     LISTENed before calling job_await, so it is listening when T commits.
-- Claims take ready rows with FOR UPDATE SKIP LOCKED, so a claimer may pass over
-- a ready job while job_await holds its lock (a few microseconds): job_await then
-- sends the queue's usual wake-up (sluice_jobs) with its commit, and the claimer
-- comes back for it. The other SKIP LOCKED passes (promotion, rescue) come back
-- on their own schedule.
--
-- A waiter row lives until its job ends (the trigger deletes it as it
-- notifies), whether or not anyone still waits: a waiter that gave up leaves it
-- for the next one. Jobs only end by an UPDATE, and only ended jobs are
-- deleted, so no row outlives its job for long.

CREATE TABLE sluice.job_waiters (
    job_id bigint PRIMARY KEY,
    since  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sluice.run_waiters (
    run_id bigint PRIMARY KEY,
    since  timestamptz NOT NULL DEFAULT now()
);

-- Both tables are mostly empty, and the emptiness probe of every completion
-- must not wade through dead rows: vacuum them early.
ALTER TABLE sluice.job_waiters SET (autovacuum_vacuum_threshold = 100, autovacuum_vacuum_scale_factor = 0);
ALTER TABLE sluice.run_waiters SET (autovacuum_vacuum_threshold = 100, autovacuum_vacuum_scale_factor = 0);

-- The job as it is now (no row: no such job). When it has not ended, a waiter
-- is registered: its end will be notified on sluice_job_done.
CREATE FUNCTION sluice.job_await(p_id bigint)
    RETURNS TABLE (id bigint, state sluice.job_state, result jsonb, last_error text, reason text)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_state sluice.job_state;
    v_queue text;
BEGIN
    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            SELECT j.state, j.queue INTO v_state, v_queue FROM sluice.jobs j WHERE j.id = p_id FOR SHARE;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;
    IF v_state IS NULL THEN
        RETURN;
    END IF;
    IF NOT sluice.state_is_terminal(v_state) THEN
        INSERT INTO sluice.job_waiters AS w (job_id) VALUES (p_id) ON CONFLICT (job_id) DO NOTHING;
        IF v_state = 'ready' THEN
            PERFORM sluice.notify_ready(ARRAY[v_queue]::text[]);
        END IF;
    END IF;
    RETURN QUERY
    SELECT j.id, j.state, j.result, j.last_error, j.reason FROM sluice.jobs j WHERE j.id = p_id;
END
$$;

-- The run as it is now (no row: no such run); registers a waiter until it has ended.
CREATE FUNCTION sluice.run_await(p_id bigint)
    RETURNS TABLE (id bigint, state sluice.run_state)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_state sluice.run_state;
BEGIN
    SELECT r.state INTO v_state FROM sluice.dag_runs r WHERE r.id = p_id FOR SHARE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Named ends rather than "not running": a run may also wait to start.
    IF v_state NOT IN ('succeeded', 'failed', 'cancelled') THEN
        INSERT INTO sluice.run_waiters AS w (run_id) VALUES (p_id) ON CONFLICT (run_id) DO NOTHING;
    END IF;
    RETURN QUERY SELECT r.id, r.state FROM sluice.dag_runs r WHERE r.id = p_id;
END
$$;

-- Tell the waiters of these jobs (or runs) that they ended: the ids go out comma
-- separated, at most 400 per notification (payloads are limited to 8000 bytes).
CREATE FUNCTION sluice.waiters_notify(p_channel text, p_ids bigint[]) RETURNS void
    LANGUAGE sql AS $$
    SELECT pg_notify(p_channel, string_agg(s.id::text, ','))
      FROM unnest(p_ids) WITH ORDINALITY AS s(id, n)
     GROUP BY (s.n - 1) / 400;
$$;

-- After any UPDATE of jobs: notify the waiters of the jobs it ended, and forget them.
CREATE FUNCTION sluice.jobs_wake_waiters() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    -- Nobody waits: the cost of a completion nobody waits for ends here.
    IF NOT EXISTS (SELECT 1 FROM sluice.job_waiters) THEN
        RETURN NULL;
    END IF;
    WITH woken AS (
        DELETE FROM sluice.job_waiters w
         USING new_jobs n
         WHERE w.job_id = n.id AND sluice.state_is_terminal(n.state)
        RETURNING w.job_id
    )
    SELECT array_agg(w.job_id) INTO v_ids FROM woken w;
    IF v_ids IS NOT NULL THEN
        PERFORM sluice.waiters_notify('sluice_job_done', v_ids);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_wake_waiters AFTER UPDATE ON sluice.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.jobs_wake_waiters();

CREATE FUNCTION sluice.dag_runs_wake_waiters() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sluice.run_waiters) THEN
        RETURN NULL;
    END IF;
    WITH woken AS (
        DELETE FROM sluice.run_waiters w
         USING new_runs n
         WHERE w.run_id = n.id AND n.state IN ('succeeded', 'failed', 'cancelled')
        RETURNING w.run_id
    )
    SELECT array_agg(w.run_id) INTO v_ids FROM woken w;
    IF v_ids IS NOT NULL THEN
        PERFORM sluice.waiters_notify('sluice_run_done', v_ids);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER dag_runs_wake_waiters AFTER UPDATE ON sluice.dag_runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.dag_runs_wake_waiters();
