-- The worker's side of a job's life: claim, heartbeat, complete, fail, release,
-- and the maintenance that promotes, rescues and prunes. Every function that
-- finishes an attempt only touches jobs still `running` under the caller's lease
-- (same worker, same attempt): a late completion from a worker whose lease was
-- rescued, or a duplicate one, changes nothing.
--
-- Those functions find their jobs by primary key and test the state as text
-- (`j.state::text = 'running'`). Written as `j.state = 'running'`, the test
-- lets the planner read every running job through the jobs_running partial
-- index and hash-join them with the batch: statistics taken while nothing ran
-- say "about one running job", so that looks cheapest. It is not: every
-- running job of every worker is read on each call, and while a long
-- transaction keeps vacuum from cleaning up, jobs_running holds an entry for
-- every job that ever ran, so each completion reads them all. As text, the test
-- matches no index, and the rows are found by id.

-- The queues that have ready jobs, in name order, read from jobs_ready one entry
-- per queue (a "loose index scan": each step descends the index to the first
-- entry past the previous queue's name) instead of every ready job: a wildcard
-- claim costs one index descent per such queue, whatever their depth. Each step
-- still passes over the entries of jobs claimed but not yet vacuumed at its
-- queue's head, as every claim does.
CREATE FUNCTION sluice.ready_queues() RETURNS SETOF text
    LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk(queue) AS (
        (SELECT j.queue::text FROM sluice.jobs j
          WHERE j.state = 'ready' AND j.archived_at IS NULL ORDER BY j.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue::text FROM sluice.jobs j
                 WHERE j.state = 'ready' AND j.archived_at IS NULL AND j.queue > w.queue
                 ORDER BY j.queue LIMIT 1)
          FROM walk w
         WHERE w.queue IS NOT NULL
    )
    SELECT queue FROM walk WHERE queue IS NOT NULL;
$$;

-- Claim up to p_limit ready jobs from p_queues for worker p_worker_id, leasing
-- them for p_lease. Lowest priority value first, then the longest due, then the
-- oldest; paused queues are skipped and queue concurrency limits honoured.
--
-- p_after (priority, run_at, id), optional, is where the caller's previous claim
-- from the same single queue ended: the scan starts past it instead of at the
-- head of jobs_ready. While a long transaction keeps vacuum from removing the
-- index entries of jobs already claimed, the head fills with dead entries that
-- every claim would otherwise step over, and claims slow down in proportion to
-- the jobs processed since. A job that becomes ready behind the bound (a
-- released DAG child, a lower priority value) always comes with a NOTIFY, on
-- which the worker drops its bound; so does its fallback poll.
--
-- `parents` is a DAG node's parents' results, {node id: result} (null for a
-- job outside a run, a map element, or a node without parents); computed only
-- for jobs of a run, so a plain claim pays one null test. Above
-- sluice.inline_parents_bytes() it is {"_omitted": true}: read them with
-- sluice.job_parent_results(id). `map_index` is a map element's place in its
-- list (ctx.index), null for any other job.
--
-- p_queues may hold '*', every queue (sluice.queue_name refuses it as a
-- name): first the queues that have ready jobs now are found by a walk of
-- jobs_ready that reads one entry per queue (sluice.ready_queues), then the
-- claim goes on as if the caller had named them (the fast path when there is
-- one), skipping paused queues and honouring limits alike. A queue that gets
-- ready jobs after the walk is left to the next claim: its insert notifies,
-- and a worker's claim after its wait barrier walks after the inserts the
-- barrier waited for. p_after is ignored with '*' (the bound belongs to one
-- queue's scan).
--
-- p_tasks, optional, names the tasks the caller has handlers for: it claims
-- only those, and a job whose task it cannot run stays ready for a worker that
-- can (queue_stats counts those no live consumer can run as `unrunnable`),
-- instead of being claimed and failed. The test is a filter on the same
-- ordered range scan of jobs_ready: each claim steps over the ready jobs of
-- other tasks ahead of the ones it takes (in a mixed fleet they are taken by
-- the other workers as fast; jobs no worker can run stay at the head of their
-- queue and are stepped over by every claim until a worker for them starts).
--
-- It reads and updates sluice.jobs_live, the live partition, by name rather
-- than through sluice.jobs: a ready job is always there, and a claim never
-- moves a row (it sets no archived_at). Through the parent, every claim paid
-- for the partitioned table's executor start-up, the transition tables of its
-- AFTER UPDATE statement triggers and two PL/pgSQL trigger calls: a one-job
-- claim's backend CPU went from 638 to 552 us (median of 5 alternated rounds
-- on a loaded machine; per job of a 256-job claim, 16.2 -> 16.1 us: those
-- costs are per statement). Those triggers are declared on sluice.jobs and,
-- being statement triggers, fire only for statements that name it; neither
-- has anything to do for a claim: jobs_after_update acts only when some row's
-- new state is not `running` (a claim's rows all are: it returned at its
-- first probe), and jobs_wake_waiters only on jobs that ended. The row
-- triggers on jobs_live are INSERT triggers; the CHECK constraints, the
-- partition's constraint and the foreign key are the partition's own and are
-- checked alike. The rows locked, and their order, are the same; a row moved
-- to history under the claim still raises 40001 (docs/state-machine.md,
-- "Moved rows"): the lock is taken on the same partition.
-- tests/engine/test_claim.py checks that nothing a claim must do is lost.
CREATE FUNCTION sluice.job_claim_once(
    p_worker_id text, p_queues text[], p_limit integer, p_lease interval,
    p_after_priority integer DEFAULT NULL, p_after_run_at timestamptz DEFAULT NULL,
    p_after_id bigint DEFAULT NULL, p_tasks text[] DEFAULT NULL
) RETURNS TABLE (
    id bigint, tenant sluice.tenant_name, queue sluice.queue_name, task sluice.task_name,
    payload jsonb, priority integer,
    attempt integer, max_attempts integer, timeout interval, run_id bigint, node text,
    run_at timestamptz, created_at timestamptz, started_at timestamptz, parents jsonb,
    map_index integer
)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_queues text[] := p_queues;
BEGIN
    IF p_limit < 1 THEN
        RETURN;
    END IF;
    IF '*' = ANY(p_queues) THEN
        -- In FROM, so that the walk is inlined here and its plan cached with
        -- this function's (called as a value, it is planned at every call).
        v_queues := ARRAY(SELECT r.queue FROM sluice.ready_queues() r(queue));
        IF cardinality(v_queues) = 0 THEN
            RETURN;
        END IF;
        p_after_priority := NULL;
        p_after_run_at := NULL;
        p_after_id := NULL;
    END IF;
    -- The common case, one queue neither paused nor limited, as one plain
    -- statement: an ordered range scan of jobs_ready for that queue. It costs
    -- about half the general form below, and a claim is on the path from an
    -- INSERT to its handler starting.
    IF cardinality(v_queues) = 1 AND NOT EXISTS (
        SELECT 1 FROM sluice.queues q
         WHERE q.name = v_queues[1] AND (q.paused OR q.concurrency_limit IS NOT NULL))
    THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id
              FROM sluice.jobs_live j
             WHERE j.state = 'ready' AND j.queue = v_queues[1]
               AND (p_tasks IS NULL OR j.task = ANY(p_tasks))
               -- An index bound: without p_after it is below every job.
               AND (j.priority, j.run_at, j.id)
                   > (coalesce(p_after_priority, -2147483648),
                      coalesce(p_after_run_at, '-infinity'), coalesce(p_after_id, 0))
             ORDER BY j.priority, j.run_at, j.id
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        )
        UPDATE sluice.jobs_live j
           SET state = 'running',
               attempt = j.attempt + 1,
               worker_id = p_worker_id,
               lease_expires_at = now() + p_lease,
               -- clock_timestamp, not now(): this statement's snapshot is newer than
               -- its transaction, and may hold a child whose parent finished (at its
               -- own now()) after this transaction began. The lease counts from the
               -- transaction's start, a little on the safe side.
               started_at = clock_timestamp(),
               progress = NULL
          FROM picked
         WHERE j.id = picked.id
        RETURNING j.id, j.tenant, j.queue, j.task, j.payload::jsonb, j.priority, j.attempt::integer,
                  j.max_attempts, j.timeout::interval, j.run_id, j.node, j.run_at::timestamptz,
                  j.created_at, j.started_at,
                  CASE WHEN j.run_id IS NOT NULL AND j.map_index IS NULL
                       THEN sluice.job_parent_results(j.id, sluice.inline_parents_bytes()) END,
                  j.map_index::integer;
        RETURN;
    END IF;
    -- A limited queue's running count must not be read by two claimers at once,
    -- or both would fill the same free slots: lock those queue rows (in name
    -- order) so limited claims take turns. The claim below is a new statement,
    -- so it counts with a snapshot taken after the lock was granted. (A
    -- wildcard claim locks the limited queues its walk found, the only ones it
    -- claims from.)
    PERFORM 1
       FROM sluice.queues q
      WHERE q.name = ANY(v_queues) AND q.concurrency_limit IS NOT NULL AND NOT q.paused
      ORDER BY q.name
        FOR NO KEY UPDATE;

    RETURN QUERY
    WITH lanes AS (
        SELECT l.name,
               CASE WHEN q.concurrency_limit IS NULL THEN p_limit
                    ELSE least(p_limit, q.concurrency_limit - (
                             SELECT count(*)::integer FROM sluice.jobs_live r
                              WHERE r.state = 'running' AND r.queue = l.name))
               END AS slots
          FROM unnest(v_queues) AS l(name)
          LEFT JOIN sluice.queues q ON q.name = l.name
         WHERE q.paused IS NOT TRUE
    ), picked AS (
        -- Per queue, a range scan of the jobs_ready index; SKIP LOCKED passes over
        -- rows another claimer is taking right now instead of waiting for it.
        SELECT c.id
          FROM lanes
         CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.run_at
                  FROM sluice.jobs_live j
                 WHERE j.state = 'ready' AND j.queue = lanes.name
                   AND (p_tasks IS NULL OR j.task = ANY(p_tasks))
                 ORDER BY j.priority, j.run_at, j.id
                 LIMIT greatest(lanes.slots, 0)
                   FOR UPDATE SKIP LOCKED) c
         ORDER BY c.priority, c.run_at, c.id
         LIMIT p_limit
    )
    UPDATE sluice.jobs_live j
       SET state = 'running',
           attempt = j.attempt + 1,
           worker_id = p_worker_id,
           lease_expires_at = now() + p_lease,
           started_at = clock_timestamp(),  -- as above
           progress = NULL
      FROM picked
     WHERE j.id = picked.id
    RETURNING j.id, j.tenant, j.queue, j.task, j.payload::jsonb, j.priority, j.attempt::integer,
              j.max_attempts, j.timeout::interval, j.run_id, j.node, j.run_at::timestamptz,
              j.created_at, j.started_at,
              CASE WHEN j.run_id IS NOT NULL AND j.map_index IS NULL
                   THEN sluice.job_parent_results(j.id, sluice.inline_parents_bytes()) END,
              j.map_index::integer;
END
$$;

-- job_claim_once, run again on a moved row (sluice.moved_row_retry): a claim
-- whose snapshot still sees a job as ready that another worker has since
-- claimed and completed (moved to history) fails with 40001 even in READ
-- COMMITTED; run again, its new snapshot no longer sees that job. The claim to
-- call from SQL. The worker calls job_claim_once itself and its door runs it
-- again on 40001 (sql/queries/jobs.sql): the subtransaction this retry needs, and the
-- second frame, cost a one-job claim a fifth of its backend CPU.
CREATE FUNCTION sluice.job_claim(
    p_worker_id text, p_queues text[], p_limit integer, p_lease interval,
    p_after_priority integer DEFAULT NULL, p_after_run_at timestamptz DEFAULT NULL,
    p_after_id bigint DEFAULT NULL, p_tasks text[] DEFAULT NULL
) RETURNS TABLE (
    id bigint, tenant sluice.tenant_name, queue sluice.queue_name, task sluice.task_name,
    payload jsonb, priority integer,
    attempt integer, max_attempts integer, timeout interval, run_id bigint, node text,
    run_at timestamptz, created_at timestamptz, started_at timestamptz, parents jsonb,
    map_index integer
)
    LANGUAGE plpgsql AS $$
DECLARE
    v_round integer := 0;
BEGIN
    LOOP
        BEGIN
            -- The inner function's rows are all made before the first is returned
            -- here: a failure leaves nothing half-returned.
            RETURN QUERY SELECT * FROM sluice.job_claim_once(
                p_worker_id, p_queues, p_limit, p_lease, p_after_priority, p_after_run_at,
                p_after_id, p_tasks);
            RETURN;
        EXCEPTION WHEN serialization_failure THEN
            v_round := sluice.moved_row_retry(v_round, SQLERRM);
        END;
    END LOOP;
END
$$;

-- Renew the leases of the attempts a worker is still running, in one
-- statement (p_ids and p_attempts are parallel), and return the (id, attempt)
-- pairs renewed. A lease is renewed only for the very attempt named: after a
-- worker stalled past its lease, its job may have been rescued and claimed
-- again, by another worker or by this one, and the stale attempt must not keep
-- the new one's lease alive. A pair missing from the answer is no longer this
-- worker's (cancelled, or rescued after a stall): the worker stops it.
--
-- The worker renews from a connection of its own (its lease keeper thread),
-- beside the one that writes its completion batches: the rows are locked in
-- id order first, as completions and the rescuer lock them, so the two never
-- wait for each other in a cycle.
CREATE FUNCTION sluice.job_heartbeat_once(
    p_worker_id text, p_ids bigint[], p_attempts integer[], p_lease interval
) RETURNS TABLE (id bigint, attempt integer)
    LANGUAGE sql AS $$
    WITH held AS (
        SELECT j.id
          FROM sluice.jobs j
          JOIN unnest(p_ids, p_attempts) AS h(id, attempt)
            ON j.id = h.id AND j.attempt = h.attempt
         WHERE j.state::text = 'running' AND j.worker_id = p_worker_id AND j.archived_at IS NULL
         ORDER BY j.id
           FOR NO KEY UPDATE OF j
    )
    UPDATE sluice.jobs j
       SET lease_expires_at = now() + p_lease
      FROM held
     WHERE j.id = held.id AND j.archived_at IS NULL
    RETURNING j.id, j.attempt;
$$;

-- job_heartbeat_once, run again on a moved row (sluice.moved_row_retry).
CREATE FUNCTION sluice.job_heartbeat(
    p_worker_id text, p_ids bigint[], p_attempts integer[], p_lease interval
) RETURNS TABLE (id bigint, attempt integer)
    LANGUAGE plpgsql AS $$
DECLARE
    v_round integer := 0;
BEGIN
    LOOP
        BEGIN
            RETURN QUERY SELECT * FROM sluice.job_heartbeat_once(p_worker_id, p_ids, p_attempts, p_lease);
            RETURN;
        EXCEPTION WHEN serialization_failure THEN
            v_round := sluice.moved_row_retry(v_round, SQLERRM);
        END;
    END LOOP;
END
$$;

-- Record a running job's progress (any JSON the handler reports).
CREATE FUNCTION sluice.job_progress(p_worker_id text, p_id bigint, p_attempt integer, p_progress jsonb)
    RETURNS boolean
    LANGUAGE sql AS $$
    WITH updated AS (
        UPDATE sluice.jobs
           SET progress = p_progress
         WHERE id = p_id AND attempt = p_attempt AND state::text = 'running' AND worker_id = p_worker_id
           AND archived_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM updated);
$$;

-- Finish a batch of successful attempts (the arrays are parallel: job, attempt,
-- result, output tail). One statement for the whole batch: the jobs, the
-- attempt log rows of those that left output, and (through jobs_after_update)
-- their children and runs. A success without output is logged by the job row
-- alone (sluice.job_attempts shows it from there: 15_job_attempts.sql).
-- Returns the ids that were still this worker's to complete. PL/pgSQL, not SQL:
-- it keeps the statement's plan across calls, where a SQL function would plan
-- this CTE again for every batch.
--
-- Always the generic plan (a nested loop over the batch, each job found by its
-- id). A custom plan, which PL/pgSQL makes for the first five calls in every
-- session, costs the UPDATE by the statistics of the live partition, which
-- were taken while no job ran: `worker_id = p_worker_id` then looks like one
-- row, and below about 25,000 live jobs a sequential scan of the partition
-- joined to the batch by a nested loop looked cheaper than a batch of index
-- lookups. It compared every running job with every job of the batch (65,536
-- comparisons for 256 jobs, 768 x 768 for a larger one): a fresh worker's first
-- completions took 30-120 ms each, and in `bench drain` of 20,000 jobs they
-- were most of PostgreSQL's CPU per job. The generic plan does not read the
-- statistics of worker_id or the batch's size: it looks jobs up by id at any
-- size of either.
--
-- A result larger than sluice.max_result_bytes() (its stored size) is not
-- kept: that attempt fails the job at once (a retry cannot shrink it), with
-- an error naming both sizes, and its id is not in the answer.
CREATE FUNCTION sluice.job_complete_many_once(
    p_worker_id text, p_ids bigint[], p_attempts integer[], p_results jsonb[],
    p_outputs text[] DEFAULT NULL
) RETURNS SETOF bigint
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_limit bigint;
BEGIN
    -- Sizes are read from the values' headers: nothing is serialised.
    IF EXISTS (SELECT 1 FROM unnest(p_results) r WHERE pg_column_size(r) > 1024) THEN
        v_limit := sluice.max_result_bytes();
        IF EXISTS (SELECT 1 FROM unnest(p_results) r WHERE pg_column_size(r) > v_limit) THEN
            PERFORM 1
               FROM sluice.job_fail_rows(
                   ARRAY(SELECT d.id FROM unnest(p_ids, p_results) WITH ORDINALITY AS d(id, result, n)
                          WHERE pg_column_size(d.result) > v_limit ORDER BY d.n),
                   ARRAY(SELECT d.attempt FROM unnest(p_attempts, p_results) WITH ORDINALITY AS d(attempt, result, n)
                          WHERE pg_column_size(d.result) > v_limit ORDER BY d.n),
                   ARRAY(SELECT p_worker_id FROM unnest(p_results) r WHERE pg_column_size(r) > v_limit),
                   ARRAY(SELECT format('result of %s bytes exceeds the limit of %s bytes (sluice.max_result_bytes)',
                                       pg_column_size(r), v_limit)
                           FROM unnest(p_results) WITH ORDINALITY AS x(r, n)
                          WHERE pg_column_size(r) > v_limit ORDER BY n),
                   ARRAY(SELECT false FROM unnest(p_results) r WHERE pg_column_size(r) > v_limit),
                   ARRAY(SELECT 'failed'::text FROM unnest(p_results) r WHERE pg_column_size(r) > v_limit),
                   ARRAY(SELECT d.output FROM unnest(p_results, p_outputs) WITH ORDINALITY AS d(result, output, n)
                          WHERE pg_column_size(d.result) > v_limit ORDER BY d.n));
            UPDATE sluice.jobs j SET reason = 'result_too_large'
              FROM unnest(p_ids, p_results) AS d(id, result)
             WHERE j.id = d.id AND pg_column_size(d.result) > v_limit AND j.state = 'failed'
               AND j.reason = 'non_retryable' AND j.worker_id = p_worker_id AND j.archived_at IS NULL;
            UPDATE sluice.dead_letters l SET reason = 'result_too_large'
              FROM unnest(p_ids, p_results) AS d(id, result)
             WHERE l.job_id = d.id AND pg_column_size(d.result) > v_limit AND l.resolved_at IS NULL
               AND l.reason = 'non_retryable';
            SELECT array_agg(d.id ORDER BY d.n), array_agg(d.attempt ORDER BY d.n),
                   array_agg(d.result ORDER BY d.n), array_agg(d.output ORDER BY d.n)
              INTO p_ids, p_attempts, p_results, p_outputs
              FROM unnest(p_ids, p_attempts, p_results, p_outputs) WITH ORDINALITY AS d(id, attempt, result, output, n)
             WHERE pg_column_size(d.result) <= v_limit OR d.result IS NULL;
            IF p_ids IS NULL THEN
                RETURN;
            END IF;
        END IF;
    END IF;
    RETURN QUERY
    WITH done AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_results, p_outputs) AS d(id, attempt, result, output)
    ), completed AS (
        UPDATE sluice.jobs j
           SET state = 'succeeded', result = d.result, finished_at = now(), lease_expires_at = NULL,
               archived_at = now()
          FROM done d
         WHERE j.id = d.id AND j.attempt = d.attempt AND j.state::text = 'running' AND j.worker_id = p_worker_id
           AND j.archived_at IS NULL
        RETURNING j.id, j.attempt, j.started_at, d.output
    ), logged AS (
        INSERT INTO sluice.job_attempt_log (job_id, attempt, worker_id, started_at, outcome, output)
        SELECT c.id, c.attempt, p_worker_id, c.started_at, 'succeeded', c.output
          FROM completed c
         WHERE c.output IS NOT NULL
    )
    SELECT c.id FROM completed c;
END
$$;

-- job_complete_many_once, run again on a moved row (sluice.moved_row_retry).
CREATE FUNCTION sluice.job_complete_many(
    p_worker_id text, p_ids bigint[], p_attempts integer[], p_results jsonb[],
    p_outputs text[] DEFAULT NULL
) RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_round integer := 0;
BEGIN
    LOOP
        BEGIN
            RETURN QUERY SELECT * FROM sluice.job_complete_many_once(
                p_worker_id, p_ids, p_attempts, p_results, p_outputs);
            RETURN;
        EXCEPTION WHEN serialization_failure THEN
            v_round := sluice.moved_row_retry(v_round, SQLERRM);
        END;
    END LOOP;
END
$$;

-- Finish failed attempts (parallel arrays; each row names its worker, so the
-- rescuer can use it for jobs of many workers). With attempts left and a
-- retryable error the job is scheduled again after its backoff; otherwise it
-- ends `failed` with a dead-letter row holding its error history.
--
-- PL/pgSQL, not SQL: a SQL function that cannot be inlined plans its statement
-- again at every call (here, at every batch of failures and every rescue),
-- where PL/pgSQL keeps the plan for the session. The statement names the live
-- partition (archived_at IS NULL), so the generic plan prunes as the custom
-- ones do and plan_cache_mode = auto settles on it.
CREATE FUNCTION sluice.job_fail_rows(
    p_ids bigint[], p_attempts integer[], p_worker_ids text[], p_errors text[],
    p_retryable boolean[], p_outcomes text[], p_outputs text[]
) RETURNS TABLE (id bigint, state sluice.job_state, run_at timestamptz)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH f AS (
        SELECT *
          FROM unnest(p_ids, p_attempts, p_worker_ids, p_errors, p_retryable, p_outcomes, p_outputs)
            AS f(id, attempt, worker_id, error, retryable, outcome, output)
    ), decided AS (
        -- The backoff is only computed for jobs that will retry.
        SELECT f.*, x.retry,
               CASE WHEN x.retry
                    THEN now() + sluice.backoff_delay(j.backoff, j.backoff_base, j.backoff_max,
                                                      j.attempt, random())
               END AS retry_at
          FROM f
          JOIN sluice.jobs j ON j.id = f.id AND j.archived_at IS NULL
         CROSS JOIN LATERAL (SELECT f.retryable AND j.attempt < j.max_attempts AS retry) x
    ), failed AS (
        UPDATE sluice.jobs j
           SET state = CASE WHEN NOT d.retry THEN 'failed'::sluice.job_state
                            WHEN d.retry_at > now() THEN 'scheduled'
                            ELSE 'ready' END,
               run_at = CASE WHEN d.retry THEN d.retry_at ELSE j.run_at END,
               finished_at = CASE WHEN d.retry THEN NULL ELSE now() END,
               reason = CASE WHEN d.retry THEN NULL
                             WHEN d.retryable THEN 'attempts_exhausted'
                             ELSE 'non_retryable' END,
               last_error = d.error,
               lease_expires_at = NULL
          FROM decided d
         WHERE j.id = d.id AND j.attempt = d.attempt AND j.state::text = 'running' AND j.worker_id = d.worker_id
           AND j.archived_at IS NULL
        RETURNING j.id, j.state, j.run_at, j.attempt, j.started_at, j.reason,
                  d.worker_id, d.error, d.outcome, d.output
    ), logged AS (
        INSERT INTO sluice.job_attempt_log (job_id, attempt, worker_id, started_at, outcome, error, output)
        SELECT x.id, x.attempt, x.worker_id, x.started_at, x.outcome, x.error, x.output FROM failed x
    ), dead AS (
        -- This statement's own attempt rows are not visible to it yet: add them by hand.
        INSERT INTO sluice.dead_letters (job_id, attempts, reason, last_error, errors)
        SELECT x.id, x.attempt, x.reason, x.error,
               coalesce((SELECT jsonb_agg(jsonb_build_object('attempt', a.attempt, 'outcome', a.outcome,
                                                             'error', a.error, 'finished_at', a.finished_at)
                                          ORDER BY a.attempt)
                           FROM sluice.job_attempt_log a WHERE a.job_id = x.id), '[]')
               || jsonb_build_array(jsonb_build_object('attempt', x.attempt, 'outcome', x.outcome,
                                                       'error', x.error, 'finished_at', now()))
          FROM failed x
         WHERE x.state = 'failed'
    )
    SELECT x.id, x.state, x.run_at::timestamptz FROM failed x;
END
$$;

-- A worker's failed attempts. p_retryable[i] false fails the job at once;
-- p_outcomes[i] is 'failed' (the handler raised) or 'timeout'.
--
-- Run again on a moved row (sluice.moved_row_retry): a failure fails no job, and the
-- cascade of one that ends failed cancels its descendants, which can race.
CREATE FUNCTION sluice.job_fail_many(
    p_worker_id text, p_ids bigint[], p_attempts integer[], p_errors text[],
    p_retryable boolean[], p_outcomes text[] DEFAULT NULL, p_outputs text[] DEFAULT NULL
) RETURNS TABLE (id bigint, state sluice.job_state, run_at timestamptz)
    LANGUAGE plpgsql AS $$
DECLARE
    v_round integer := 0;
BEGIN
    LOOP
        BEGIN
            RETURN QUERY SELECT * FROM sluice.job_fail_rows(
                p_ids, p_attempts, array_fill(p_worker_id, ARRAY[cardinality(p_ids)]), p_errors, p_retryable,
                coalesce(p_outcomes, array_fill('failed'::text, ARRAY[cardinality(p_ids)])), p_outputs);
            RETURN;
        EXCEPTION WHEN serialization_failure THEN
            v_round := sluice.moved_row_retry(v_round, SQLERRM);
        END;
    END LOOP;
END
$$;

-- Hand running jobs back without counting the attempt against them (graceful
-- shutdown past its grace period, or a claim whose answer the worker never
-- got): they are ready again at once. p_error says why, in the attempt log.
CREATE FUNCTION sluice.job_release_many_once(
    p_worker_id text, p_ids bigint[], p_attempts integer[],
    p_error text DEFAULT 'worker shut down'
) RETURNS SETOF bigint
    LANGUAGE sql AS $$
    WITH released AS (
        UPDATE sluice.jobs j
           SET state = 'ready', run_at = now(), max_attempts = j.max_attempts + 1, lease_expires_at = NULL
          FROM unnest(p_ids, p_attempts) AS r(id, attempt)
         WHERE j.id = r.id AND j.attempt = r.attempt AND j.state::text = 'running' AND j.worker_id = p_worker_id
           AND j.archived_at IS NULL
        RETURNING j.id, j.attempt, j.started_at
    ), logged AS (
        INSERT INTO sluice.job_attempt_log (job_id, attempt, worker_id, started_at, outcome, error)
        SELECT r.id, r.attempt, p_worker_id, r.started_at, 'released', p_error
          FROM released r
    )
    SELECT id FROM released;
$$;

-- job_release_many_once, run again on a moved row (sluice.moved_row_retry).
CREATE FUNCTION sluice.job_release_many(
    p_worker_id text, p_ids bigint[], p_attempts integer[],
    p_error text DEFAULT 'worker shut down'
) RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_round integer := 0;
BEGIN
    LOOP
        BEGIN
            RETURN QUERY SELECT * FROM sluice.job_release_many_once(p_worker_id, p_ids, p_attempts, p_error);
            RETURN;
        EXCEPTION WHEN serialization_failure THEN
            v_round := sluice.moved_row_retry(v_round, SQLERRM);
        END;
    END LOOP;
END
$$;

-- Rescue jobs whose lease expired (their worker died, hung, or lost the
-- network): each counts as a failed attempt and is retried or dead-lettered.
--
-- One bad row must not stop the rescue of every other job on every pass. The
-- batch runs in one subtransaction; should it fail, each job is rescued on its
-- own, and a job that still cannot be (no value the constraints admit should
-- get there) is failed for good with the error, non-retryable; if even that
-- fails, it is left running with a warning, for the next pass. Rows are locked
-- before the subtransactions start, so they stay this caller's throughout. A
-- deadlock or serialization failure is not the row's fault: it is raised, and
-- the caller's next pass tries again.
CREATE FUNCTION sluice.job_rescue_expired(p_limit integer DEFAULT 1000)
    RETURNS TABLE (id bigint, state sluice.job_state, run_at timestamptz)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids      bigint[];
    v_attempts integer[];
    v_workers  text[];
    v_out_ids  bigint[] := '{}';
    v_states   sluice.job_state[] := '{}';
    v_run_ats  timestamptz[] := '{}';
    v_id       bigint;
    v_state    sluice.job_state;
    v_run_at   timestamptz;
    v_error    text;
BEGIN
    SELECT array_agg(e.id), array_agg(e.attempt), array_agg(e.worker_id)
      INTO v_ids, v_attempts, v_workers
      FROM (SELECT j.id, j.attempt, j.worker_id
              FROM sluice.jobs j
             WHERE j.state = 'running' AND j.lease_expires_at < now() AND j.archived_at IS NULL
             ORDER BY j.id
             LIMIT p_limit
               FOR NO KEY UPDATE SKIP LOCKED) e;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        SELECT array_agg(f.id), array_agg(f.state), array_agg(f.run_at)
          INTO v_out_ids, v_states, v_run_ats
          FROM sluice.job_fail_rows(
              v_ids, v_attempts, v_workers,
              ARRAY(SELECT format('lease expired: worker %s stopped heartbeating', w) FROM unnest(v_workers) w),
              array_fill(true, ARRAY[cardinality(v_ids)]),
              array_fill('rescued'::text, ARRAY[cardinality(v_ids)]),
              NULL) f;
    EXCEPTION
        WHEN transaction_rollback THEN
            RAISE;
        WHEN OTHERS THEN
            v_out_ids := '{}';
            v_states := '{}';
            v_run_ats := '{}';
            FOR i IN 1 .. cardinality(v_ids) LOOP
                v_id := NULL;
                BEGIN
                    SELECT f.id, f.state, f.run_at INTO v_id, v_state, v_run_at
                      FROM sluice.job_fail_rows(
                          ARRAY[v_ids[i]], ARRAY[v_attempts[i]], ARRAY[v_workers[i]],
                          ARRAY[format('lease expired: worker %s stopped heartbeating', v_workers[i])],
                          '{true}', '{rescued}', NULL) f;
                EXCEPTION
                    WHEN transaction_rollback THEN
                        RAISE;
                    WHEN OTHERS THEN
                        v_error := SQLERRM;
                        BEGIN
                            SELECT f.id, f.state, f.run_at INTO v_id, v_state, v_run_at
                              FROM sluice.job_fail_rows(
                                  ARRAY[v_ids[i]], ARRAY[v_attempts[i]], ARRAY[v_workers[i]],
                                  ARRAY[format('lease expired: worker %s stopped heartbeating;'
                                               ' the job could not be retried: %s', v_workers[i], v_error)],
                                  '{false}', '{rescued}', NULL) f;
                        EXCEPTION
                            WHEN transaction_rollback THEN
                                RAISE;
                            WHEN OTHERS THEN
                                RAISE WARNING 'sluice: job % could not be rescued: %', v_ids[i], SQLERRM;
                        END;
                END;
                IF v_id IS NOT NULL THEN
                    v_out_ids := v_out_ids || v_id;
                    v_states := v_states || v_state;
                    v_run_ats := v_run_ats || v_run_at;
                END IF;
            END LOOP;
    END;
    RETURN QUERY SELECT * FROM unnest(v_out_ids, v_states, v_run_ats);
END
$$;

-- The rows each maintenance pass takes, locked, chosen in one place for the
-- batch pass and for its one-row-at-a-time fallback (46_maintenance.sql).
-- Scheduled jobs whose time has come.
CREATE FUNCTION sluice.job_promote_due(p_limit integer) RETURNS SETOF bigint
    LANGUAGE sql AS $$
    SELECT j.id
      FROM sluice.jobs j
     WHERE j.state = 'scheduled' AND j.run_at <= now() AND j.archived_at IS NULL
     ORDER BY j.run_at
     LIMIT p_limit
       FOR NO KEY UPDATE SKIP LOCKED
$$;

-- Where retention p_retention ends: the start of the UTC day now() - p_retention
-- falls in (the retention rounded up to whole partitions). Partitions below it
-- are retired whole; sluice.job_prune deletes the stragglers finished before
-- it that are kept in younger partitions (a run's jobs pinned while the run
-- went on, a finished_at written by hand).
CREATE FUNCTION sluice.history_cutoff(p_retention interval) RETURNS timestamptz
    LANGUAGE sql STABLE
RETURN date_trunc('day', now() - p_retention, 'UTC');

-- Finished jobs past the retention: jobs waiting in the dead-letter queue are
-- kept until resolved; jobs of a DAG run go with their run. The retention is
-- rounded up to whole history partitions (sluice.history_cutoff): the jobs
-- finished before the cutoff are in partitions sluice.history_retire drops
-- whole, but for a few stragglers kept in younger ones, which these are. The
-- partitions it drops are left to it (should it find them busy, the next pass
-- drops them): deleting their rows one by one would log them all for nothing,
-- and with no btree on finished_at in history (a BRIN: 13_jobs.sql) each batch
-- would read and sort them all (3.6 s a batch with 436k such rows, against
-- 25 ms for the stragglers' ranges of the younger partitions).
CREATE FUNCTION sluice.job_prune_due(p_retention interval, p_limit integer) RETURNS SETOF bigint
    LANGUAGE sql AS $$
    SELECT j.id
      FROM sluice.jobs j
     WHERE j.state IN ('succeeded', 'failed', 'cancelled', 'skipped')
       AND j.finished_at < sluice.history_cutoff(p_retention)
       -- Partitions are whole UTC days, as the cutoff: a row archived before it
       -- is in a partition history_retire drops.
       AND (j.archived_at IS NULL OR j.archived_at >= sluice.history_cutoff(p_retention))
       AND j.run_id IS NULL
       AND NOT EXISTS (SELECT 1 FROM sluice.dead_letters d
                        WHERE d.job_id = j.id AND d.resolved_at IS NULL)
     ORDER BY j.finished_at
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED
$$;

-- Finished runs past the retention with no node waiting in the dead-letter queue.
CREATE FUNCTION sluice.dag_run_prune_due(p_retention interval, p_limit integer) RETURNS SETOF bigint
    LANGUAGE sql AS $$
    SELECT r.id
      FROM sluice.dag_runs r
     WHERE r.state NOT IN ('queued', 'running')
       AND r.finished_at < sluice.history_cutoff(p_retention)
       AND NOT EXISTS (SELECT 1 FROM sluice.jobs j
                         JOIN sluice.dead_letters d ON d.job_id = j.id AND d.resolved_at IS NULL
                        WHERE j.run_id = r.id)
     ORDER BY r.finished_at
     LIMIT p_limit
       FOR UPDATE SKIP LOCKED
$$;

-- Make due scheduled jobs ready (their queues are notified by jobs_after_update),
-- then wake due waits of DAG nodes (sluice.job_wake_waiting) and cancel what
-- is left of runs past their deadline (sluice.dag_run_expire): everything that
-- falls due at a time job_next_due answers. Returns how many jobs were
-- promoted or woken; call again while it returns p_limit or more.
CREATE FUNCTION sluice.job_promote_scheduled(p_limit integer DEFAULT 10000)
    RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_promoted integer;
BEGIN
    WITH due AS (
        SELECT d.id FROM sluice.job_promote_due(p_limit) AS d(id)
    ), promoted AS (
        UPDATE sluice.jobs j SET state = 'ready' FROM due
         WHERE j.id = due.id AND j.archived_at IS NULL RETURNING 1
    )
    SELECT count(*)::integer INTO v_promoted FROM promoted;
    v_promoted := v_promoted + sluice.job_wake_waiting(p_limit);
    PERFORM sluice.dag_run_expire(greatest(p_limit / 100, 1));
    RETURN v_promoted;
END
$$;

-- When the next scheduled job, wait or run deadline falls due (null when there
-- is none): the maintenance loop sleeps until then instead of polling.
CREATE FUNCTION sluice.job_next_due() RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT least((SELECT min(run_at) FROM sluice.jobs WHERE state = 'scheduled' AND archived_at IS NULL),
                 (SELECT min(run_at) FROM sluice.jobs
                   WHERE state = 'waiting' AND pending_parents = 0 AND archived_at IS NULL),
                 (SELECT min(deadline) FROM sluice.dag_runs WHERE state = 'running' AND deadline IS NOT NULL));
$$;

-- Delete finished jobs older than p_retention, at most p_limit jobs and
-- p_limit / 100 runs per call, so each call is a short transaction. Failed jobs
-- waiting in the dead-letter queue are kept until resolved; jobs of a DAG run go
-- with their run, once the whole run is finished and old.
CREATE FUNCTION sluice.job_prune(p_retention interval, p_limit integer DEFAULT 1000)
    RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_jobs integer;
    v_runs integer;
BEGIN
    WITH doomed AS (
        SELECT d.id FROM sluice.job_prune_due(p_retention, p_limit) AS d(id)
    )
    DELETE FROM sluice.jobs j USING doomed WHERE j.id = doomed.id;
    GET DIAGNOSTICS v_jobs = ROW_COUNT;

    WITH doomed AS (
        SELECT d.id FROM sluice.dag_run_prune_due(p_retention, greatest(p_limit / 100, 1)) AS d(id)
    )
    DELETE FROM sluice.dag_runs r USING doomed WHERE r.id = doomed.id;
    GET DIAGNOSTICS v_runs = ROW_COUNT;
    RETURN v_jobs + v_runs;
END
$$;
