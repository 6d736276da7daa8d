-- Maintenance that survives any single row.
--
-- The maintenance leader promotes, rescues and prunes with set-based
-- statements (40_job_lifecycle.sql): one statement per batch. One row the
-- statement cannot process (a value a CHECK let through before it existed, a
-- user's trigger that raises, an overflow in a computed value) fails the whole
-- statement, and then every pass, so no job would be promoted, rescued or
-- pruned any more. When a batch fails with such an error, the leader runs the
-- same pass through the functions below instead: one row at a time, each in a
-- subtransaction of its own, so every row that can be processed is, and the
-- one that cannot is set aside and reported:
--
--   * a job that cannot be promoted or rescued is ended `failed`, without
--     retry, with a dead letter naming the error (job_quarantine): an operator
--     sees it in the DLQ, fixes the row and retries it. Nothing is lost.
--   * a finished job or run that cannot be deleted is left in place.
--
-- Each returns one row per row it looked at: `error` null when it was
-- processed, else the error, and whether the job was quarantined. They lock
-- their rows as the set-based statements do (SKIP LOCKED, the same order), so
-- they may run beside them.

-- End job p_id `failed` because maintenance cannot process it: not retried,
-- with p_error as its last error and a dead letter. A running job's attempt is
-- logged as rescued (only the rescuer quarantines running jobs). The UPDATE
-- goes through jobs_after_update like any failure: descendants are cancelled,
-- the run settled, notifications sent. Returns false when the job is already
-- finished (or gone).
CREATE FUNCTION sluice.job_quarantine(p_id bigint, p_error text) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_job sluice.jobs;
BEGIN
    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            SELECT * INTO v_job FROM sluice.jobs j WHERE j.id = p_id FOR NO KEY UPDATE;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;
    IF v_job.id IS NULL OR sluice.state_is_terminal(v_job.state) THEN
        RETURN false;
    END IF;
    IF v_job.state = 'running' THEN
        INSERT INTO sluice.job_attempt_log (job_id, attempt, worker_id, started_at, outcome, error)
        VALUES (v_job.id, v_job.attempt, v_job.worker_id, v_job.started_at, 'rescued', p_error)
        ON CONFLICT DO NOTHING;
    END IF;
    UPDATE sluice.jobs j
       SET state = 'failed', reason = 'non_retryable', last_error = p_error,
           finished_at = now(), lease_expires_at = NULL
     WHERE j.id = p_id;
    INSERT INTO sluice.dead_letters (job_id, attempts, reason, last_error, errors)
    SELECT v_job.id, v_job.attempt, 'non_retryable', p_error,
           coalesce(jsonb_agg(jsonb_build_object('attempt', a.attempt, 'outcome', a.outcome,
                                                 'error', a.error, 'finished_at', a.finished_at)
                              ORDER BY a.attempt), '[]')
      FROM sluice.job_attempt_log a
     WHERE a.job_id = v_job.id
    ON CONFLICT (job_id) WHERE resolved_at IS NULL DO NOTHING;
    RETURN true;
END
$$;

-- Quarantine p_id in a subtransaction of its own; false when even that fails
-- (a row no UPDATE can pass: it stays as it is, for an operator to fix).
CREATE FUNCTION sluice.job_quarantine_quietly(p_id bigint, p_error text) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    RETURN sluice.job_quarantine(p_id, p_error);
EXCEPTION WHEN OTHERS THEN
    RETURN false;
END
$$;

-- job_promote_scheduled, one job at a time.
CREATE FUNCTION sluice.job_promote_scheduled_isolated(p_limit integer DEFAULT 1000)
    RETURNS TABLE (id bigint, error text, quarantined boolean)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    FOR v_id IN SELECT d.id FROM sluice.job_promote_due(p_limit) AS d(id)
    LOOP
        id := v_id;
        error := NULL;
        quarantined := false;
        BEGIN
            UPDATE sluice.jobs j SET state = 'ready' WHERE j.id = v_id;
        EXCEPTION WHEN OTHERS THEN
            error := SQLERRM;
            quarantined := sluice.job_quarantine_quietly(
                v_id, format('the maintenance leader could not promote this job: %s', SQLERRM));
        END;
        RETURN NEXT;
    END LOOP;
END
$$;

-- job_rescue_expired, one job at a time.
CREATE FUNCTION sluice.job_rescue_expired_isolated(p_limit integer DEFAULT 1000)
    RETURNS TABLE (id bigint, error text, quarantined boolean)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_job record;
BEGIN
    FOR v_job IN
        SELECT j.id, j.attempt, j.worker_id
          FROM sluice.jobs j
         WHERE j.state = 'running' AND j.lease_expires_at < now()
         ORDER BY j.id
         LIMIT p_limit
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        id := v_job.id;
        error := NULL;
        quarantined := false;
        BEGIN
            -- As job_rescue_expired does it, for this one job.
            PERFORM sluice.job_fail_rows(
                ARRAY[v_job.id], ARRAY[v_job.attempt], ARRAY[v_job.worker_id],
                ARRAY[format('lease expired: worker %s stopped heartbeating', v_job.worker_id)],
                ARRAY[true], ARRAY['rescued'], NULL);
        EXCEPTION WHEN OTHERS THEN
            error := SQLERRM;
            quarantined := sluice.job_quarantine_quietly(
                v_job.id,
                format('lease expired: worker %s stopped heartbeating; the job could not be '
                       'retried: %s', v_job.worker_id, SQLERRM));
        END;
        RETURN NEXT;
    END LOOP;
END
$$;

-- job_prune, one job or run at a time (the same choice of rows). A row that
-- cannot be deleted is finished anyway: it is only left in place.
CREATE FUNCTION sluice.job_prune_isolated(p_retention interval, p_limit integer DEFAULT 1000)
    RETURNS TABLE (kind text, id bigint, error text)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    kind := 'job';
    FOR v_id IN SELECT d.id FROM sluice.job_prune_due(p_retention, p_limit) AS d(id)
    LOOP
        id := v_id;
        error := NULL;
        BEGIN
            DELETE FROM sluice.jobs j WHERE j.id = v_id;
        EXCEPTION WHEN OTHERS THEN
            error := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;

    kind := 'run';
    FOR v_id IN SELECT d.id FROM sluice.dag_run_prune_due(p_retention, greatest(p_limit / 100, 1)) AS d(id)
    LOOP
        id := v_id;
        error := NULL;
        BEGIN
            DELETE FROM sluice.dag_runs r WHERE r.id = v_id;
        EXCEPTION WHEN OTHERS THEN
            error := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
