-- DAG mechanics: edges, release of children, cancellation of descendants, run state.
--
-- docs/state-machine.md states the locking protocol these functions follow and
-- argues why no interleaving strands a child, commits a cycle or deadlocks. In
-- short: a transaction that moves a parent (success, failure, cancel) locks the
-- parent's children or descendants afterwards, in id order, and decides what
-- to do with them in a later statement, whose snapshot sees whatever the
-- previous holders of those locks committed; a transaction that re-decides a
-- child (job_retry, an edge insert) locks the child first and reads its parents
-- afterwards. Jobs are always locked before runs.
--
-- Plans. A statement that finds jobs by id (or by run), not by the partition
-- key, reads every partition of sluice.jobs: the live one and a day of history
-- each. Planning it takes milliseconds, most of it proving each partition's
-- CHECK constraints against the query, and PL/pgSQL plans such a statement
-- again at every call (its generic plan never looks cheaper than a custom one
-- to plan_cache_mode = auto). So the functions that do (here and in
-- 34_dataflow.sql) say `SET plan_cache_mode = force_generic_plan`: each
-- statement is planned once per session, with the same index probes. Measured
-- with pg_stat_statements: inserting an edge and releasing its child planned 6
-- statements at every call, up to 8 ms each on a loaded 2-core machine; now none.

-- Move blocked children closer to ready: child `p_children[i]` has `p_counts[i]`
-- fewer parents to wait for (a parent succeeded, or an edge was deleted).
--
-- The children are locked first, in id order, and decremented by a later
-- statement, whose snapshot sees what every earlier holder of those locks
-- committed. So two parents succeeding at once serialise on the child: the
-- second sees the first's decrement, and exactly one of them brings the count
-- to zero. And a child that job_retry is reviving right now (cancelled or failed
-- in this transaction's snapshot, blocked once the retry commits) is waited for
-- too: the retry counted this parent as not succeeded, so this decrement is
-- owed to it. Filtering on `blocked` before the lock would skip that child and
-- leave it blocked forever.
--
-- A released child is `scheduled` while its run_at is ahead of the clock.
-- clock_timestamp, not now(): now() is when this transaction began, and a child
-- inserted since then (run_at defaults to its own transaction's start) would
-- come out scheduled instead of ready.
CREATE FUNCTION sluice.job_unblock(p_children bigint[], p_counts integer[]) RETURNS void
    -- Children are found by id, whatever the statistics say: taken while no job
    -- was blocked, they make `state = 'blocked'` look like it keeps no row, and
    -- the planner would scan every job (with a 10,000-element array to compare
    -- each row against) instead (tests/engine/test_hot_paths.py).
    LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            PERFORM 1
               FROM sluice.jobs j
              WHERE j.id = ANY(p_children) AND j.state IN ('blocked', 'cancelled', 'failed', 'skipped')
              ORDER BY j.id
                FOR NO KEY UPDATE;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;

    WITH counts AS (
        SELECT c.id, sum(c.n)::integer AS n
          FROM unnest(p_children, p_counts) AS c(id, n)
         GROUP BY c.id
    )
    UPDATE sluice.jobs j
       SET pending_parents = j.pending_parents - counts.n,
           state = CASE WHEN j.pending_parents > counts.n THEN 'blocked'::sluice.job_state
                        WHEN j.run_at > clock_timestamp() THEN 'scheduled'
                        ELSE 'ready' END
      FROM counts
     WHERE j.id = counts.id AND j.state = 'blocked' AND j.archived_at IS NULL;
END
$$;

-- Parents that just succeeded release their children, and answer the runs
-- whose jobs finished on the way (none on this path; job_propagate's answer
-- otherwise). PL/pgSQL rather than SQL: it runs after every completion batch,
-- mostly finding no edges, and PL/pgSQL keeps the lookup's plan where a SQL
-- function would plan it again on each call.
--
-- A child with a data-flow spec (flow: a trigger rule, a condition,
-- templates, a map, a wait) is decided by sluice.job_propagate; when no child
-- has one, every child follows the default rule (all parents succeeded) and
-- job_unblock is all it takes. flow is written once when the node is
-- created, so it is read here without a lock.
CREATE FUNCTION sluice.job_release_children(p_parents bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_children bigint[];
    v_flow     boolean;
BEGIN
    -- One entry per edge: job_unblock sums a child's entries and locks in id order.
    SELECT array_agg(e.child_id) INTO v_children
      FROM sluice.job_edges e
     WHERE e.parent_id = ANY(p_parents);
    IF v_children IS NULL THEN
        RETURN '{}';  -- most completions: jobs without children read no job
    END IF;
    -- Children in every partition: one that is cancelled (in history) may be
    -- coming back right now, and job_unblock waits for it.
    SELECT bool_or(c.flow IS NOT NULL) INTO v_flow FROM sluice.jobs c WHERE c.id = ANY(v_children);
    IF v_flow THEN
        RETURN sluice.job_propagate(p_parents);
    END IF;
    IF v_children IS NOT NULL THEN
        PERFORM sluice.job_unblock(v_children, array_fill(1, ARRAY[cardinality(v_children)]));
    END IF;
    RETURN '{}';
END
$$;

-- Every job below p_roots along edges (null when there is none), read with the
-- caller's snapshot. PL/pgSQL, to keep the recursive query's plan across calls.
CREATE FUNCTION sluice.job_descendants(p_roots bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_ids bigint[];
BEGIN
    WITH RECURSIVE below(id) AS (
        SELECT e.child_id FROM sluice.job_edges e WHERE e.parent_id = ANY(p_roots)
        UNION
        SELECT e.child_id FROM below b JOIN sluice.job_edges e ON e.parent_id = b.id
    )
    SELECT array_agg(b.id) INTO v_ids FROM below b;
    RETURN v_ids;
END
$$;

-- Jobs that failed or were cancelled take every pending descendant with them, in
-- one recursive walk rather than a cascade of trigger calls one level at a time.
-- Answers the runs of the jobs it cancelled (the caller settles them).
--
-- Descendants are locked before they are read, like children in job_unblock:
-- not only the pending ones but also the cancelled and failed ones, which
-- job_retry may be reviving right now (it read this job as not yet failed, so
-- its revival must be undone here once it commits). The UPDATE is a later
-- statement and sees the revived state. Running and succeeded descendants are
-- left alone (neither can exist below a job that had not succeeded).
--
-- That walk is right while every descendant follows the default rule (all
-- parents succeeded): a failure below any ancestor dooms it. A descendant
-- with another trigger rule may run anyway (all_done), or may have started
-- already (one_success): then sluice.job_propagate decides each one by its
-- rule. So it does when a map element is among them (its mapped node must
-- hear of it; only an edge inserted before job_edges_after_insert refused
-- edges into elements could put one there).
--
-- The jobs_after_update call this UPDATE causes must not walk the same subtree
-- again: sluice.cascading tells it so.
CREATE FUNCTION sluice.job_cancel_descendants(p_roots bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_ids  bigint[] := sluice.job_descendants(p_roots);
    v_runs bigint[];
BEGIN
    IF v_ids IS NULL THEN
        RETURN '{}';
    END IF;
    IF EXISTS (SELECT 1 FROM sluice.jobs j
                WHERE j.id = ANY(v_ids) AND (j.flow ? 'trigger' OR j.group_id IS NOT NULL)) THEN
        RETURN sluice.job_propagate(p_roots);
    END IF;

    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            PERFORM 1
               FROM sluice.jobs j
              WHERE j.id = ANY(v_ids) AND j.state IN ('blocked', 'scheduled', 'ready', 'cancelled', 'failed', 'skipped')
              ORDER BY j.id
                FOR NO KEY UPDATE;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;

    PERFORM set_config('sluice.cascading', 'on', true);
    WITH cancelled AS (
        UPDATE sluice.jobs j
           SET state = 'cancelled', reason = 'upstream_failed', finished_at = now(), archived_at = now()
         WHERE j.id = ANY(v_ids) AND j.state IN ('blocked', 'scheduled', 'ready') AND j.archived_at IS NULL
        RETURNING j.run_id
    )
    SELECT array_agg(DISTINCT c.run_id) INTO v_runs FROM cancelled c WHERE c.run_id IS NOT NULL;
    PERFORM set_config('sluice.cascading', 'off', true);
    RETURN coalesce(v_runs, '{}');
END
$$;

-- A path of edges from job `p_from` to job `p_to` ([p_from, ..., p_to]), or null.
-- Breadth-first, remembering one predecessor per job, so the path is a shortest one.
CREATE FUNCTION sluice.job_path(p_from bigint, p_to bigint) RETURNS bigint[]
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_prev     jsonb := jsonb_build_object(p_from::text, p_from);
    v_frontier bigint[] := ARRAY[p_from];
    v_step     jsonb;
    v_node     bigint;
    v_path     bigint[];
BEGIN
    WHILE NOT v_prev ? p_to::text AND cardinality(v_frontier) > 0 LOOP
        SELECT coalesce(jsonb_object_agg(s.child_id::text, s.parent_id), '{}'), array_agg(s.child_id)
          INTO v_step, v_frontier
          FROM (SELECT DISTINCT ON (e.child_id) e.child_id, e.parent_id
                  FROM sluice.job_edges e
                 WHERE e.parent_id = ANY(v_frontier) AND NOT v_prev ? e.child_id::text
                 ORDER BY e.child_id, e.parent_id) s;
        v_prev := v_prev || v_step;
    END LOOP;
    IF NOT v_prev ? p_to::text THEN
        RETURN NULL;
    END IF;
    v_node := p_to;
    v_path := ARRAY[p_to];
    WHILE v_node <> p_from LOOP
        v_node := (v_prev ->> v_node::text)::bigint;
        v_path := v_node || v_path;
    END LOOP;
    RETURN v_path;
END
$$;

-- Every job reachable along edges from p_children (themselves included), and
-- whether every one of them was written by the transaction p_xid (the caller's):
-- created by it, so that no other transaction can see it yet, or updated by it,
-- so that any other transaction locking it waits until this one ends.
-- PL/pgSQL rather than SQL, to keep the plans of its statements across calls.
CREATE FUNCTION sluice.job_edges_reach(p_children bigint[], p_xid xid,
                                       OUT reach bigint[], OUT own boolean)
    LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    -- Children that are nobody's parent (a new job, a leaf) reach only
    -- themselves: one index probe instead of planning the recursive query.
    IF EXISTS (SELECT 1 FROM sluice.job_edges e WHERE e.parent_id = ANY(p_children)) THEN
        WITH RECURSIVE r(id) AS (
            SELECT unnest(p_children)
            UNION
            SELECT e.child_id FROM r JOIN sluice.job_edges e ON e.parent_id = r.id
        )
        SELECT array_agg(r.id) INTO reach FROM r;
    ELSE
        reach := p_children;
    END IF;
    -- A statement of its own: joined to the recursive query, the planner (which
    -- cannot tell its size) would read every job instead of probing a few by id.
    SELECT coalesce(bool_and(j.xmin = p_xid), true) INTO own
      FROM sluice.jobs j
     WHERE j.id = ANY(reach);
END
$$;

-- A cycle closed by the new edges (p_parents[i] -> p_children[i]), as the list of
-- jobs around it (first = last), or null when there is none. p_reach is every
-- job reachable from the new edges' children (job_edges_reach), read with a
-- snapshot taken after the caller's locks.
--
-- Every job on such a cycle is in p_reach. Ids increase along a cycle's edges
-- and must also decrease somewhere, so if the edges leaving those jobs all go
-- the same way (parents inserted before children, the usual case, or all the
-- other way) there is no cycle and the check costs one pass over them.
-- Otherwise each new edge whose parent is in p_reach is checked on its own.
CREATE FUNCTION sluice.job_edges_find_cycle(p_parents bigint[], p_children bigint[], p_reach bigint[])
    RETURNS bigint[]
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_mixed boolean;
    v_edge  record;
    v_path  bigint[];
BEGIN
    SELECT bool_or(e.parent_id > e.child_id) AND bool_or(e.parent_id < e.child_id)
      INTO v_mixed
      FROM sluice.job_edges e
     WHERE e.parent_id = ANY(p_reach);
    IF NOT coalesce(v_mixed, false) THEN
        RETURN NULL;
    END IF;

    FOR v_edge IN
        SELECT DISTINCT x.parent_id, x.child_id
          FROM unnest(p_parents, p_children) AS x(parent_id, child_id)
         WHERE x.parent_id = ANY(p_reach)
         ORDER BY x.parent_id, x.child_id
    LOOP
        v_path := sluice.job_path(v_edge.child_id, v_edge.parent_id);
        IF v_path IS NOT NULL THEN
            RETURN v_edge.parent_id || v_path;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- New edges: serialise what must be, lock what they touch, refuse what cannot
-- work, and block children.
--
-- Cycles. Two statements that together close a cycle may touch disjoint jobs
-- (a->b while c->d, with b->c and d->a already there), so row locks alone do not
-- make one see the other. Such statements take turns on sluice.job_edges_turn
-- and look for cycles after their turn came, with a fresh snapshot. A statement
-- skips the turn when every job reachable from its children is the
-- transaction's own (created by it, or updated by it and so locked until it
-- ends): another transaction could only extend that part of the graph by
-- locking one of those jobs, so it would wait for this one and then see its
-- edges. DAG runs and API submissions (new jobs below existing parents) are in
-- that case. REPEATABLE READ and SERIALIZABLE callers always take the turn, and
-- get a serialization failure when another turn was taken since their snapshot.
-- The turn is taken before any job row lock of the statement.
--
-- Children and parents are then locked (running rows first, then the others,
-- each in id order: the engine's one lock order, docs/state-machine.md), except
-- the transaction's own rows, which nobody else can lock. A parent completing at
-- the same time either commits first (read below as succeeded and not counted)
-- or waits for this transaction (and its release then sees these edges); a
-- child being retried or cancelled is read in its new state.
CREATE FUNCTION sluice.job_edges_after_insert() RETURNS trigger
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_xid      xid := pg_current_xact_id()::xid;
    v_parents  bigint[];
    v_children bigint[];
    v_reach    bigint[];
    v_own      boolean;
    v_bad      record;
    v_cycle    bigint[];
BEGIN
    SELECT array_agg(e.parent_id), array_agg(e.child_id) INTO v_parents, v_children FROM new_edges e;
    IF v_children IS NULL THEN
        RETURN NULL;  -- a statement that inserted no edge (a DAG of one node)
    END IF;

    -- Children another transaction can see need the turn whatever lies below
    -- them: that is known without walking the graph.
    SELECT bool_and(j.xmin = v_xid) INTO v_own FROM sluice.jobs j WHERE j.id = ANY(v_children);
    IF v_own THEN
        SELECT r.reach, r.own INTO v_reach, v_own FROM sluice.job_edges_reach(v_children, v_xid) r;
    END IF;
    IF NOT v_own OR current_setting('transaction_isolation') <> 'read committed' THEN
        UPDATE sluice.job_edges_turn SET turns = turns + 1;
        v_reach := NULL;  -- read again below, after the locks
    END IF;

    -- Run again on a row moved meanwhile (40001: sluice.moved_row_retry).
    FOR v_try IN 1 .. 10 LOOP
        BEGIN
            PERFORM 1
               FROM sluice.jobs j
              WHERE j.id = ANY(v_parents || v_children) AND j.xmin <> v_xid
              ORDER BY j.state <> 'running', j.id
                FOR NO KEY UPDATE;
            EXIT;
        EXCEPTION WHEN serialization_failure THEN
            PERFORM sluice.moved_row_retry(v_try, SQLERRM);
        END;
    END LOOP;

    -- What the foreign keys to sluice.jobs checked before the table was
    -- partitioned (14_job_edges.sql), with their SQLSTATE and names: every job
    -- an edge names exists. Parents first, as the keys fired; most ids are
    -- found in the live partition, the others are looked for in history.
    SELECT x.id, x.col INTO v_bad
      FROM (SELECT DISTINCT e.parent_id AS id, 'parent_id' AS col FROM new_edges e
            UNION
            SELECT DISTINCT e.child_id, 'child_id' FROM new_edges e) x
     WHERE NOT EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.id = x.id AND j.archived_at IS NULL)
       AND NOT EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.id = x.id)
     ORDER BY x.col DESC, x.id
     LIMIT 1;
    IF FOUND AND v_bad.col = 'parent_id' THEN
        RAISE EXCEPTION 'insert or update on table "job_edges" violates foreign key constraint "job_edges_parent_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'job_edges_parent_id_fkey',
                  SCHEMA = 'sluice', TABLE = 'job_edges',
                  DETAIL = format('Key (parent_id)=(%s) is not present in table "jobs".', v_bad.id);
    ELSIF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "job_edges" violates foreign key constraint "job_edges_child_id_fkey"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'job_edges_child_id_fkey',
                  SCHEMA = 'sluice', TABLE = 'job_edges',
                  DETAIL = format('Key (child_id)=(%s) is not present in table "jobs".', v_bad.id);
    END IF;

    -- A new statement: it sees what the holders of those locks committed.
    SELECT e.parent_id, e.child_id, p.state AS parent_state, c.state AS child_state,
           p.tenant AS parent_tenant, c.tenant AS child_tenant,
           CASE WHEN p.tenant <> c.tenant THEN 1
                WHEN c.group_id IS NOT NULL THEN 4
                WHEN c.state NOT IN ('blocked', 'scheduled', 'ready') THEN 2
                ELSE 3 END AS problem
      INTO v_bad
      FROM new_edges e
      JOIN sluice.jobs p ON p.id = e.parent_id
      JOIN sluice.jobs c ON c.id = e.child_id
     WHERE p.tenant <> c.tenant
        OR c.group_id IS NOT NULL
        OR c.state NOT IN ('blocked', 'scheduled', 'ready')
        OR p.state IN ('failed', 'cancelled', 'skipped')
     ORDER BY 7, e.child_id, e.parent_id
     LIMIT 1;
    IF FOUND THEN
        CASE v_bad.problem
        WHEN 1 THEN
            RAISE EXCEPTION 'job % (tenant %) cannot depend on job % (tenant %): edges stay within one tenant',
                            v_bad.child_id, v_bad.child_tenant, v_bad.parent_id, v_bad.parent_tenant
                USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_same_tenant',
                      SCHEMA = 'sluice', TABLE = 'job_edges';
        WHEN 4 THEN
            -- Its mapped node waits for it, and only the engine's map decides it.
            RAISE EXCEPTION 'job % cannot depend on job %: it is an element of a map (make its mapped node depend on it instead)',
                            v_bad.child_id, v_bad.parent_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_child_pending',
                      SCHEMA = 'sluice', TABLE = 'job_edges';
        WHEN 2 THEN
            RAISE EXCEPTION 'job % cannot depend on job %: it is already %',
                            v_bad.child_id, v_bad.parent_id, v_bad.child_state
                USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_child_pending',
                      SCHEMA = 'sluice', TABLE = 'job_edges';
        ELSE
            RAISE EXCEPTION 'job % cannot depend on job %: that job is % and will never succeed',
                            v_bad.child_id, v_bad.parent_id, v_bad.parent_state
                USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_parent_alive',
                      SCHEMA = 'sluice', TABLE = 'job_edges',
                      HINT = 'Retry the parent first (sluice.retry_dead).';
        END CASE;
    END IF;

    IF v_reach IS NULL THEN
        SELECT r.reach INTO v_reach FROM sluice.job_edges_reach(v_children, v_xid) r;
    END IF;
    v_cycle := sluice.job_edges_find_cycle(v_parents, v_children, v_reach);
    IF v_cycle IS NOT NULL THEN
        RAISE EXCEPTION 'edge % -> % would close a cycle: %',
                        v_cycle[1], v_cycle[2], array_to_string(v_cycle, ' -> ')
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_acyclic',
                  SCHEMA = 'sluice', TABLE = 'job_edges';
    END IF;

    -- Count the parents each child must now wait for (not those already
    -- succeeded), unless the inserting function counted them already
    -- (sluice.dag_run_create inserts its nodes blocked with their counts).
    IF current_setting('sluice.edges_counted', true) = 'on' THEN
        RETURN NULL;
    END IF;
    UPDATE sluice.jobs c
       SET pending_parents = c.pending_parents + w.n, state = 'blocked'
      FROM (SELECT e.child_id, count(*)::integer AS n
              FROM new_edges e JOIN sluice.jobs p ON p.id = e.parent_id
             WHERE p.state <> 'succeeded'
             GROUP BY e.child_id) w
     WHERE c.id = w.child_id AND c.archived_at IS NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_edges_after_insert AFTER INSERT ON sluice.job_edges
    REFERENCING NEW TABLE AS new_edges
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.job_edges_after_insert();

-- A deleted edge no longer holds its child back. Edges of deleted (finished)
-- parents changed nothing: a succeeded parent already released the child, and a
-- failed or cancelled one cancelled it.
CREATE FUNCTION sluice.job_edges_after_delete() RETURNS trigger
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM sluice.job_unblock(array_agg(o.child_id), array_agg(1))
       FROM old_edges o JOIN sluice.jobs p ON p.id = o.parent_id
      WHERE p.state <> 'succeeded'
     HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_edges_after_delete AFTER DELETE ON sluice.job_edges
    REFERENCING OLD TABLE AS old_edges
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.job_edges_after_delete();

CREATE FUNCTION sluice.job_edges_before_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'edges cannot be changed; delete the edge and insert a new one'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_immutable',
              SCHEMA = 'sluice', TABLE = 'job_edges';
END
$$;

CREATE TRIGGER job_edges_before_update BEFORE UPDATE ON sluice.job_edges
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.job_edges_before_update();

-- A run's state follows its nodes: it ends when no node is left to run (failed
-- if any node failed or was cancelled by the run's timeout, else cancelled if
-- any was cancelled, else succeeded: skipped nodes count as done), and runs
-- again when a retry or a rerun brings a node back. A run of a DAG with
-- `concurrency` that ends lets the next queued run of its DAG start.
CREATE FUNCTION sluice.dag_run_settle(p_runs bigint[]) RETURNS void
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_freed record;
    v_more  bigint[] := '{}';
BEGIN
    -- Lock the runs first: of two transactions finishing a run's last two nodes,
    -- the second waits here until the first commits, and its next statement (a
    -- fresh snapshot) then sees the first one's node finished.
    PERFORM 1 FROM sluice.dag_runs r WHERE r.id = ANY(p_runs) ORDER BY r.id FOR NO KEY UPDATE;

    UPDATE sluice.dag_runs r
       SET state = 'running', finished_at = NULL, reason = NULL, deadline = now() + r.timeout
     WHERE r.id = ANY(p_runs)
       AND r.state NOT IN ('queued', 'running')
       AND EXISTS (SELECT 1 FROM sluice.jobs j
                    WHERE j.run_id = r.id AND j.archived_at IS NULL
                      AND j.state IN ('blocked', 'scheduled', 'ready', 'running', 'waiting'));

    FOR v_freed IN
        WITH finished AS (
            UPDATE sluice.dag_runs r
               SET state = CASE
                       WHEN EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.run_id = r.id AND j.state = 'failed')
                         OR EXISTS (SELECT 1 FROM sluice.jobs j
                                     WHERE j.run_id = r.id AND j.state = 'cancelled' AND j.reason = 'run_timeout')
                           THEN 'failed'::sluice.run_state
                       WHEN EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.run_id = r.id AND j.state = 'cancelled')
                           THEN 'cancelled'
                       ELSE 'succeeded' END,
                   reason = CASE WHEN EXISTS (SELECT 1 FROM sluice.jobs j
                                               WHERE j.run_id = r.id AND j.state = 'cancelled'
                                                 AND j.reason = 'run_timeout')
                                 THEN 'timeout' END,
                   finished_at = now()
             WHERE r.id = ANY(p_runs)
               AND r.state = 'running'
               AND NOT EXISTS (SELECT 1 FROM sluice.jobs j
                                WHERE j.run_id = r.id AND j.archived_at IS NULL
                                  AND j.state IN ('blocked', 'scheduled', 'ready', 'running', 'waiting'))
            RETURNING r.*
        ), notified AS (
            INSERT INTO sluice.jobs (tenant, queue, task, payload, max_attempts, backoff_base)
            SELECT f.tenant, 'default', n.task, n.payload, 10, '5 seconds'
              FROM finished f
             CROSS JOIN LATERAL sluice.notification_jobs(f.notify, sluice.dag_run_event(f)) n
             WHERE f.notify IS NOT NULL
        )
        SELECT DISTINCT f.tenant, f.dag_name, f.concurrency_key
          FROM finished f
         WHERE f.concurrency IS NOT NULL
    LOOP
        v_more := v_more || sluice.dag_run_promote(v_freed.tenant, v_freed.dag_name, v_freed.concurrency_key);
    END LOOP;
    IF cardinality(v_more) > 0 THEN
        PERFORM sluice.dag_run_settle(v_more);
    END IF;
END
$$;
