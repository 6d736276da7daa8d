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
--
-- The targets and the descendants the cancellation will reach are locked in
-- one sweep, running rows first, then the others, each in id order: the order
-- every engine call takes job rows in (docs/state-machine.md), so a cancel
-- cannot deadlock with a completion or failure releasing or cancelling the
-- same jobs. The cascade (jobs_after_update) then finds its rows already held.
CREATE FUNCTION sluice.job_cancel(p_ids bigint[], p_reason text DEFAULT 'cancelled')
    RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_below bigint[] := sluice.job_descendants(p_ids);
BEGIN
    PERFORM 1
       FROM sluice.jobs j
      WHERE (j.id = ANY(p_ids) AND NOT sluice.state_is_terminal(j.state))
         OR (j.id = ANY(v_below) AND j.state IN ('blocked', 'scheduled', 'ready', 'cancelled', 'failed'))
      ORDER BY j.state <> 'running', j.id
        FOR NO KEY UPDATE;

    -- A new statement: each target's state as its lock found it.
    RETURN QUERY
    WITH targets AS (
        SELECT j.id, j.state AS was, j.attempt, j.worker_id, j.started_at
          FROM sluice.jobs j
         WHERE j.id = ANY(p_ids) AND NOT sluice.state_is_terminal(j.state)
    ), cancelled AS (
        UPDATE sluice.jobs j
           SET state = 'cancelled', reason = p_reason, finished_at = now(), lease_expires_at = NULL
          FROM targets t
         WHERE j.id = t.id
        RETURNING j.id
    ), logged AS (
        INSERT INTO sluice.job_attempt_log (job_id, attempt, worker_id, started_at, outcome, error)
        SELECT t.id, t.attempt, t.worker_id, t.started_at, 'cancelled', p_reason
          FROM targets t
         WHERE t.was = 'running'
    )
    SELECT c.id FROM cancelled c;
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
CREATE FUNCTION sluice.job_retry_round(p_id bigint, p_attempt integer, p_max_attempts integer)
    RETURNS integer
    LANGUAGE sql STABLE AS $$
    WITH round AS (
        SELECT coalesce(max(d.attempts), 0) AS start
          FROM sluice.dead_letters d
         WHERE d.job_id = p_id AND d.resolution = 'retried' AND d.attempts <= p_attempt
    )
    SELECT least(greatest(p_max_attempts - r.start - (
               SELECT count(*)::integer FROM sluice.job_attempt_log a
                WHERE a.job_id = p_id AND a.outcome = 'released' AND a.attempt > r.start), 1), 1000)
      FROM round r;
$$;

-- Retry failed or cancelled jobs. Each gets a fresh round of attempts (as many
-- as its last round had, hand-backs not counted) and runs again as soon as its
-- parents allow; descendants that were cancelled because of it come back to
-- `blocked`; open dead-letter entries are resolved as retried. A job with a
-- parent that is failed or cancelled (and not retried here) cannot run: it ends
-- (or stays) cancelled as upstream_failed, and comes back when that parent is
-- retried. Returns the ids retried.
--
-- Concurrency (docs/state-machine.md): the candidates are read from a snapshot,
-- then locked in id order; everything is decided afterwards, by statements
-- whose snapshots see what every earlier holder of those locks committed. A
-- parent that fails or succeeds while this runs either committed before our
-- lock on its child was granted (read here in its new state) or locks that
-- child after us and corrects it (job_cancel_descendants, job_unblock), so the
-- child never stays blocked under a parent that will not succeed, nor counts a
-- parent that already did.
CREATE FUNCTION sluice.job_retry(p_ids bigint[]) RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_roots   bigint[];
    v_revived bigint[];
    v_locked  bigint[];
BEGIN
    SELECT array_agg(j.id) INTO v_roots
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

    -- A candidate another transaction changed meanwhile (retried it, say) no
    -- longer matches once its lock is granted and is left out.
    SELECT array_agg(j.id) INTO v_locked
      FROM (SELECT j.id FROM sluice.jobs j
             WHERE j.id = ANY(v_roots || coalesce(v_revived, '{}'))
               AND j.state IN ('failed', 'cancelled')
             ORDER BY j.id
               FOR NO KEY UPDATE) j;
    IF v_locked IS NULL THEN
        RETURN;
    END IF;

    -- Decide every locked job at once, from what is committed now. `live` are
    -- the jobs to bring back; a live job is `doomed` when one of its parents is
    -- failed or cancelled and not live, or is itself doomed. The others count
    -- their parents that have not succeeded (live parents among them).
    -- Doomed roots end cancelled (with their fresh round, for when their parent
    -- is retried and revives them); doomed descendants stay as they are. Their
    -- own descendants are all doomed descendants here already, so the update
    -- need not cascade (sluice.cascading), and takes no lock beyond these.
    PERFORM set_config('sluice.cascading', 'on', true);
    WITH RECURSIVE live AS (
        SELECT j.id, j.id = ANY(v_roots) AS root
          FROM sluice.jobs j
         WHERE j.id = ANY(v_locked)
           AND j.state IN ('failed', 'cancelled')
           AND (j.id = ANY(v_roots) OR j.reason = 'upstream_failed')
    ), doomed(id) AS (
        SELECT e.child_id
          FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
         WHERE e.child_id IN (SELECT l.id FROM live l)
           AND p.state IN ('failed', 'cancelled')
           AND p.id NOT IN (SELECT l.id FROM live l)
        UNION
        SELECT e.child_id
          FROM doomed d JOIN sluice.job_edges e ON e.parent_id = d.id
         WHERE e.child_id IN (SELECT l.id FROM live l)
    ), decided AS (
        SELECT l.id, l.root, l.id IN (SELECT d.id FROM doomed d) AS doomed,
               (SELECT count(*)::integer
                  FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                 WHERE e.child_id = l.id AND p.state <> 'succeeded') AS pending
          FROM live l
    )
    UPDATE sluice.jobs j
       SET state = CASE WHEN x.doomed THEN 'cancelled'::sluice.job_state
                        WHEN x.pending > 0 THEN 'blocked'
                        ELSE 'ready' END,
           pending_parents = CASE WHEN x.doomed THEN 0 ELSE x.pending END,
           reason = CASE WHEN x.doomed THEN 'upstream_failed' END,
           finished_at = CASE WHEN x.doomed THEN now() END,
           max_attempts = CASE WHEN x.root
                               THEN j.attempt + sluice.job_retry_round(j.id, j.attempt, j.max_attempts)
                               ELSE j.max_attempts END,
           run_at = CASE WHEN x.doomed THEN j.run_at ELSE now() END,
           result = NULL, worker_id = NULL, lease_expires_at = NULL
      FROM decided x
     WHERE j.id = x.id
       AND (x.root OR NOT x.doomed);
    PERFORM set_config('sluice.cascading', 'off', true);

    UPDATE sluice.dead_letters d
       SET resolved_at = now(), resolution = 'retried'
     WHERE d.job_id = ANY(v_roots) AND d.job_id = ANY(v_locked) AND d.resolved_at IS NULL;

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
