-- Operator and client actions on jobs: enqueue, cancel, retry, the DLQ.

-- Enqueue a job; any client that can call a function can use it. With an
-- idempotency key already used by the tenant, returns the existing job's id and
-- changes nothing. depends_on lists parent job ids (the job stays blocked until
-- they all succeed). The defaults are the column defaults of sluice.jobs.
CREATE FUNCTION sluice.enqueue(
    task            text,
    payload         jsonb DEFAULT '{}',
    queue           text DEFAULT 'default',
    priority        integer DEFAULT 0,
    run_at          timestamptz DEFAULT NULL,
    max_attempts    integer DEFAULT 5,
    depends_on      bigint[] DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    timeout         interval DEFAULT NULL,
    tenant          text DEFAULT 'default',
    backoff         text DEFAULT 'exponential',
    backoff_base    interval DEFAULT '1 second',
    backoff_max     interval DEFAULT '1 hour',
    notify          jsonb DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at, max_attempts,
                                  idempotency_key, timeout, backoff, backoff_base, backoff_max, notify)
    VALUES (enqueue.tenant, enqueue.queue, enqueue.task, enqueue.payload, enqueue.priority,
            coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.idempotency_key,
            enqueue.timeout, enqueue.backoff, enqueue.backoff_base, enqueue.backoff_max, enqueue.notify)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING j.id INTO v_id;

    IF v_id IS NULL THEN
        -- The key is taken. ON CONFLICT waited for the holder to commit, so this
        -- statement's fresh snapshot sees it.
        SELECT j.id INTO v_id
          FROM sluice.jobs j
         WHERE j.tenant = enqueue.tenant AND j.idempotency_key = enqueue.idempotency_key;
        RETURN v_id;
    END IF;

    IF cardinality(depends_on) > 0 THEN
        INSERT INTO sluice.job_edges (parent_id, child_id)
        SELECT DISTINCT p, v_id FROM unnest(depends_on) p;
    END IF;
    RETURN v_id;
END
$$;

-- Cancel jobs that have not finished. Pending ones simply end; a running one
-- loses its lease at once (its worker's late completion is ignored) and its
-- worker is told to stop it (jobs_after_update sends the NOTIFY). Descendants
-- are cancelled as upstream_failed. Returns the ids cancelled.
CREATE FUNCTION sluice.job_cancel(p_ids bigint[], p_reason text DEFAULT 'cancelled')
    RETURNS SETOF bigint
    LANGUAGE sql AS $$
    WITH locked AS (
        SELECT j.id, j.state AS was, j.attempt, j.worker_id, j.started_at
          FROM sluice.jobs j
         WHERE j.id = ANY(p_ids) AND NOT sluice.state_is_terminal(j.state)
         ORDER BY j.id
           FOR NO KEY UPDATE
    ), cancelled AS (
        UPDATE sluice.jobs j
           SET state = 'cancelled', reason = p_reason, finished_at = now(), lease_expires_at = NULL
          FROM locked l
         WHERE j.id = l.id
        RETURNING j.id
    ), logged AS (
        INSERT INTO sluice.job_attempts (job_id, attempt, worker_id, started_at, outcome, error)
        SELECT l.id, l.attempt, l.worker_id, l.started_at, 'cancelled', p_reason
          FROM locked l
         WHERE l.was = 'running'
    )
    SELECT id FROM cancelled;
$$;

-- Cancel one job (psql-friendly). True when it was cancelled by this call.
CREATE FUNCTION sluice.cancel_job(job_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM sluice.job_cancel(ARRAY[job_id]));
$$;

-- Retry failed or cancelled jobs. Each gets fresh attempts (as many as its
-- last round had) and runs again as soon as its parents allow; descendants that
-- were cancelled because of it come back to `blocked`; open dead-letter entries
-- are resolved as retried. A job with a parent that is itself failed or
-- cancelled (and not retried here) stays cancelled. Returns the ids retried.
CREATE FUNCTION sluice.job_retry(p_ids bigint[]) RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_roots   bigint[];
    v_revived bigint[];
    v_all     bigint[];
BEGIN
    SELECT array_agg(j.id ORDER BY j.id) INTO v_roots
      FROM sluice.jobs j
     WHERE j.id = ANY(p_ids) AND j.state IN ('failed', 'cancelled');
    IF v_roots IS NULL THEN
        RETURN;
    END IF;

    WITH RECURSIVE revived(id) AS (
        SELECT e.child_id
          FROM sluice.job_edges e JOIN sluice.jobs c ON c.id = e.child_id
         WHERE e.parent_id = ANY(v_roots) AND c.state = 'cancelled' AND c.reason = 'upstream_failed'
        UNION
        SELECT e.child_id
          FROM revived r
          JOIN sluice.job_edges e ON e.parent_id = r.id
          JOIN sluice.jobs c ON c.id = e.child_id
         WHERE c.state = 'cancelled' AND c.reason = 'upstream_failed'
    )
    SELECT array_agg(id) INTO v_revived FROM revived WHERE id <> ALL (v_roots);

    -- Lock roots and revived descendants together, in id order; re-check states under the lock.
    SELECT array_agg(j.id ORDER BY j.id) INTO v_all
      FROM (SELECT j.id FROM sluice.jobs j
             WHERE j.id = ANY(v_roots || coalesce(v_revived, '{}'))
               AND j.state IN ('failed', 'cancelled')
             ORDER BY j.id
               FOR NO KEY UPDATE) j;

    -- Every job counts the parents it must wait for again; parents being
    -- retried here are not succeeded, so they count.
    UPDATE sluice.jobs j
       SET state = CASE WHEN w.n > 0 THEN 'blocked'::sluice.job_state ELSE 'ready' END,
           pending_parents = w.n,
           max_attempts = CASE WHEN j.id = ANY(v_roots)
                               THEN j.attempt + j.max_attempts - coalesce(
                                        (SELECT max(d.attempts) FROM sluice.dead_letters d
                                          WHERE d.job_id = j.id AND d.resolution = 'retried'), 0)
                               ELSE j.max_attempts END,
           run_at = now(), reason = NULL, finished_at = NULL, result = NULL,
           worker_id = NULL, lease_expires_at = NULL
      FROM (SELECT x.id, (SELECT count(*)::integer
                            FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                           WHERE e.child_id = x.id AND p.state <> 'succeeded') AS n
              FROM unnest(v_all) AS x(id)) w
     WHERE j.id = w.id;

    UPDATE sluice.dead_letters d
       SET resolved_at = now(), resolution = 'retried'
     WHERE d.job_id = ANY(v_all) AND d.resolved_at IS NULL;

    -- A job whose parent is failed or cancelled, and was not retried here, cannot
    -- run: cancel it again (jobs_after_update cascades to its descendants).
    PERFORM sluice.job_cancel(array_agg(DISTINCT e.child_id), 'upstream_failed')
       FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
      WHERE e.child_id = ANY(v_all) AND p.state IN ('failed', 'cancelled')
     HAVING count(*) > 0;

    RETURN QUERY
    SELECT j.id FROM sluice.jobs j
     WHERE j.id = ANY(v_roots) AND NOT sluice.state_is_terminal(j.state)
     ORDER BY j.id;
END
$$;

-- Retry a job from the dead-letter queue (psql-friendly). True when retried.
CREATE FUNCTION sluice.retry_dead(job_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    SELECT EXISTS (
        SELECT 1 FROM sluice.job_retry(ARRAY(
            SELECT d.job_id FROM sluice.dead_letters d
             WHERE d.job_id = retry_dead.job_id AND d.resolved_at IS NULL)));
$$;

-- Resolve a dead-letter entry without retrying: the job stays failed and may be pruned.
CREATE FUNCTION sluice.dead_letter_discard(job_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    WITH resolved AS (
        UPDATE sluice.dead_letters d
           SET resolved_at = now(), resolution = 'discarded'
         WHERE d.job_id = dead_letter_discard.job_id AND d.resolved_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM resolved);
$$;

-- Cancel every unfinished node of a run; the run then ends `cancelled`.
CREATE FUNCTION sluice.dag_run_cancel(p_run_id bigint) RETURNS integer
    LANGUAGE sql AS $$
    SELECT count(*)::integer
      FROM sluice.job_cancel(ARRAY(
          SELECT j.id FROM sluice.jobs j
           WHERE j.run_id = p_run_id AND j.state IN ('blocked', 'scheduled', 'ready', 'running')),
          'run cancelled');
$$;

-- Retry a run's failed nodes and the ones cancelled by hand; the nodes cancelled
-- because of them come back with them. Returns how many nodes were retried.
CREATE FUNCTION sluice.dag_run_retry(p_run_id bigint) RETURNS integer
    LANGUAGE sql AS $$
    SELECT count(*)::integer
      FROM sluice.job_retry(ARRAY(
          SELECT j.id FROM sluice.jobs j
           WHERE j.run_id = p_run_id
             AND (j.state = 'failed' OR (j.state = 'cancelled' AND j.reason IS DISTINCT FROM 'upstream_failed'))));
$$;
