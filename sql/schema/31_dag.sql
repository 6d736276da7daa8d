-- DAG mechanics: edges, release of children, cancellation of descendants, run state.
--
-- Locking rule (why nothing here deadlocks): every function that locks several
-- jobs locks them in ascending id order, and jobs are always locked before runs.
-- Two transactions that take overlapping locks in the same order cannot wait on
-- each other in a cycle.

-- Move blocked children closer to ready: child `p_children[i]` has `p_counts[i]`
-- fewer parents to wait for. The decrement happens under the child's row lock
-- (taken in id order), so two parents succeeding at the same instant in two
-- transactions serialise on the child: the second sees the first's decrement,
-- and exactly one of them brings the count to zero and makes the child ready.
CREATE FUNCTION sluice.job_unblock(p_children bigint[], p_counts integer[]) RETURNS void
    LANGUAGE sql AS $$
    WITH counts AS (
        SELECT c.id, sum(c.n)::integer AS n
          FROM unnest(p_children, p_counts) AS c(id, n)
         GROUP BY c.id
    ), locked AS (
        SELECT j.id, counts.n
          FROM sluice.jobs j
          JOIN counts ON counts.id = j.id
         WHERE j.state = 'blocked'
         ORDER BY j.id
           FOR NO KEY UPDATE OF j
    )
    UPDATE sluice.jobs j
       SET pending_parents = j.pending_parents - l.n,
           state = CASE WHEN j.pending_parents > l.n THEN 'blocked'::sluice.job_state
                        WHEN j.run_at > now() THEN 'scheduled'
                        ELSE 'ready' END
      FROM locked l
     WHERE j.id = l.id;
$$;

-- Parents that just succeeded release their children. PL/pgSQL rather than SQL:
-- it runs after every completion batch, mostly finding no edges, and PL/pgSQL
-- keeps the lookup's plan where a SQL function would plan it again on each call.
CREATE FUNCTION sluice.job_release_children(p_parents bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_children bigint[];
BEGIN
    -- One entry per edge: job_unblock sums a child's entries and locks in id order.
    SELECT array_agg(e.child_id) INTO v_children
      FROM sluice.job_edges e
     WHERE e.parent_id = ANY(p_parents);
    IF v_children IS NOT NULL THEN
        PERFORM sluice.job_unblock(v_children, array_fill(1, ARRAY[cardinality(v_children)]));
    END IF;
END
$$;

-- Jobs that failed or were cancelled take every pending descendant with them, in
-- one recursive statement rather than a cascade of trigger calls one level at a
-- time. The jobs_after_update call this UPDATE causes must not walk the same
-- subtree again: sluice.cascading tells it so.
CREATE FUNCTION sluice.job_cancel_descendants(p_roots bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('sluice.cascading', 'on', true);
    WITH RECURSIVE descendants(id) AS (
        SELECT e.child_id FROM sluice.job_edges e WHERE e.parent_id = ANY(p_roots)
        UNION
        SELECT e.child_id FROM descendants d JOIN sluice.job_edges e ON e.parent_id = d.id
    ), locked AS (
        SELECT j.id
          FROM sluice.jobs j
          JOIN descendants d ON d.id = j.id
         WHERE j.state IN ('blocked', 'scheduled', 'ready')
         ORDER BY j.id
           FOR NO KEY UPDATE OF j
    )
    UPDATE sluice.jobs j
       SET state = 'cancelled', reason = 'upstream_failed', finished_at = now()
      FROM locked l
     WHERE j.id = l.id;
    PERFORM set_config('sluice.cascading', 'off', true);
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

-- A cycle closed by the new edges (p_parents[i] -> p_children[i]), as the list of
-- jobs around it (first = last), or null when there is none.
--
-- Every job on such a cycle is a descendant of a new edge's child. Ids increase
-- along a cycle's edges and must also decrease somewhere, so if the edges leaving
-- those descendants all go the same way (parents inserted before children, the
-- usual case, or all the other way) there is no cycle and the check costs one
-- pass over the descendants. Otherwise each new edge whose parent is among the
-- descendants is checked on its own.
CREATE FUNCTION sluice.job_edges_find_cycle(p_parents bigint[], p_children bigint[])
    RETURNS bigint[]
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_reach bigint[];
    v_mixed boolean;
    v_edge  record;
    v_path  bigint[];
BEGIN
    WITH RECURSIVE reach(id) AS (
        SELECT unnest(p_children)
        UNION
        SELECT e.child_id FROM reach r JOIN sluice.job_edges e ON e.parent_id = r.id
    )
    SELECT array_agg(id) INTO v_reach FROM reach;

    SELECT bool_or(e.parent_id > e.child_id) AND bool_or(e.parent_id < e.child_id)
      INTO v_mixed
      FROM sluice.job_edges e
     WHERE e.parent_id = ANY(v_reach);
    IF NOT coalesce(v_mixed, false) THEN
        RETURN NULL;
    END IF;

    FOR v_edge IN
        SELECT DISTINCT x.parent_id, x.child_id
          FROM unnest(p_parents, p_children) AS x(parent_id, child_id)
         WHERE x.parent_id = ANY(v_reach)
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

-- New edges: lock what they touch, refuse what cannot work, and block children.
CREATE FUNCTION sluice.job_edges_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_bad   record;
    v_cycle bigint[];
BEGIN
    -- Lock parents and children together in id order. A parent completing at the
    -- same time either commits first (we then read it as succeeded and do not
    -- count it) or waits for us (its release then sees these edges).
    PERFORM 1
       FROM sluice.jobs j
      WHERE j.id IN (SELECT parent_id FROM new_edges UNION SELECT child_id FROM new_edges)
      ORDER BY j.id
        FOR NO KEY UPDATE;

    SELECT e.parent_id, e.child_id, c.state INTO v_bad
      FROM new_edges e JOIN sluice.jobs c ON c.id = e.child_id
     WHERE c.state NOT IN ('blocked', 'scheduled', 'ready')
     ORDER BY e.child_id, e.parent_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'job % cannot depend on job %: it is already %',
                        v_bad.child_id, v_bad.parent_id, v_bad.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_child_pending',
                  SCHEMA = 'sluice', TABLE = 'job_edges';
    END IF;

    SELECT e.parent_id, e.child_id, p.state INTO v_bad
      FROM new_edges e JOIN sluice.jobs p ON p.id = e.parent_id
     WHERE p.state IN ('failed', 'cancelled')
     ORDER BY e.parent_id, e.child_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'job % cannot depend on job %: that job is % and will never succeed',
                        v_bad.child_id, v_bad.parent_id, v_bad.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_parent_alive',
                  SCHEMA = 'sluice', TABLE = 'job_edges',
                  HINT = 'Retry the parent first (sluice.retry_dead).';
    END IF;

    SELECT sluice.job_edges_find_cycle(array_agg(parent_id), array_agg(child_id))
      INTO v_cycle
      FROM new_edges;
    IF v_cycle IS NOT NULL THEN
        RAISE EXCEPTION 'edge % -> % would close a cycle: %',
                        v_cycle[1], v_cycle[2], array_to_string(v_cycle, ' -> ')
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_acyclic',
                  SCHEMA = 'sluice', TABLE = 'job_edges';
    END IF;

    -- Count the parents each child must now wait for (not those already succeeded).
    UPDATE sluice.jobs c
       SET pending_parents = c.pending_parents + w.n, state = 'blocked'
      FROM (SELECT e.child_id, count(*)::integer AS n
              FROM new_edges e JOIN sluice.jobs p ON p.id = e.parent_id
             WHERE p.state <> 'succeeded'
             GROUP BY e.child_id) w
     WHERE c.id = w.child_id;
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
    LANGUAGE plpgsql AS $$
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
-- if any node failed, else cancelled if any was cancelled, else succeeded), and
-- runs again when a retry brings a node back.
CREATE FUNCTION sluice.dag_run_settle(p_runs bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    -- Lock the runs first: of two transactions finishing a run's last two nodes,
    -- the second waits here until the first commits, and its next statement (a
    -- fresh snapshot) then sees the first one's node finished.
    PERFORM 1 FROM sluice.dag_runs r WHERE r.id = ANY(p_runs) ORDER BY r.id FOR NO KEY UPDATE;

    UPDATE sluice.dag_runs r
       SET state = 'running', finished_at = NULL
     WHERE r.id = ANY(p_runs)
       AND r.state <> 'running'
       AND EXISTS (SELECT 1 FROM sluice.jobs j
                    WHERE j.run_id = r.id AND j.state IN ('blocked', 'scheduled', 'ready', 'running'));

    WITH finished AS (
        UPDATE sluice.dag_runs r
           SET state = CASE
                   WHEN EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.run_id = r.id AND j.state = 'failed')
                       THEN 'failed'::sluice.run_state
                   WHEN EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.run_id = r.id AND j.state = 'cancelled')
                       THEN 'cancelled'
                   ELSE 'succeeded' END,
               finished_at = now()
         WHERE r.id = ANY(p_runs)
           AND r.state = 'running'
           AND NOT EXISTS (SELECT 1 FROM sluice.jobs j
                            WHERE j.run_id = r.id AND j.state IN ('blocked', 'scheduled', 'ready', 'running'))
        RETURNING r.*
    )
    INSERT INTO sluice.jobs (tenant, queue, task, payload, max_attempts, backoff_base)
    SELECT f.tenant, 'default', n.task, n.payload, 10, '5 seconds'
      FROM finished f
     CROSS JOIN LATERAL sluice.notification_jobs(f.notify, sluice.dag_run_event(f)) n
     WHERE f.notify IS NOT NULL;
END
$$;
