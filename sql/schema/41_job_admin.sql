-- Operator and client actions on jobs: enqueue, cancel, retry, the DLQ.

-- The row sluice.enqueue inserts: its arguments as sluice.jobs stores them. A
-- plain SQL function, inlined into both of sluice.enqueue's INSERTs.
CREATE FUNCTION sluice.enqueue_row(
    tenant text, queue text, task text, payload jsonb, priority integer, run_at timestamptz,
    max_attempts integer, idempotency_key text, timeout interval, backoff text,
    backoff_base interval, backoff_max interval, notify jsonb)
    RETURNS TABLE (tenant text, queue text, task text, payload jsonb, priority integer,
                   run_at timestamptz, max_attempts integer, idempotency_key text,
                   timeout interval, backoff text, backoff_base interval, backoff_max interval,
                   notify jsonb)
    LANGUAGE sql STABLE AS $$
    SELECT enqueue_row.tenant, enqueue_row.queue, enqueue_row.task, enqueue_row.payload,
           enqueue_row.priority, coalesce(enqueue_row.run_at, now()), enqueue_row.max_attempts,
           enqueue_row.idempotency_key, enqueue_row.timeout,
           -- The default retry policy is stored as null (13_jobs.sql): 44 bytes a row.
           nullif(enqueue_row.backoff, 'exponential'), nullif(enqueue_row.backoff_base, '1 second'),
           nullif(enqueue_row.backoff_max, '1 hour'), enqueue_row.notify;
$$;

-- Enqueue a job; any client that can call a function can use it. With an
-- idempotency key already used by the tenant, returns the existing job's id and
-- changes nothing. depends_on lists parent job ids (the job stays blocked until
-- they all succeed). The defaults are the column defaults of sluice.jobs (a null
-- retry policy is the default one: sluice.backoff_delay).
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
    backoff         text DEFAULT NULL,       -- null: exponential, 1 second, 1 hour
    backoff_base    interval DEFAULT NULL,
    backoff_max     interval DEFAULT NULL,
    notify          jsonb DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    -- Without a key, a plain INSERT: ON CONFLICT makes every insertion
    -- speculative (one more WAL record, HEAP_CONFIRM: 66 bytes a job) even when
    -- the key is null and the unique index cannot be hit. Both INSERTs take
    -- their row from sluice.enqueue_row.
    IF enqueue.idempotency_key IS NULL THEN
        INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at,
                                      max_attempts, idempotency_key, timeout, backoff,
                                      backoff_base, backoff_max, notify)
        SELECT * FROM sluice.enqueue_row(enqueue.tenant, enqueue.queue, enqueue.task,
                                         enqueue.payload, enqueue.priority, enqueue.run_at,
                                         enqueue.max_attempts, NULL, enqueue.timeout,
                                         enqueue.backoff, enqueue.backoff_base,
                                         enqueue.backoff_max, enqueue.notify)
        RETURNING j.id INTO v_id;
    ELSE
        -- A key the tenant already used: the row is left out (jobs_claim_key).
        PERFORM set_config('sluice.keys_skip', 'on', true);
        INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at,
                                      max_attempts, idempotency_key, timeout, backoff,
                                      backoff_base, backoff_max, notify)
        SELECT * FROM sluice.enqueue_row(enqueue.tenant, enqueue.queue, enqueue.task,
                                         enqueue.payload, enqueue.priority, enqueue.run_at,
                                         enqueue.max_attempts, enqueue.idempotency_key,
                                         enqueue.timeout, enqueue.backoff,
                                         enqueue.backoff_base, enqueue.backoff_max,
                                         enqueue.notify)
        RETURNING j.id INTO v_id;
        PERFORM set_config('sluice.keys_skip', 'off', true);

        IF v_id IS NULL THEN
            -- The key is taken. Its insert waited for the holder to commit, so this
            -- statement's fresh snapshot sees it.
            SELECT k.job_id INTO v_id
              FROM sluice.job_keys k
             WHERE k.tenant = enqueue.tenant AND k.idempotency_key = enqueue.idempotency_key;
            RETURN v_id;
        END IF;
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
-- worker is told to stop it (jobs_after_update sends the NOTIFY). A mapped
-- node takes its unfinished elements with it. Descendants are cancelled as
-- upstream_failed, or decided by their trigger rules. Returns the ids of
-- p_ids it cancelled.
--
-- The targets and the descendants the cancellation will reach are locked in
-- one sweep, running rows first, then the others in rank order (a map element
-- just below its node): the order every engine call takes job rows in
-- (docs/state-machine.md), so a cancel cannot deadlock with a completion or
-- failure releasing or cancelling the same jobs. The cascade
-- (jobs_after_update) then finds its rows already held.
CREATE FUNCTION sluice.job_cancel_once(p_ids bigint[], p_reason text DEFAULT 'cancelled')
    RETURNS SETOF bigint
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_ids   bigint[] := p_ids || ARRAY(SELECT j.id FROM sluice.jobs j
                                        WHERE j.group_id = ANY(p_ids) AND j.archived_at IS NULL
                                          AND NOT sluice.state_is_terminal(j.state));
    v_below bigint[] := sluice.job_descendants(p_ids);
BEGIN
    PERFORM 1
       FROM sluice.jobs j
      WHERE (j.id = ANY(v_ids) AND NOT sluice.state_is_terminal(j.state))
         OR (j.id = ANY(v_below)
             AND (j.state IN ('blocked', 'scheduled', 'ready', 'cancelled', 'failed', 'skipped')
                  OR (j.state = 'waiting' AND j.pending_parents > 0)))
      ORDER BY j.state <> 'running', coalesce(j.group_id, j.id), j.group_id IS NULL, j.id
        FOR NO KEY UPDATE;

    -- A new statement: each target's state as its lock found it.
    RETURN QUERY
    WITH targets AS (
        SELECT j.id, j.state AS was, j.attempt, j.worker_id, j.started_at
          FROM sluice.jobs j
         WHERE j.id = ANY(v_ids) AND NOT sluice.state_is_terminal(j.state)
    ), cancelled AS (
        UPDATE sluice.jobs j
           SET state = 'cancelled', reason = p_reason, finished_at = now(), lease_expires_at = NULL,
               archived_at = now()
          FROM targets t
         WHERE j.id = t.id AND j.archived_at IS NULL
        RETURNING j.id
    ), logged AS (
        INSERT INTO sluice.job_attempt_log (job_id, attempt, worker_id, started_at, outcome, error)
        SELECT t.id, t.attempt, t.worker_id, t.started_at, 'cancelled', p_reason
          FROM targets t
         WHERE t.was = 'running'
    )
    SELECT c.id FROM cancelled c WHERE c.id = ANY(p_ids);
END
$$;

-- job_cancel_once, run again on a moved row (sluice.moved_row_retry):
-- a job completing while it is cancelled moves to history under the cancel.
CREATE FUNCTION sluice.job_cancel(p_ids bigint[], p_reason text DEFAULT 'cancelled')
    RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_round integer := 0;
BEGIN
    LOOP
        BEGIN
            RETURN QUERY SELECT * FROM sluice.job_cancel_once(p_ids, p_reason);
            RETURN;
        EXCEPTION WHEN serialization_failure THEN
            v_round := sluice.moved_row_retry(v_round, SQLERRM);
        END;
    END LOOP;
END
$$;

-- Cancel one job (psql-friendly). True when it was cancelled by this call.
CREATE FUNCTION sluice.cancel_job(job_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM sluice.job_cancel(ARRAY[job_id]));
$$;

-- How many attempts a retried job's new round gets: as many as its last round
-- had, not counting the attempts it handed back (job_release_many raised
-- max_attempts for each). A round starts at 0, or at the attempt count of the
-- dead letter last retried. At least 1, at most 1000 (jobs_max_attempts_range).
-- PL/pgSQL, as sluice.job_fail_rows (40_job_lifecycle.sql): the statement is
-- planned once per session rather than at every statement that calls this.
CREATE FUNCTION sluice.job_retry_round(p_id bigint, p_attempt integer, p_max_attempts integer)
    RETURNS integer
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        WITH round AS (
            SELECT coalesce(max(d.attempts), 0) AS start
              FROM sluice.dead_letters d
             WHERE d.job_id = p_id AND d.resolution = 'retried' AND d.attempts <= p_attempt
        )
        SELECT least(greatest(p_max_attempts - r.start - (
                   SELECT count(*)::integer FROM sluice.job_attempt_log a
                    WHERE a.job_id = p_id AND a.outcome = 'released' AND a.attempt > r.start), 1), 1000)
          FROM round r);
END
$$;

-- Retry failed or cancelled jobs. Each gets a fresh round of attempts (as many
-- as its last round had, hand-backs not counted) and runs again as soon as its
-- parents allow; descendants that were cancelled because of it (as
-- upstream_failed or no_upstream_success, through edges or from a map
-- element to its node) come back with it, and a retried mapped node's failed
-- or cancelled elements too; open dead-letter entries are resolved as
-- retried. Each job brought back is decided again by its trigger rule from
-- its parents, as when it first became ready: with the default rule, a job
-- with a parent that is failed or cancelled (and not retried here) cannot run
-- and ends (or stays) cancelled as upstream_failed, and comes back when that
-- parent is retried. Returns the ids retried.
--
-- Concurrency (docs/state-machine.md): the candidates are read from a snapshot,
-- then locked in rank order, together with the children still waiting for
-- them (they counted them as finished); everything is decided afterwards, by
-- statements whose snapshots see what every earlier holder of those locks
-- committed. A parent that fails or succeeds while this runs either committed
-- before our lock on its child was granted (read here in its new state) or
-- locks that child after us and counts itself then (job_propagate,
-- job_cancel_descendants, job_unblock lock cancelled and failed children too),
-- so the child never stays blocked under a parent that will not succeed, nor
-- counts a parent twice.
CREATE FUNCTION sluice.job_retry(p_ids bigint[]) RETURNS SETOF bigint
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_roots   bigint[];
    v_revived bigint[];
    v_kids    bigint[];
    v_locked  bigint[];
    v_live    bigint[];
    v_waiting bigint[];
    v_ready   bigint[];
    v_cand    bigint[];
    v_s       integer[];
    v_f       integer[];
    v_k       integer[];
    v_events  bigint[];
    v_runs    bigint[];
    v_was     text;
BEGIN
    SELECT array_agg(j.id) INTO v_roots
      FROM sluice.jobs j
     WHERE (j.id = ANY(p_ids) OR j.group_id = ANY(p_ids)) AND j.state IN ('failed', 'cancelled');
    IF v_roots IS NULL THEN
        RETURN;
    END IF;

    WITH RECURSIVE revived(id) AS (
        SELECT l.child_id
          FROM sluice.job_links l JOIN sluice.jobs c ON c.id = l.child_id
         WHERE l.parent_id = ANY(v_roots) AND c.state = 'cancelled'
           AND c.reason IN ('upstream_failed', 'no_upstream_success')
        UNION
        SELECT l.child_id
          FROM revived r
          JOIN sluice.job_links l ON l.parent_id = r.id
          JOIN sluice.jobs c ON c.id = l.child_id
         WHERE c.state = 'cancelled' AND c.reason IN ('upstream_failed', 'no_upstream_success')
    )
    SELECT array_agg(id) INTO v_revived FROM revived WHERE id <> ALL (v_roots);

    -- Children still waiting for parents that come back: they counted them as finished.
    SELECT array_agg(DISTINCT l.child_id) INTO v_kids
      FROM sluice.job_links l JOIN sluice.jobs c ON c.id = l.child_id
     WHERE l.parent_id = ANY(v_roots || coalesce(v_revived, '{}'))
       AND (c.state = 'blocked' OR (c.state = 'waiting' AND c.pending_parents > 0));

    -- A candidate another transaction changed meanwhile (retried it, say) no
    -- longer matches once its lock is granted and is left out.
    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            SELECT array_agg(j.id) INTO v_locked
              FROM (SELECT j.id FROM sluice.jobs j
                     WHERE (j.id = ANY(v_roots || coalesce(v_revived, '{}')) AND j.state IN ('failed', 'cancelled'))
                        OR (j.id = ANY(v_kids) AND (j.state = 'blocked' OR (j.state = 'waiting' AND j.pending_parents > 0)))
                     ORDER BY coalesce(j.group_id, j.id), j.group_id IS NULL, j.id
                       FOR NO KEY UPDATE) j;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;

    -- From here on, what every earlier holder of those locks committed.
    SELECT array_agg(j.id) INTO v_live
      FROM sluice.jobs j
     WHERE j.id = ANY(v_locked) AND j.state IN ('failed', 'cancelled')
       AND (j.id = ANY(v_roots) OR j.reason IN ('upstream_failed', 'no_upstream_success'));
    IF v_live IS NULL THEN
        RETURN;
    END IF;

    PERFORM set_config('sluice.cascading', 'on', true);
    -- The children that counted them as finished wait for them again.
    UPDATE sluice.jobs c
       SET pending_parents = c.pending_parents + x.n,
           parents_failed = nullif(greatest(coalesce(c.parents_failed, 0) - x.n, 0), 0)
      FROM (SELECT l.child_id, count(*)::integer AS n
              FROM sluice.job_links l
             WHERE l.parent_id = ANY(v_live) AND l.child_id <> ALL (v_live)
             GROUP BY l.child_id) x
     WHERE c.id = x.child_id AND c.id = ANY(v_locked)
       AND (c.state = 'blocked' OR (c.state = 'waiting' AND c.pending_parents > 0));

    -- Every job brought back waits for all its parents (a mapped node with
    -- elements: for its elements), then hears below from those that finished.
    -- Cancelled jobs come back from history into the live partition: that move
    -- fires the partition's insert trigger, which must leave their state be.
    v_was := current_setting('sluice.engine_insert', true);
    PERFORM set_config('sluice.engine_insert', 'on', true);
    WITH parents AS (
        SELECT e.child_id AS id, count(*)::integer AS n
          FROM sluice.job_edges e WHERE e.child_id = ANY(v_live) GROUP BY e.child_id
    ), elements AS (
        SELECT j.group_id AS id, count(*)::integer AS n
          FROM sluice.jobs j WHERE j.group_id = ANY(v_live) GROUP BY j.group_id
    ), reset AS (
        UPDATE sluice.jobs j
           SET state = CASE WHEN el.n > 0 THEN 'waiting'::sluice.job_state
                            WHEN p.n > 0 THEN 'blocked'
                            ELSE 'ready' END,
               pending_parents = coalesce(el.n, p.n, 0),
               parents_failed = NULL, reason = NULL, finished_at = NULL,
               max_attempts = CASE WHEN j.id = ANY(v_roots)
                                   THEN j.attempt + sluice.job_retry_round(j.id, j.attempt, j.max_attempts)
                                   ELSE j.max_attempts END,
               payload = coalesce(j.flow -> 'template', j.payload),
               run_at = now(), result = NULL, worker_id = NULL, lease_expires_at = NULL,
               archived_at = NULL
          FROM sluice.jobs x
          LEFT JOIN parents p ON p.id = x.id
          LEFT JOIN elements el ON el.id = x.id
         WHERE j.id = x.id AND x.id = ANY(v_live)
        RETURNING j.id, j.state, j.flow, j.run_id
    )
    SELECT array_agg(r.id) FILTER (WHERE r.state = 'waiting'),
           array_agg(r.id) FILTER (WHERE r.state = 'ready' AND r.flow IS NOT NULL),
           array_agg(DISTINCT r.run_id) FILTER (WHERE r.run_id IS NOT NULL)
      INTO v_waiting, v_ready, v_runs
      FROM reset r;
    PERFORM set_config('sluice.engine_insert', coalesce(nullif(v_was, ''), 'off'), true);

    -- What their parents (elements) that stay finished tell them.
    SELECT array_agg(c.id ORDER BY c.id), array_agg(c.s ORDER BY c.id),
           array_agg(c.f ORDER BY c.id), array_agg(c.k ORDER BY c.id)
      INTO v_cand, v_s, v_f, v_k
      FROM (SELECT x.id, count(*) FILTER (WHERE x.state = 'succeeded')::integer AS s,
                   count(*) FILTER (WHERE x.state IN ('failed', 'cancelled'))::integer AS f,
                   count(*) FILTER (WHERE x.state = 'skipped')::integer AS k
              FROM (SELECT e.child_id AS id, p.state
                      FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                     WHERE e.child_id = ANY(v_live) AND e.child_id <> ALL (coalesce(v_waiting, '{}'))
                       AND e.parent_id <> ALL (v_live)
                    UNION ALL
                    SELECT j.group_id, j.state
                      FROM sluice.jobs j
                     WHERE j.group_id = ANY(v_waiting) AND j.id <> ALL (v_live)) x
             WHERE sluice.state_is_terminal(x.state)
             GROUP BY x.id) c;
    IF v_ready IS NOT NULL THEN
        SELECT array_agg(p.id) FILTER (WHERE sluice.state_is_terminal(p.state)) INTO v_events
          FROM sluice.node_prepare(v_ready) p;
    END IF;
    v_runs := coalesce(v_runs, '{}') || sluice.job_propagate(v_events, v_cand, v_s, v_f, v_k);
    PERFORM set_config('sluice.cascading', 'off', true);

    UPDATE sluice.dead_letters d
       SET resolved_at = now(), resolution = 'retried'
     WHERE d.job_id = ANY(v_roots) AND d.job_id = ANY(v_live) AND d.resolved_at IS NULL;
    IF cardinality(v_runs) > 0 THEN
        PERFORM sluice.dag_run_settle(v_runs);
    END IF;

    RETURN QUERY
    SELECT j.id FROM sluice.jobs j
     WHERE j.id = ANY(v_roots) AND j.id = ANY(p_ids) AND NOT sluice.state_is_terminal(j.state)
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
        RETURNING d.job_id
    ), archived AS (
        -- Out of the queue, the failed job is history (13_jobs.sql); never
        -- archived before it failed (jobs_archived_after_finish: now() is when
        -- this transaction began, which may precede a failure it sees).
        UPDATE sluice.jobs j
           SET archived_at = greatest(now(), j.finished_at)
          FROM resolved r
         WHERE j.id = r.job_id AND j.state = 'failed' AND j.archived_at IS NULL
    )
    SELECT EXISTS (SELECT 1 FROM resolved);
$$;

-- Cancel every unfinished node of a run; the run then ends `cancelled`. A
-- queued run has no nodes yet: it simply ends. Returns how many nodes (and
-- map elements) were cancelled.
CREATE FUNCTION sluice.dag_run_cancel(p_run_id bigint) RETURNS integer
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sluice.dag_runs r
       SET state = 'cancelled', reason = 'run cancelled', finished_at = now()
     WHERE r.id = p_run_id AND r.state = 'queued';
    IF FOUND THEN
        RETURN 0;
    END IF;
    RETURN (SELECT count(*)::integer
              FROM sluice.job_cancel(ARRAY(
                  SELECT j.id FROM sluice.jobs j
                   WHERE j.run_id = p_run_id AND j.state IN ('blocked', 'scheduled', 'ready', 'running', 'waiting')),
                  'run cancelled'));
END
$$;

-- Retry a run's failed nodes and the ones cancelled by hand (or by the run's
-- timeout); the nodes cancelled because of them come back with them. Returns
-- how many nodes were retried.
CREATE FUNCTION sluice.dag_run_retry(p_run_id bigint) RETURNS integer
    LANGUAGE sql AS $$
    SELECT count(*)::integer
      FROM sluice.job_retry(ARRAY(
          SELECT j.id FROM sluice.jobs j
           WHERE j.run_id = p_run_id
             AND (j.state = 'failed'
                  OR (j.state = 'cancelled'
                      AND coalesce(j.reason, '') NOT IN ('upstream_failed', 'no_upstream_success')))));
$$;
