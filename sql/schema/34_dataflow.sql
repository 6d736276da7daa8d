-- DAG data flow: results handed to children, trigger rules, conditions, map,
-- waits and signals, reruns. docs/dags.md describes it for users;
-- docs/state-machine.md argues the locking of every transition below.
--
-- The one path that moves a DAG forward past a finished node whose children
-- are not all plain is sluice.job_propagate. Plain DAGs (every node with the
-- default rule and no data-flow spec, jobs.flow null) keep the fast paths of
-- 31_dag.sql, which give the same answers for them.

-- Parent -> child, including a map element -> its mapped node (an implicit
-- edge: a 10,000-way map inserts no edge rows and its graph stays one node).
CREATE VIEW sluice.job_links AS
SELECT e.parent_id, e.child_id FROM sluice.job_edges e
UNION ALL
SELECT j.id, j.group_id FROM sluice.jobs j WHERE j.group_id IS NOT NULL;

-- Every DAG node's state and result (a mapped node's result is the list of its
-- elements' results). Every reader of results (templates, conditions, the
-- claim's parents, the API) goes through this view, so that moving finished
-- jobs elsewhere changes one definition.
CREATE VIEW sluice.node_results AS
SELECT j.run_id, j.node, j.map_index, j.id AS job_id, j.state, j.result
  FROM sluice.jobs j
 WHERE j.run_id IS NOT NULL;

-- The results of a job's parents as {node id: result}; {"_omitted": true}
-- when together they take more than p_cap bytes (the worker then asks again
-- without a cap). Null for a job without parents.
CREATE FUNCTION sluice.job_parent_results(p_job bigint, p_cap bigint DEFAULT NULL) RETURNS jsonb
    -- Called by the claim for every node it claims: parents found by id, whatever
    -- the statistics say (see sluice.job_unblock). Their ids first, then the
    -- parents by id: joined in one statement, without statistics (a run just
    -- created), the planner hashed every DAG job of the table for each claimed
    -- node (a fan-out of 10,000 ran 7x slower; tests/engine/test_dag_creation.py).
    LANGUAGE plpgsql STABLE SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_answer jsonb;
    v_size   bigint;
BEGIN
    -- node_results' `run_id IS NOT NULL`, spelled out and applied after the
    -- fetch by id (OFFSET 0 keeps it out of the scan): statistics of jobs_live
    -- taken while it held no DAG job (TRUNCATE, and ANALYZE of the emptied
    -- table, keep them) price the jobs_run partial index at one row, and each
    -- claimed node read every DAG job of the table through it until autovacuum
    -- analyzed again (a fan-in of 10,000: 4 s or 20-40 s by that timing).
    SELECT jsonb_object_agg(coalesce(r.node, r.id::text), r.result), sum(pg_column_size(r.result))
      INTO v_answer, v_size
      FROM (SELECT j.id, j.node, j.run_id, j.result
              FROM sluice.jobs j
             WHERE j.id = ANY(ARRAY(SELECT e.parent_id FROM sluice.job_edges e WHERE e.child_id = p_job))
            OFFSET 0) r
     WHERE r.run_id IS NOT NULL;
    IF v_size > p_cap THEN
        RETURN '{"_omitted": true}';
    END IF;
    RETURN v_answer;
END
$$;

-- What a node's templates and condition see: {"params", "run", "nodes": {id:
-- {"state", "result"}}} with the nodes p_refs names (a mapped node's result is
-- its elements' list). Read in a statement after the caller's locks.
CREATE FUNCTION sluice.node_context(p_run bigint, p_refs text[]) RETURNS jsonb
    LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN (SELECT jsonb_build_object(
               'params', r.params,
               'run', sluice.dag_run_context(r),
               'nodes', coalesce((SELECT jsonb_object_agg(n.node, jsonb_build_object('state', n.state, 'result', n.result))
                                    FROM sluice.node_results n
                                   WHERE n.run_id = r.id AND n.node = ANY(p_refs) AND n.map_index IS NULL), '{}'))
      FROM sluice.dag_runs r
     WHERE r.id = p_run);
END
$$;

-- End a node `failed` before it ran, for a reason of its data flow (a template
-- that cannot be rendered, a condition that is neither true nor false, a map
-- over something that is not a list...): with a dead letter, like any failed
-- job, so an operator sees it and can retry it once the data is right. The
-- caller holds the row's lock.
--
-- A failed job with an open dead letter is live (13_jobs.sql): a mapped node
-- that had just succeeded (into history) and whose gathered results are too
-- large comes back to the live partition here, its state the one given.
CREATE FUNCTION sluice.node_fail(p_id bigint, p_reason text, p_error text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_was text := current_setting('sluice.engine_insert', true);
BEGIN
    PERFORM set_config('sluice.engine_insert', 'on', true);
    WITH failed AS (
        UPDATE sluice.jobs j
           SET state = 'failed', reason = p_reason, last_error = p_error, finished_at = now(),
               pending_parents = 0, lease_expires_at = NULL, archived_at = NULL
         WHERE j.id = p_id
        RETURNING j.id, j.attempt
    )
    INSERT INTO sluice.dead_letters (job_id, attempts, reason, last_error, errors)
    SELECT f.id, f.attempt, p_reason, p_error,
           jsonb_build_array(jsonb_build_object('attempt', f.attempt, 'outcome', 'failed',
                                                'error', p_error, 'finished_at', now()))
      FROM failed f
    ON CONFLICT (job_id) WHERE resolved_at IS NULL DO NOTHING;
    PERFORM set_config('sluice.engine_insert', coalesce(nullif(v_was, ''), 'off'), true);
END
$$;

-- Expand mapped node p_id (ready, locked by the caller): one element job per
-- item of its list, in one statement, and the node waits for them. Answers the
-- node's new state: waiting, succeeded (an empty list: its result is []), or
-- failed (the list is not a list, is longer than sluice.map_limit(), or an
-- element's payload cannot be rendered; nothing is inserted then).
CREATE FUNCTION sluice.node_expand(p_id bigint, p_context jsonb) RETURNS sluice.job_state
    LANGUAGE plpgsql AS $$
DECLARE
    v_job      sluice.jobs;
    v_list     jsonb;
    v_error    text;
    v_n        integer;
    v_payload  jsonb;
    v_sites    jsonb;
    v_payloads jsonb[];
    v_bad      integer;
BEGIN
    SELECT * INTO v_job FROM sluice.jobs j WHERE j.id = p_id;
    v_list := v_job.flow #> '{map,expr}';
    IF v_job.flow #> '{map,sites}' IS NOT NULL THEN
        SELECT r.payload, r.error INTO v_list, v_error
          FROM sluice.template_apply(v_list, v_job.flow #> '{map,sites}', p_context) AS r;
        IF v_error IS NOT NULL THEN
            PERFORM sluice.node_fail(p_id, 'template_error', format('node %s: map %s', v_job.node, v_error));
            RETURN 'failed';
        END IF;
    END IF;
    IF jsonb_typeof(v_list) IS DISTINCT FROM 'array' THEN
        PERFORM sluice.node_fail(p_id, 'map_invalid', format(
            'node %s: map %s gives %s, not a list', v_job.node, v_job.flow #>> '{map,expr}',
            CASE jsonb_typeof(v_list) WHEN 'object' THEN 'an object' WHEN 'null' THEN 'null'
                 ELSE 'a ' || jsonb_typeof(v_list) END));
        RETURN 'failed';
    END IF;
    v_n := jsonb_array_length(v_list);
    IF v_n > sluice.map_limit() THEN
        PERFORM sluice.node_fail(p_id, 'map_too_large', format(
            'node %s: map of %s elements, more than sluice.map_limit (%s)', v_job.node, v_n, sluice.map_limit()));
        RETURN 'failed';
    END IF;
    IF v_n = 0 THEN
        UPDATE sluice.jobs j SET state = 'succeeded', result = '[]', finished_at = now(), archived_at = now()
         WHERE j.id = p_id;
        RETURN 'succeeded';
    END IF;

    -- What the elements share is rendered once; each element renders only its
    -- item and index.
    v_payload := coalesce(v_job.flow -> 'template', v_job.payload);
    IF v_job.flow ? 'sites' THEN
        SELECT b.payload, b.sites, b.error INTO v_payload, v_sites, v_error
          FROM sluice.template_bind(v_payload, v_job.flow -> 'sites', p_context) AS b;
        IF v_error IS NOT NULL THEN
            PERFORM sluice.node_fail(p_id, 'template_error', format('node %s: %s', v_job.node, v_error));
            RETURN 'failed';
        END IF;
    END IF;
    SELECT array_agg(r.payload ORDER BY e.n),
           min(e.n) FILTER (WHERE r.error IS NOT NULL OR NOT sluice.json_nesting_ok(r.payload)),
           (array_agg(coalesce(r.error, 'the rendered payload nests deeper than 100 levels') ORDER BY e.n)
                FILTER (WHERE r.error IS NOT NULL OR NOT sluice.json_nesting_ok(r.payload)))[1]
      INTO v_payloads, v_bad, v_error
      FROM jsonb_array_elements(v_list) WITH ORDINALITY AS e(item, n)
     CROSS JOIN LATERAL sluice.template_apply(v_payload, v_sites, NULL, e.item, (e.n - 1)::integer) AS r;
    IF v_bad IS NOT NULL THEN
        PERFORM sluice.node_fail(p_id, 'template_error', format(
            'node %s, element [%s]: %s', v_job.node, v_bad - 1, v_error));
        RETURN 'failed';
    END IF;

    INSERT INTO sluice.jobs (tenant, queue, task, payload, priority, max_attempts, backoff, backoff_base,
                             backoff_max, timeout, run_id, node, group_id, map_index)
    SELECT v_job.tenant, v_job.queue, v_job.task, p.payload, v_job.priority, v_job.max_attempts - v_job.attempt,
           v_job.backoff, v_job.backoff_base, v_job.backoff_max, v_job.timeout, v_job.run_id, v_job.node,
           p_id, (p.n - 1)::integer
      FROM unnest(v_payloads) WITH ORDINALITY AS p(payload, n);
    UPDATE sluice.jobs j SET state = 'waiting', pending_parents = v_n, parents_failed = NULL WHERE j.id = p_id;
    RETURN 'waiting';
END
$$;

-- Prepare nodes that just became ready and have a data-flow spec, in id
-- order, with their rows locked by the caller: evaluate the condition
-- (false: skipped; neither true nor false: failed), then start the wait, or
-- expand the map, or render the payload's templates. Answers each node's
-- state afterwards (ready, scheduled, waiting, succeeded, failed, skipped).
-- The context is read once per set of nodes named (siblings usually share it).
CREATE FUNCTION sluice.node_prepare(p_ids bigint[])
    RETURNS TABLE (id bigint, state sluice.job_state, run_id bigint)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_job     record;
    v_key     text;
    v_seen    text;
    v_context jsonb;
    v_holds   boolean;
    v_payload jsonb;
    v_error   text;
BEGIN
    FOR v_job IN
        SELECT j.id, j.run_id, j.node, j.flow, j.state
          FROM sluice.jobs j
         WHERE j.id = ANY(p_ids) AND j.state IN ('ready', 'scheduled') AND j.flow IS NOT NULL
         ORDER BY j.id
    LOOP
        id := v_job.id;
        run_id := v_job.run_id;
        state := v_job.state;
        v_key := v_job.run_id || ':' || coalesce(v_job.flow ->> 'refs', '');
        IF v_key IS DISTINCT FROM v_seen THEN
            v_context := sluice.node_context(
                v_job.run_id, ARRAY(SELECT jsonb_array_elements_text(coalesce(v_job.flow -> 'refs', '[]'))));
            v_seen := v_key;
        END IF;

        IF v_job.flow ? 'when' THEN
            v_holds := sluice.when_eval(v_job.flow ->> 'when', v_context);
            IF v_holds IS NULL THEN
                PERFORM sluice.node_fail(v_job.id, 'when_unknown', format(
                    'node %s: condition %s is neither true nor false: values of different types compared,'
                    ' a strict-mode path that does not exist, or a result that is not one boolean',
                    v_job.node, v_job.flow ->> 'when'));
                state := 'failed';
                RETURN NEXT;
                CONTINUE;
            ELSIF NOT v_holds THEN
                UPDATE sluice.jobs j
                   SET state = 'skipped', reason = 'condition_false', finished_at = now(), archived_at = now()
                 WHERE j.id = v_job.id;
                state := 'skipped';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;

        IF v_job.flow ? 'wait' THEN
            UPDATE sluice.jobs j
               SET state = 'waiting',
                   run_at = CASE WHEN v_job.flow #> '{wait,signal}' = 'true'
                                 THEN coalesce(now() + make_interval(secs => (v_job.flow #>> '{wait,timeout}')::double precision),
                                               sluice.never())
                                 ELSE now() + make_interval(secs => (v_job.flow #>> '{wait,for}')::double precision) END
             WHERE j.id = v_job.id;
            state := 'waiting';
        ELSIF v_job.flow ? 'map' THEN
            state := sluice.node_expand(v_job.id, v_context);
        ELSIF v_job.flow ? 'sites' THEN
            SELECT r.payload, r.error INTO v_payload, v_error
              FROM sluice.template_apply(v_job.flow -> 'template', v_job.flow -> 'sites', v_context) AS r;
            IF v_error IS NULL AND NOT sluice.json_nesting_ok(v_payload) THEN
                v_error := 'the rendered payload nests deeper than 100 levels';
            END IF;
            IF v_error IS NOT NULL THEN
                PERFORM sluice.node_fail(v_job.id, 'template_error', format('node %s: %s', v_job.node, v_error));
                state := 'failed';
            ELSE
                UPDATE sluice.jobs j SET payload = v_payload WHERE j.id = v_job.id;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Move DAGs forward from jobs that just finished (p_events: succeeded, failed,
-- cancelled or skipped jobs, held by the caller; map elements among them) and
-- from nodes to decide with given counts (p_cand with p_s/p_f/p_k: parents
-- that succeeded, failed or were cancelled, were skipped; a retry or a rerun
-- passes the nodes it reset). Answers the runs whose jobs finished or came
-- back, for the caller to settle after every job lock.
--
-- Each child is decided by its trigger rule from its counts, under its row
-- lock, in a statement after the lock (docs/state-machine.md):
--   all_success  a parent failed or was cancelled: cancelled (upstream_failed);
--                a parent skipped: skipped (upstream_skipped); all succeeded: ready
--   none_failed  a parent failed or was cancelled: cancelled; all done: ready
--   all_done     all done: ready
--   one_success  a parent succeeded: ready; all done: skipped if all were
--                skipped, else cancelled (no_upstream_success)
--   one_failed   a parent failed or was cancelled: ready; all done: skipped
--                (no_upstream_failure)
-- A mapped node waiting for its elements succeeds when they all did, and is
-- cancelled (upstream_failed) once they are all done otherwise; its result is
-- their results in element order (null for those that did not succeed).
-- Nodes that become ready with a spec are prepared (node_prepare); what any
-- of this ends (cancelled, skipped, failed, succeeded) is the next wave's
-- events.
--
-- Locks are taken in rising id order across the whole walk: each wave locks
-- only the candidates below the lowest child of any candidate, so every job
-- locked later (a child of one of them, or a candidate left for later) ranks
-- above every job locked before. (Ids grow along the edges of every run that
-- dag_run_create made; a map element ranks just below its mapped node and is
-- never a candidate.) The nested jobs_after_update calls run with
-- sluice.cascading on: they notify and write the outbox, and leave the rest
-- to this loop.
CREATE FUNCTION sluice.job_propagate(
    p_events bigint[],
    p_cand   bigint[] DEFAULT NULL,
    p_s      integer[] DEFAULT NULL,
    p_f      integer[] DEFAULT NULL,
    p_k      integer[] DEFAULT NULL
) RETURNS bigint[]
    -- Every job it reads or writes is found by id or by its run, whatever the
    -- statistics say (see sluice.job_unblock; tests/engine/test_hot_paths.py).
    LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_was      text := current_setting('sluice.cascading', true);
    v_events   bigint[] := coalesce(p_events, '{}');
    v_ids      bigint[] := coalesce(p_cand, '{}');
    v_s        integer[] := coalesce(p_s, '{}');
    v_f        integer[] := coalesce(p_f, '{}');
    v_k        integer[] := coalesce(p_k, '{}');
    v_bound    bigint;
    v_batch    bigint[];
    v_ready    bigint[];
    v_groups   bigint[];
    v_big      bigint[];
    v_runs     bigint[] := '{}';
    v_more     bigint[];
BEGIN
    PERFORM set_config('sluice.cascading', 'on', true);
    LOOP
        -- The children of the new events join the candidates, with what each
        -- event tells them (one count per link).
        IF cardinality(v_events) > 0 THEN
            SELECT array_agg(c.id ORDER BY c.id), array_agg(c.s ORDER BY c.id),
                   array_agg(c.f ORDER BY c.id), array_agg(c.k ORDER BY c.id)
              INTO v_ids, v_s, v_f, v_k
              FROM (SELECT x.id, sum(x.s)::integer AS s, sum(x.f)::integer AS f, sum(x.k)::integer AS k
                      FROM (SELECT * FROM unnest(v_ids, v_s, v_f, v_k) AS o(id, s, f, k)
                            UNION ALL
                            SELECT l.child_id, (p.state = 'succeeded')::integer,
                                   (p.state IN ('failed', 'cancelled'))::integer, (p.state = 'skipped')::integer
                              FROM sluice.job_links l JOIN sluice.jobs p ON p.id = l.parent_id
                             WHERE l.parent_id = ANY(v_events)) x
                     GROUP BY x.id) c;
            v_events := '{}';
        END IF;
        EXIT WHEN coalesce(cardinality(v_ids), 0) = 0;

        SELECT min(e.child_id) INTO v_bound FROM sluice.job_edges e WHERE e.parent_id = ANY(v_ids);
        v_batch := ARRAY(SELECT b FROM unnest(v_ids) b WHERE v_bound IS NULL OR b < v_bound);
        IF cardinality(v_batch) = 0 THEN
            -- An edge from a higher id to a lower one (plain SQL may insert one):
            -- decide the lowest candidate alone.
            v_batch := v_ids[1:1];
        END IF;

        -- Lock, then decide in a later statement. Not only blocked children: a
        -- cancelled, failed or skipped one may be coming back right now (a
        -- retry's revival counted this parent as unfinished), so it is locked
        -- and then left alone unless it reads blocked by then.
        -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
        FOR v_try IN 1 .. 10 LOOP
            BEGIN
                PERFORM 1
                   FROM sluice.jobs j
                  WHERE j.id = ANY(v_batch)
                    AND (j.state IN ('blocked', 'cancelled', 'failed', 'skipped')
                         OR (j.state = 'waiting' AND j.pending_parents > 0))
                  ORDER BY j.id
                    FOR NO KEY UPDATE;
                EXIT;
            EXCEPTION WHEN serialization_failure THEN
                PERFORM sluice.moved_row_retry(v_try, SQLERRM);
            END;
        END LOOP;

        WITH counts AS (
            SELECT c.id, c.s, c.f, c.k
              FROM unnest(v_ids, v_s, v_f, v_k) AS c(id, s, f, k)
             WHERE c.id = ANY(v_batch)
        ), rows AS (
            SELECT j.id, c.s, c.f, c.k,
                   j.pending_parents - (c.s + c.f + c.k) AS left,
                   coalesce(j.parents_failed, 0) + c.f AS failed,
                   CASE WHEN j.state = 'waiting' THEN 'map'
                        ELSE coalesce(j.flow ->> 'trigger', 'all_success') END AS rule
              FROM counts c JOIN sluice.jobs j ON j.id = c.id
             WHERE j.state = 'blocked' OR (j.state = 'waiting' AND j.pending_parents > 0)
        ), decided AS (
            SELECT r.*,
                   CASE r.rule
                       WHEN 'map' THEN CASE WHEN r.left > 0 THEN NULL
                                            WHEN r.failed = 0 THEN 'succeeded'
                                            ELSE 'cancelled:upstream_failed' END
                       WHEN 'none_failed' THEN CASE WHEN r.failed > 0 THEN 'cancelled:upstream_failed'
                                                    WHEN r.left <= 0 THEN 'ready' END
                       WHEN 'all_done' THEN CASE WHEN r.left <= 0 THEN 'ready' END
                       WHEN 'one_success' THEN CASE WHEN r.s > 0 THEN 'ready'
                                                    WHEN r.left > 0 THEN NULL
                                                    WHEN r.failed = 0 THEN 'skipped:upstream_skipped'
                                                    ELSE 'cancelled:no_upstream_success' END
                       WHEN 'one_failed' THEN CASE WHEN r.f > 0 THEN 'ready'
                                                   WHEN r.left <= 0 THEN 'skipped:no_upstream_failure' END
                       ELSE CASE WHEN r.failed > 0 THEN 'cancelled:upstream_failed'
                                 WHEN r.k > 0 THEN 'skipped:upstream_skipped'
                                 WHEN r.left <= 0 THEN 'ready' END
                   END AS outcome
              FROM rows r
        ), changed AS (
            UPDATE sluice.jobs j
               SET state = CASE WHEN d.outcome IS NULL THEN j.state
                                WHEN d.outcome = 'ready' AND j.run_at > clock_timestamp() THEN 'scheduled'
                                ELSE split_part(d.outcome, ':', 1)::sluice.job_state END,
                   pending_parents = CASE WHEN d.outcome IN ('ready', 'succeeded') THEN 0
                                          ELSE greatest(d.left, 0) END,
                   parents_failed = nullif(d.failed, 0),
                   reason = CASE WHEN d.outcome LIKE '%:%' THEN split_part(d.outcome, ':', 2) ELSE j.reason END,
                   finished_at = CASE WHEN d.outcome IS NULL OR d.outcome = 'ready' THEN j.finished_at
                                      ELSE now() END,
                   -- Every outcome but ready ends the job: succeeded, cancelled, skipped.
                   archived_at = CASE WHEN d.outcome IS NULL OR d.outcome = 'ready' THEN j.archived_at
                                      ELSE now() END
              FROM decided d
             WHERE j.id = d.id
            RETURNING j.id, j.state, j.run_id, j.flow, d.rule, d.outcome
        )
        SELECT array_agg(c.id) FILTER (WHERE c.state IN ('ready', 'scheduled') AND c.flow IS NOT NULL),
               array_agg(c.id) FILTER (WHERE c.rule = 'map' AND c.outcome IS NOT NULL),
               array_agg(c.id) FILTER (WHERE c.outcome IS NOT NULL AND c.outcome <> 'ready'),
               v_runs || array_agg(DISTINCT c.run_id) FILTER (WHERE c.run_id IS NOT NULL AND c.outcome IS NOT NULL)
          INTO v_ready, v_groups, v_events, v_runs
          FROM changed c;
        v_events := coalesce(v_events, '{}');

        -- Mapped nodes whose elements are all done gather their results.
        IF v_groups IS NOT NULL THEN
            WITH gathered AS (
                UPDATE sluice.jobs g
                   SET result = (SELECT coalesce(jsonb_agg(e.result ORDER BY e.map_index), '[]')
                                   FROM sluice.jobs e WHERE e.group_id = g.id)
                 WHERE g.id = ANY(v_groups)
                RETURNING g.id, g.state, pg_column_size(g.result) AS size
            )
            SELECT array_agg(x.id) INTO v_big
              FROM gathered x
             WHERE x.state = 'succeeded' AND x.size > sluice.max_map_result_bytes();
            IF v_big IS NOT NULL THEN
                PERFORM sluice.node_fail(g.id, 'result_too_large', format(
                            'node %s: its elements'' results take %s bytes, more than sluice.max_map_result_bytes (%s)',
                            g.node, pg_column_size(g.result), sluice.max_map_result_bytes()))
                   FROM sluice.jobs g WHERE g.id = ANY(v_big);
                UPDATE sluice.jobs g SET result = NULL WHERE g.id = ANY(v_big);
            END IF;
        END IF;

        -- Nodes that became ready and have a spec: condition, wait, map, templates.
        IF v_ready IS NOT NULL THEN
            SELECT v_events || coalesce(array_agg(p.id) FILTER (WHERE sluice.state_is_terminal(p.state)), '{}'),
                   v_runs || coalesce(array_agg(DISTINCT p.run_id) FILTER (WHERE sluice.state_is_terminal(p.state)), '{}')
              INTO v_events, v_runs
              FROM sluice.node_prepare(v_ready) p;
        END IF;

        -- The batch is decided; its children come with the events.
        SELECT array_agg(c.id ORDER BY c.id), array_agg(c.s ORDER BY c.id),
               array_agg(c.f ORDER BY c.id), array_agg(c.k ORDER BY c.id)
          INTO v_ids, v_s, v_f, v_k
          FROM unnest(v_ids, v_s, v_f, v_k) AS c(id, s, f, k)
         WHERE c.id <> ALL (v_batch);
        v_ids := coalesce(v_ids, '{}');
        v_s := coalesce(v_s, '{}');
        v_f := coalesce(v_f, '{}');
        v_k := coalesce(v_k, '{}');
    END LOOP;
    PERFORM set_config('sluice.cascading', coalesce(nullif(v_was, ''), 'off'), true);
    RETURN ARRAY(SELECT DISTINCT r FROM unnest(v_runs) r WHERE r IS NOT NULL ORDER BY r);
END
$$;

-- Signals and waits -----------------------------------------------------------------

-- Deliver a signal to node p_node of run p_run_id: when that node is a wait
-- for a signal and still waiting (not timed out), it succeeds with p_payload
-- as its result and its children move on. False otherwise: no such node, not
-- a signal wait, already decided, or past its timeout (even if no sweep has
-- seen it yet). A payload larger than sluice.max_result_bytes() is refused.
--
-- One UPDATE decides, under the node's row lock: a sweep timing the node out
-- at the same moment holds the same lock, and whichever commits second finds
-- the row no longer waiting (PostgreSQL re-checks the WHERE clause on the row
-- version it waited for).
CREATE FUNCTION sluice.signal(run_id bigint, node text, payload jsonb DEFAULT '{}') RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_done boolean;
BEGIN
    IF pg_column_size(payload) > sluice.max_result_bytes() THEN
        RAISE EXCEPTION 'the signal''s payload takes % bytes, more than sluice.max_result_bytes (%)',
                        pg_column_size(payload), sluice.max_result_bytes()
            USING ERRCODE = 'program_limit_exceeded', CONSTRAINT = 'result_size', SCHEMA = 'sluice';
    END IF;
    WITH signalled AS (
        UPDATE sluice.jobs j
           SET state = 'succeeded', result = coalesce(signal.payload, '{}'), finished_at = now(),
               archived_at = now()
         WHERE j.run_id = signal.run_id AND j.state = 'waiting' AND j.node = signal.node
           AND j.archived_at IS NULL
           AND j.map_index IS NULL AND j.flow #> '{wait,signal}' = 'true'
           AND j.run_at > statement_timestamp()
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM signalled) INTO v_done;
    RETURN v_done;
END
$$;

-- Wake waits that are due: a `wait: {for: ...}` succeeds (result null); a
-- signal wait past its timeout fails (reason wait_timeout, with a dead
-- letter) or, with `on_timeout: skip`, is skipped. Due rows are taken SKIP
-- LOCKED (a signal holding one wins it), so this never waits for a job row
-- before its own; their children move on in the same transaction. Returns
-- how many woke; call again while it returns p_limit.
CREATE FUNCTION sluice.job_wake_waiting(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_due   bigint[];
    v_woken integer;
BEGIN
    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry): a signal
    -- that ends a wait moves its row to history under a sweep that saw it waiting.
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            SELECT array_agg(d.id) INTO v_due
              FROM (SELECT j.id
                      FROM sluice.jobs j
                     WHERE j.state = 'waiting' AND j.pending_parents = 0 AND j.run_at <= now()
                       AND j.archived_at IS NULL
                     ORDER BY j.run_at
                     LIMIT p_limit
                       FOR NO KEY UPDATE SKIP LOCKED) d;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;
    IF v_due IS NULL THEN
        RETURN 0;
    END IF;
    WITH woken AS (
        UPDATE sluice.jobs j
           SET state = CASE WHEN j.flow #> '{wait,signal}' IS DISTINCT FROM 'true' THEN 'succeeded'::sluice.job_state
                            WHEN j.flow #>> '{wait,on_timeout}' = 'skip' THEN 'skipped'
                            ELSE 'failed' END,
               reason = CASE WHEN j.flow #> '{wait,signal}' = 'true' THEN 'wait_timeout' END,
               last_error = CASE WHEN j.flow #> '{wait,signal}' = 'true'
                                 THEN format('node %s: no signal came within its timeout (%s)', j.node,
                                             make_interval(secs => (j.flow #>> '{wait,timeout}')::double precision)) END,
               finished_at = now(),
               -- A failed wait stays live with its dead letter (13_jobs.sql).
               archived_at = CASE WHEN j.flow #> '{wait,signal}' = 'true'
                                       AND j.flow #>> '{wait,on_timeout}' IS DISTINCT FROM 'skip'
                                  THEN j.archived_at ELSE now() END
         WHERE j.id = ANY(v_due) AND j.state = 'waiting' AND j.archived_at IS NULL
        RETURNING j.id, j.state, j.attempt, j.last_error
    ), dead AS (
        INSERT INTO sluice.dead_letters (job_id, attempts, reason, last_error, errors)
        SELECT w.id, w.attempt, 'wait_timeout', w.last_error,
               jsonb_build_array(jsonb_build_object('attempt', w.attempt, 'outcome', 'failed',
                                                    'error', w.last_error, 'finished_at', now()))
          FROM woken w
         WHERE w.state = 'failed'
        ON CONFLICT (job_id) WHERE resolved_at IS NULL DO NOTHING
    )
    SELECT count(*)::integer INTO v_woken FROM woken;
    RETURN v_woken;
END
$$;

-- Cancel what is left of runs past their deadline (the definition's
-- `timeout`), at most p_limit runs per call: their unfinished jobs are
-- cancelled (reason run_timeout; running ones are told to stop), and each
-- such run ends failed with reason timeout. The runs are picked without a
-- lock and their jobs locked by job_cancel, jobs before runs; a run that
-- finished meanwhile has nothing left to cancel. Returns how many runs.
CREATE FUNCTION sluice.dag_run_expire(p_limit integer DEFAULT 100) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint;
    v_n   integer := 0;
BEGIN
    FOR v_run IN
        SELECT r.id FROM sluice.dag_runs r
         WHERE r.state = 'running' AND r.deadline <= now()
         ORDER BY r.deadline
         LIMIT p_limit
    LOOP
        PERFORM sluice.job_cancel(ARRAY(
            SELECT j.id FROM sluice.jobs j
             WHERE j.run_id = v_run AND j.state IN ('blocked', 'scheduled', 'ready', 'running', 'waiting')),
            'run_timeout');
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END
$$;

-- Reruns ---------------------------------------------------------------------------

-- Run node p_from of run p_run_id and everything below it again; the rest of
-- the run keeps its results. Those nodes get fresh attempts, their results
-- and errors are cleared, templated payloads are rendered anew, a mapped
-- node's elements are deleted (it maps over what its parents give now), open
-- dead letters among them are resolved `rerun`; then each is decided by its
-- trigger rule from its parents, as when it first became ready. Returns how
-- many nodes were reset.
--
-- Refused (object_in_use, naming them) while any of those nodes or elements
-- is running, or while a parent of them outside the rerun has not finished.
-- Everything touched is locked first in one statement, in rank order (map
-- elements just below their node), so a completion racing the rerun either
-- commits first (its node is reset) or finds it refused.
CREATE FUNCTION sluice.dag_run_rerun(p_run_id bigint, p_from text) RETURNS integer
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_from     bigint;
    v_set      bigint[];
    v_elements bigint[];
    v_outside  bigint[];
    v_busy     text;
    v_cand     bigint[];
    v_s        integer[];
    v_f        integer[];
    v_k        integer[];
    v_roots    bigint[];
    v_events   bigint[];
    v_runs     bigint[];
    v_n        integer;
    v_was      text;
BEGIN
    SELECT j.id INTO v_from
      FROM sluice.jobs j
     WHERE j.run_id = p_run_id AND j.node = p_from AND j.map_index IS NULL;
    IF v_from IS NULL THEN
        RAISE EXCEPTION 'run % has no node %', p_run_id, p_from
            USING ERRCODE = 'no_data_found';
    END IF;
    v_set := v_from || coalesce(sluice.job_descendants(ARRAY[v_from]), '{}');
    v_elements := ARRAY(SELECT j.id FROM sluice.jobs j WHERE j.group_id = ANY(v_set));
    v_outside := ARRAY(SELECT DISTINCT e.parent_id FROM sluice.job_edges e
                        WHERE e.child_id = ANY(v_set) AND e.parent_id <> ALL (v_set));

    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            PERFORM 1
               FROM sluice.jobs j
              WHERE j.id = ANY(v_set || v_elements || v_outside)
              ORDER BY coalesce(j.group_id, j.id), j.group_id IS NULL, j.id
                FOR NO KEY UPDATE;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;

    -- Later statements: what the holders of those locks committed.
    SELECT string_agg(DISTINCT format('%s is %s', j.node, j.state), ', ') INTO v_busy
      FROM sluice.jobs j
     WHERE (j.id = ANY(v_set || v_elements) AND j.state = 'running')
        OR (j.id = ANY(v_outside) AND NOT sluice.state_is_terminal(j.state));
    IF v_busy IS NOT NULL THEN
        RAISE EXCEPTION 'run % cannot rerun from %: %', p_run_id, p_from, v_busy
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for those nodes to finish (or cancel them), then rerun.';
    END IF;

    -- A succeeded node's last attempt is told by its row alone (D2), which the
    -- reset below clears: log it first.
    PERFORM sluice.job_attempts_keep(v_set);
    PERFORM set_config('sluice.cascading', 'on', true);
    IF cardinality(v_elements) > 0 THEN
        UPDATE sluice.jobs j SET state = 'cancelled', reason = 'rerun', finished_at = now(), archived_at = now()
         WHERE j.id = ANY(v_elements) AND NOT sluice.state_is_terminal(j.state);
        DELETE FROM sluice.jobs j WHERE j.id = ANY(v_elements);
    END IF;
    UPDATE sluice.dead_letters d SET resolved_at = now(), resolution = 'rerun'
     WHERE d.job_id = ANY(v_set) AND d.resolved_at IS NULL;
    -- The nodes come back from history into the live partition: that move
    -- fires the partition's insert trigger, which must leave their state be.
    v_was := current_setting('sluice.engine_insert', true);
    PERFORM set_config('sluice.engine_insert', 'on', true);
    WITH parents AS (
        SELECT e.child_id, count(*)::integer AS n FROM sluice.job_edges e
         WHERE e.child_id = ANY(v_set) GROUP BY e.child_id
    ), reset AS (
        UPDATE sluice.jobs j
           SET state = CASE WHEN p.n > 0 THEN 'blocked'::sluice.job_state ELSE 'ready' END,
               pending_parents = coalesce(p.n, 0), parents_failed = NULL,
               max_attempts = j.attempt + sluice.job_retry_round(j.id, j.attempt, j.max_attempts),
               payload = coalesce(j.flow -> 'template', j.payload),
               run_at = now(), result = NULL, last_error = NULL, reason = NULL, finished_at = NULL,
               worker_id = NULL, lease_expires_at = NULL, progress = NULL, archived_at = NULL
          FROM sluice.jobs x LEFT JOIN parents p ON p.child_id = x.id
         WHERE j.id = x.id AND x.id = ANY(v_set)
        RETURNING j.id, j.state, j.flow
    )
    SELECT count(*), array_agg(r.id) FILTER (WHERE r.state = 'ready' AND r.flow IS NOT NULL)
      INTO v_n, v_roots
      FROM reset r;
    PERFORM set_config('sluice.engine_insert', coalesce(nullif(v_was, ''), 'off'), true);

    -- Each reset node hears from its parents outside the rerun, which have all finished.
    SELECT array_agg(c.child_id ORDER BY c.child_id), array_agg(c.s ORDER BY c.child_id),
           array_agg(c.f ORDER BY c.child_id), array_agg(c.k ORDER BY c.child_id)
      INTO v_cand, v_s, v_f, v_k
      FROM (SELECT e.child_id, count(*) FILTER (WHERE p.state = 'succeeded')::integer AS s,
                   count(*) FILTER (WHERE p.state IN ('failed', 'cancelled'))::integer AS f,
                   count(*) FILTER (WHERE p.state = 'skipped')::integer AS k
              FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
             WHERE e.child_id = ANY(v_set) AND e.parent_id <> ALL (v_set)
             GROUP BY e.child_id) c;
    IF v_roots IS NOT NULL THEN
        SELECT array_agg(p.id) FILTER (WHERE sluice.state_is_terminal(p.state)) INTO v_events
          FROM sluice.node_prepare(v_roots) p;
    END IF;
    v_runs := sluice.job_propagate(v_events, v_cand, v_s, v_f, v_k);
    PERFORM set_config('sluice.cascading', 'off', true);

    UPDATE sluice.dag_runs r
       SET deadline = now() + r.timeout
     WHERE r.id = p_run_id AND r.timeout IS NOT NULL AND r.state <> 'running';
    PERFORM sluice.dag_run_settle(p_run_id || v_runs);
    RETURN v_n;
END
$$;

-- Backfill -------------------------------------------------------------------------

-- Start the runs a cron schedule of a DAG would have started at
-- p_occurrences (oldest first), each with the idempotency key the scheduler
-- uses ('schedule:<id>:<occurrence in UTC>'), so a backfill never starts a
-- run the scheduler started, nor the reverse; {{ run.occurrence }} is the
-- occurrence. Runs obey the DAG's concurrency (extra ones queue). Answers
-- each occurrence's run and whether this call created it.
CREATE FUNCTION sluice.dag_run_backfill(p_schedule_id bigint, p_occurrences timestamptz[], p_params jsonb DEFAULT NULL)
    RETURNS TABLE (occurrence timestamptz, run_id bigint, created boolean)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_s   sluice.schedules;
    v_at  timestamptz;
    v_key text;
BEGIN
    SELECT * INTO v_s FROM sluice.schedules s WHERE s.id = p_schedule_id;
    IF NOT FOUND OR v_s.dag_name IS NULL THEN
        RAISE EXCEPTION 'schedule % does not start a DAG', p_schedule_id
            USING ERRCODE = 'no_data_found';
    END IF;
    FOR v_at IN SELECT DISTINCT o FROM unnest(p_occurrences) o ORDER BY o LOOP
        v_key := format('schedule:%s:%s', v_s.id, to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
        occurrence := v_at;
        run_id := (SELECT r.id FROM sluice.dag_runs r WHERE r.tenant = v_s.tenant AND r.idempotency_key = v_key);
        created := run_id IS NULL;
        IF created THEN
            -- A scheduler firing the same occurrence meanwhile wins the key: ours
            -- answers its run (created stays true only for runs this call started).
            run_id := sluice.dag_run_start(v_s.tenant, v_s.dag_name, v_s.dag_params || coalesce(p_params, '{}'),
                                           NULL, v_key, v_s.id, v_at);
            created := NOT EXISTS (SELECT 1 FROM sluice.dag_runs r
                                    WHERE r.id = run_id AND r.xmin::text <> pg_current_xact_id()::xid::text);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
