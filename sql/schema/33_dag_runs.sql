-- Starting DAG runs. A definition here is the normalised JSON the API stores
-- after validation (so SQL trusts its shape; constraints still guard each row);
-- dag_run_create below shows it. docs/dags.md is the user's description.

-- What templates and conditions see of a run: {"id", "dag", "version",
-- "occurrence" (RFC 3339, UTC; null unless a schedule or a backfill started
-- it), "created_at"}.
CREATE FUNCTION sluice.dag_run_context(r sluice.dag_runs) RETURNS jsonb
    LANGUAGE sql STABLE
RETURN jsonb_build_object(
    'id', r.id, 'dag', r.dag_name, 'version', r.dag_version,
    'occurrence', to_char(r.occurrence AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'created_at', to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));

-- Raise the error of a node's template or condition that can never work, as
-- constraint template_renders (the API answers 422 naming the node and place).
CREATE FUNCTION sluice.dag_node_refuse(p_node text, p_message text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'node %: %', p_node, p_message
        USING ERRCODE = 'invalid_parameter_value', CONSTRAINT = 'template_renders', SCHEMA = 'sluice';
END
$$;

-- A node's payload and data-flow spec (jobs.flow) as its run is created.
-- Templates that read only `params` and `run` are rendered now (so such a
-- node needs no flow at all); the others, and a mapped node's, are compiled
-- once and kept with the node, to be rendered when it becomes ready. A
-- template that is malformed, or names a parameter the run does not have
-- (without `| default(...)`), or a condition that does not parse, is refused
-- here rather than failing the node later. p_context is {"params", "run"}.
CREATE FUNCTION sluice.dag_node_flow(p_node jsonb, p_context jsonb, OUT payload jsonb, OUT flow jsonb)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_id    text := p_node ->> 'id';
    v_sites jsonb;
    v_map   jsonb;
    v_bad   record;
    v_refs  text[];
    v_error text;
BEGIN
    payload := coalesce(p_node -> 'payload', '{}');
    flow := '{}';
    v_sites := sluice.template_compile(payload);
    IF jsonb_typeof(p_node -> 'map') = 'string' THEN
        v_map := sluice.template_compile(p_node -> 'map', 'map');
    END IF;

    SELECT s.site ->> 'where' AS at, coalesce(e.part ->> 'src', '') AS src, e.part ->> 'error' AS error
      INTO v_bad
      FROM jsonb_array_elements(coalesce(v_sites, '[]') || coalesce(v_map, '[]')) AS s(site)
     CROSS JOIN LATERAL jsonb_array_elements(s.site -> 'errors') AS e(part)
     LIMIT 1;
    IF FOUND THEN
        PERFORM sluice.dag_node_refuse(v_id, format('template %s at %s: %s', v_bad.src, v_bad.at, v_bad.error));
    END IF;
    SELECT s.site ->> 'where' AS at, p.part ->> 'src' AS src, ((p.part ->> 'path')::text[])[2] AS name
      INTO v_bad
      FROM jsonb_array_elements(coalesce(v_sites, '[]') || coalesce(v_map, '[]')) AS s(site)
     CROSS JOIN LATERAL jsonb_array_elements(s.site -> 'parts') AS p(part)
     WHERE jsonb_typeof(p.part) = 'object' AND p.part ->> 'root' = 'params' AND NOT p.part ? 'default'
       AND ((p.part ->> 'path')::text[])[2] IS NOT NULL
       AND NOT (p_context -> 'params') ? ((p.part ->> 'path')::text[])[2]
     LIMIT 1;
    IF FOUND THEN
        PERFORM sluice.dag_node_refuse(v_id, format(
            'template %s at %s: the run has no parameter %s (give it in params, or write | default(...))',
            v_bad.src, v_bad.at, to_jsonb(v_bad.name)));
    END IF;

    -- Node ids the templates read.
    SELECT coalesce(array_agg(DISTINCT ((p.part ->> 'path')::text[])[2]), '{}')
      INTO v_refs
      FROM jsonb_array_elements(coalesce(v_sites, '[]') || coalesce(v_map, '[]')) AS s(site)
     CROSS JOIN LATERAL jsonb_array_elements(s.site -> 'parts') AS p(part)
     WHERE jsonb_typeof(p.part) = 'object' AND p.part ->> 'root' = 'nodes';

    IF v_sites IS NOT NULL THEN
        IF p_node ? 'map' OR cardinality(v_refs) > 0
           OR jsonb_path_exists(v_sites, '$[*].parts[*] ? (@.root == "item" || @.root == "index")') THEN
            flow := flow || jsonb_build_object('template', payload, 'sites', v_sites);
        ELSE
            SELECT r.payload, r.error INTO payload, v_error
              FROM sluice.template_apply(payload, v_sites, p_context) AS r;
            IF v_error IS NOT NULL THEN
                PERFORM sluice.dag_node_refuse(v_id, v_error);
            END IF;
            IF NOT sluice.json_nesting_ok(payload) THEN
                PERFORM sluice.dag_node_refuse(v_id, 'the rendered payload nests deeper than 100 levels');
            END IF;
        END IF;
    END IF;

    IF coalesce(p_node ->> 'trigger', 'all_success') <> 'all_success' THEN
        flow := flow || jsonb_build_object('trigger', p_node -> 'trigger');
    END IF;
    IF p_node ? 'when' THEN
        v_error := CASE WHEN jsonb_typeof(p_node -> 'when') = 'string' THEN sluice.when_problem(p_node ->> 'when')
                        ELSE 'must be a SQL/JSON path predicate (a string)' END;
        IF v_error IS NOT NULL THEN
            PERFORM sluice.dag_node_refuse(v_id, format('when %s', v_error));
        END IF;
        flow := flow || jsonb_build_object('when', p_node -> 'when');
        v_refs := v_refs || sluice.when_nodes(p_node ->> 'when');
    END IF;
    IF p_node ? 'map' THEN
        IF jsonb_typeof(p_node -> 'map') NOT IN ('array', 'string') THEN
            PERFORM sluice.dag_node_refuse(v_id, 'map must be a list, or one template that gives a list');
        END IF;
        flow := flow || jsonb_build_object('map', jsonb_strip_nulls(
                    jsonb_build_object('expr', p_node -> 'map', 'sites', v_map)));
    END IF;
    IF p_node ? 'wait' THEN
        flow := flow || jsonb_build_object('wait', p_node -> 'wait');
    END IF;
    IF cardinality(v_refs) > 0 THEN
        flow := flow || jsonb_build_object('refs', (SELECT jsonb_agg(DISTINCT r) FROM unnest(v_refs) r));
    END IF;
    flow := nullif(flow, '{}');
END
$$;

-- The nodes of a DAG, numbered 1..p_n, parents before children, given its
-- edges as node numbers sorted by parent: 1..p_n when they already are (the
-- API sorts definitions so), else Kahn's algorithm's order, in time linear in
-- nodes and edges (a definition from SQL may list its nodes in any order).
-- With a cycle, 1..p_n: the edge trigger then refuses the run
-- (job_edges_acyclic).
CREATE FUNCTION sluice.dag_node_order(p_n integer, p_parents integer[], p_children integer[])
    RETURNS integer[]
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_first   integer[];  -- v_first[p]: p's first edge; v_first[p + 1] - 1: its last
    v_waiting integer[];  -- per node, its parents not yet placed
    v_order   integer[];  -- the nodes placed, in order; also the queue of Kahn's algorithm
    v_placed  integer := 0;
    v_done    integer := 0;
    v_node    integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unnest(p_parents, p_children) AS e(p, c) WHERE e.p >= e.c) THEN
        RETURN ARRAY(SELECT generate_series(1, p_n));
    END IF;
    SELECT array_agg(x.first ORDER BY x.node), array_agg(x.waiting ORDER BY x.node)
      INTO v_first, v_waiting
      FROM (SELECT g.node,
                   (1 + sum(coalesce(o.n, 0)) OVER (ORDER BY g.node) - coalesce(o.n, 0))::integer AS first,
                   coalesce(i.n, 0)::integer AS waiting
              FROM generate_series(1, p_n + 1) AS g(node)
              LEFT JOIN (SELECT p, count(*) AS n FROM unnest(p_parents) AS p GROUP BY p) o ON o.p = g.node
              LEFT JOIN (SELECT c, count(*) AS n FROM unnest(p_children) AS c GROUP BY c) i ON i.c = g.node) x;
    v_order := array_fill(0, ARRAY[p_n]);
    FOR i IN 1 .. p_n LOOP
        IF v_waiting[i] = 0 THEN
            v_placed := v_placed + 1;
            v_order[v_placed] := i;
        END IF;
    END LOOP;
    WHILE v_done < v_placed LOOP
        v_done := v_done + 1;
        v_node := v_order[v_done];
        FOR k IN v_first[v_node] .. v_first[v_node + 1] - 1 LOOP
            v_waiting[p_children[k]] := v_waiting[p_children[k]] - 1;
            IF v_waiting[p_children[k]] = 0 THEN
                v_placed := v_placed + 1;
                v_order[v_placed] := p_children[k];
            END IF;
        END LOOP;
    END LOOP;
    IF v_placed < p_n THEN
        RETURN ARRAY(SELECT generate_series(1, p_n));
    END IF;
    RETURN v_order;
END
$$;

-- Create the jobs and edges of run p_run from its definition, with each
-- node's parents counted as it is inserted (blocked, or ready without
-- parents), then prepare the roots that have a condition, a map or a wait
-- (sluice.node_prepare) and move the run on from what they decided. Answers
-- the runs to settle. Used when a run starts: at creation, or when a queued
-- run gets its turn.
--
-- Ids are drawn in sluice.dag_node_order, so they grow along every edge:
-- job_propagate's lock order relies on it, and the cycle check takes its
-- one-pass fast path. Edges among these new jobs take no lock and no turn.
CREATE FUNCTION sluice.dag_run_begin(p_run bigint, p_definition jsonb) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    v_r        sluice.dag_runs;
    v_context  jsonb;
    v_ids      bigint[];
    v_nodes    text[];
    v_parents  bigint[];
    v_children bigint[];
    v_from     integer[];  -- the edges, as positions of nodes in the definition
    v_to       integer[];
    v_roots    bigint[];
    v_events   bigint[];
    v_runs     bigint[];
    v_child    text;
    v_parent   text;
    v_problem  text;
BEGIN
    SELECT * INTO v_r FROM sluice.dag_runs r WHERE r.id = p_run;
    v_context := jsonb_build_object('params', v_r.params, 'run', sluice.dag_run_context(v_r));

    IF jsonb_typeof(p_definition -> 'nodes') IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_definition -> 'nodes') = 0 THEN
        RAISE EXCEPTION 'a DAG needs at least one node (nodes: a list)'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'dag_runs_nodes_present';
    END IF;
    -- The API checks a definition before it gets here; one from SQL is not.
    -- Refuse, by name, the shapes the statements below would misread: a node
    -- without an id would run with no name, a repeated id would make two jobs
    -- of one node, and a depends_on that is no list would fail obscurely.
    SELECT format('the node at position %s %s', n.ord,
                  CASE WHEN jsonb_typeof(n.node) <> 'object' THEN 'is not an object'
                       WHEN jsonb_typeof(n.node -> 'id') IS DISTINCT FROM 'string' THEN 'has no id (a string)'
                       ELSE format('(%s): depends_on must be a list of node ids', n.node ->> 'id') END)
      INTO v_problem
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord)
     WHERE jsonb_typeof(n.node) <> 'object'
        OR jsonb_typeof(n.node -> 'id') IS DISTINCT FROM 'string'
        OR (n.node ? 'depends_on'
            AND (jsonb_typeof(n.node -> 'depends_on') <> 'array'
                 OR EXISTS (SELECT 1 FROM jsonb_array_elements(n.node -> 'depends_on') AS d(name)
                             WHERE jsonb_typeof(d.name) <> 'string')))
     ORDER BY n.ord
     LIMIT 1;
    IF v_problem IS NULL THEN
        SELECT format('node id %s is used more than once', x.id) INTO v_problem
          FROM jsonb_array_elements(p_definition -> 'nodes') AS n(node)
         CROSS JOIN LATERAL (SELECT n.node ->> 'id') AS x(id)
         GROUP BY x.id
        HAVING count(*) > 1
         LIMIT 1;
    END IF;
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid DAG definition: %', v_problem
            USING ERRCODE = 'check_violation', CONSTRAINT = 'dag_runs_nodes_valid';
    END IF;
    SELECT array_agg(n.node ->> 'id' ORDER BY n.ord) INTO v_nodes
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord);
    -- A parent that names no node (the API refuses it first): left out of the
    -- edges below, it would let its child run without waiting.
    SELECT n.node ->> 'id', d.name INTO v_child, v_parent
      FROM jsonb_array_elements(p_definition -> 'nodes') AS n(node)
     CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(n.node -> 'depends_on', '[]')) AS d(name)
     WHERE d.name <> ALL (v_nodes)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'node % depends on %, which is no node of this DAG', v_child, v_parent
            USING ERRCODE = 'check_violation', CONSTRAINT = 'dag_runs_parents_known';
    END IF;

    -- The edges as node numbers (positions in the definition), then ids drawn
    -- so that the k-th smallest goes to the k-th node of dag_node_order.
    SELECT array_agg(e.parent ORDER BY e.parent, e.child), array_agg(e.child ORDER BY e.parent, e.child)
      INTO v_from, v_to
      FROM (SELECT DISTINCT p.ord::integer AS parent, n.ord::integer AS child
              FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord)
             CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(n.node -> 'depends_on', '[]')) AS d(name)
              JOIN unnest(v_nodes) WITH ORDINALITY AS p(name, ord) ON p.name = d.name) e;
    SELECT array_agg(o.id ORDER BY o.node)
      INTO v_ids
      FROM unnest(sluice.dag_node_order(cardinality(v_nodes), coalesce(v_from, '{}'), coalesce(v_to, '{}')),
                  ARRAY(SELECT nextval(pg_get_serial_sequence('sluice.jobs', 'id'))
                          FROM generate_series(1, cardinality(v_nodes)) ORDER BY 1)) AS o(node, id);
    SELECT array_agg(v_ids[e.p] ORDER BY v_ids[e.c], v_ids[e.p]), array_agg(v_ids[e.c] ORDER BY v_ids[e.c], v_ids[e.p])
      INTO v_parents, v_children
      FROM unnest(v_from, v_to) AS e(p, c);

    PERFORM set_config('sluice.engine_insert', 'on', true);
    INSERT INTO sluice.jobs (id, tenant, run_id, node, task, payload, flow, state, pending_parents,
                             queue, priority, max_attempts, backoff, backoff_base, backoff_max, timeout)
    SELECT v_ids[n.ord], v_r.tenant, p_run, n.node ->> 'id',
           coalesce(n.node ->> 'task', 'sluice.wait'),
           coalesce(f.payload, n.node -> 'payload', '{}'), f.flow,
           CASE WHEN c.n > 0 THEN 'blocked'::sluice.job_state ELSE 'ready' END, coalesce(c.n, 0),
           coalesce(n.node ->> 'queue', 'default'),
           coalesce((n.node ->> 'priority')::integer, 0),
           coalesce((n.node ->> 'max_attempts')::integer, 5),
           -- Left out, the retry policy stays null: the default (sluice.backoff_delay).
           n.node ->> 'backoff',
           make_interval(secs => (n.node ->> 'backoff_base')::double precision),
           make_interval(secs => (n.node ->> 'backoff_max')::double precision),
           make_interval(secs => (n.node ->> 'timeout')::double precision)
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord)
      LEFT JOIN (SELECT x.child, count(*)::integer AS n FROM unnest(v_children) AS x(child) GROUP BY x.child) c
             ON c.child = v_ids[n.ord]
      LEFT JOIN LATERAL sluice.dag_node_flow(n.node, v_context) f
             ON n.node ?| '{trigger,when,map,wait}' OR strpos((n.node -> 'payload')::text, '{{') > 0;
    PERFORM set_config('sluice.engine_insert', 'off', true);

    IF v_children IS NOT NULL THEN
        PERFORM set_config('sluice.edges_counted', 'on', true);
        INSERT INTO sluice.job_edges (parent_id, child_id) SELECT * FROM unnest(v_parents, v_children);
        PERFORM set_config('sluice.edges_counted', 'off', true);
    END IF;

    -- Roots with a condition, a map or a wait are decided now, like any node
    -- that becomes ready.
    SELECT array_agg(j.id) INTO v_roots
      FROM sluice.jobs j
     WHERE j.id = ANY(v_ids) AND j.state = 'ready' AND j.flow IS NOT NULL;
    IF v_roots IS NULL THEN
        RETURN '{}';
    END IF;
    PERFORM set_config('sluice.cascading', 'on', true);
    SELECT array_agg(p.id) FILTER (WHERE sluice.state_is_terminal(p.state)) INTO v_events
      FROM sluice.node_prepare(v_roots) p;
    PERFORM set_config('sluice.cascading', 'off', true);
    v_runs := sluice.job_propagate(v_events);
    RETURN ARRAY[p_run] || v_runs;
END
$$;

-- Create a run of `p_definition` (the normalised JSON the API stores after
-- validation): the run row, one job per node, one edge per dependency, in one
-- transaction. With an idempotency key the tenant already used, returns that
-- run and creates nothing.
--
--   {"nodes": [{"id": "extract", "task": "shell", "payload": {...},
--               "depends_on": ["..."], "queue": "default", "priority": 0,
--               "max_attempts": 3, "backoff": "exponential",
--               "backoff_base": 1.0, "backoff_max": 3600.0,   -- seconds
--               "timeout": 30.0,                               -- seconds or null
--               "trigger": "all_done", "when": "$...", "map": ..., "wait": {...}}, ...],
--    "params": {...},               -- defaults, under p_params
--    "timeout": 7200.0,             -- the run's deadline, seconds after it starts
--    "concurrency": 2, "concurrency_key": "{{ params.customer }}"}
--
-- With `concurrency`, runs of this DAG (per tenant and rendered key) take
-- turns on a transaction-level advisory lock and count the running ones: past
-- the limit the run is created `queued`, keeping its definition, and starts
-- (in id order) when a running one ends (dag_run_settle). p_occurrence is the
-- cron occurrence the run is for ({{ run.occurrence }}).
CREATE FUNCTION sluice.dag_run_create(
    p_tenant          text,
    p_definition      jsonb,
    p_params          jsonb DEFAULT '{}',
    p_dag_name        text DEFAULT NULL,
    p_dag_version     integer DEFAULT NULL,
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_schedule_id     bigint DEFAULT NULL,
    p_occurrence      timestamptz DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_params      jsonb := coalesce(p_definition -> 'params', '{}') || coalesce(p_params, '{}');
    v_concurrency integer := (p_definition ->> 'concurrency')::integer;
    v_timeout     interval := make_interval(secs => (p_definition ->> 'timeout')::double precision);
    v_key         text;
    v_state       sluice.run_state := 'running';
    v_run         bigint;
    v_runs        bigint[];
BEGIN
    IF jsonb_typeof(v_params) <> 'object' THEN
        RAISE EXCEPTION 'params must be a JSON object'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'dag_runs_params_object';
    END IF;
    IF v_concurrency IS NOT NULL THEN
        v_key := coalesce(sluice.template_render(
                     coalesce(p_definition -> 'concurrency_key', '""'),
                     jsonb_build_object('params', v_params, 'run', jsonb_build_object('dag', p_dag_name)),
                     'concurrency_key') #>> '{}', '');
        PERFORM sluice.dag_run_concurrency_lock(p_tenant, p_dag_name, v_key);
        IF (SELECT count(*) FROM sluice.dag_runs r
             WHERE r.state = 'running' AND r.concurrency IS NOT NULL
               AND r.tenant = p_tenant AND coalesce(r.dag_name, '') = coalesce(p_dag_name, '')
               AND r.concurrency_key = v_key) >= v_concurrency
           OR EXISTS (SELECT 1 FROM sluice.dag_runs r
                       WHERE r.state = 'queued'
                         AND r.tenant = p_tenant AND coalesce(r.dag_name, '') = coalesce(p_dag_name, '')
                         AND r.concurrency_key = v_key)
        THEN
            v_state := 'queued';
        END IF;
    END IF;

    INSERT INTO sluice.dag_runs AS r (tenant, dag_name, dag_version, params, notify, idempotency_key,
                                      schedule_id, occurrence, state, concurrency, concurrency_key,
                                      definition, timeout, started_at, deadline)
    VALUES (p_tenant, p_dag_name, p_dag_version, v_params, p_notify, p_idempotency_key,
            p_schedule_id, p_occurrence, v_state, v_concurrency, v_key,
            CASE WHEN v_state = 'queued' THEN p_definition END, v_timeout,
            CASE WHEN v_state = 'running' THEN now() END,
            CASE WHEN v_state = 'running' THEN now() + v_timeout END)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING r.id INTO v_run;
    IF v_run IS NULL THEN
        SELECT r.id INTO v_run
          FROM sluice.dag_runs r
         WHERE r.tenant = p_tenant AND r.idempotency_key = p_idempotency_key;
        RETURN v_run;
    END IF;
    IF v_state = 'running' THEN
        v_runs := sluice.dag_run_begin(v_run, p_definition);
        IF cardinality(v_runs) > 0 THEN
            PERFORM sluice.dag_run_settle(v_runs);
        END IF;
    END IF;
    RETURN v_run;
END
$$;

-- The turn that creations and starts of runs of one DAG (tenant, name and
-- concurrency key) take, to count running runs one at a time: a
-- transaction-level advisory lock, which works behind PgBouncer in
-- transaction mode.
CREATE FUNCTION sluice.dag_run_concurrency_lock(p_tenant text, p_dag_name text, p_key text) RETURNS void
    LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended(
        format('sluice.runs:%s:%s:%s', p_tenant, coalesce(p_dag_name, ''), p_key), 0));
$$;

-- Start queued runs of the DAG of a run that just ended, oldest first, while
-- slots are free. Called by dag_run_settle after its run locks; the queued run
-- is taken SKIP LOCKED (one being cancelled is passed over), so this never
-- waits for a run row. Answers the runs to settle (a run whose nodes all end
-- at once, say every root skipped).
--
-- A queued run's definition becomes jobs only here, in the transaction that
-- ended the run ahead of it. One that cannot (a definition SQL accepted with a
-- cycle, say) must not fail that transaction, which would then never commit:
-- its jobs are undone with its subtransaction, and the run alone ends `failed`
-- with the error as its reason (and its notification). Errors that say "try
-- the transaction again" (serialization, deadlock, cancel) are raised as they
-- are: they are not the run's fault.
CREATE FUNCTION sluice.dag_run_promote(p_tenant text, p_dag_name text, p_key text) RETURNS bigint[]
    LANGUAGE plpgsql AS $$
DECLARE
    v_next  sluice.dag_runs;
    v_runs  bigint[] := '{}';
    v_error text;
BEGIN
    PERFORM sluice.dag_run_concurrency_lock(p_tenant, p_dag_name, p_key);
    LOOP
        SELECT * INTO v_next
          FROM sluice.dag_runs r
         WHERE r.state = 'queued'
           AND r.tenant = p_tenant AND coalesce(r.dag_name, '') = coalesce(p_dag_name, '')
           AND r.concurrency_key = p_key
         ORDER BY r.id
         LIMIT 1
           FOR NO KEY UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        EXIT WHEN (SELECT count(*) FROM sluice.dag_runs r
                    WHERE r.state = 'running' AND r.concurrency IS NOT NULL
                      AND r.tenant = p_tenant AND coalesce(r.dag_name, '') = coalesce(p_dag_name, '')
                      AND r.concurrency_key = p_key) >= v_next.concurrency;
        UPDATE sluice.dag_runs r
           SET state = 'running', started_at = now(), deadline = now() + r.timeout, definition = NULL
         WHERE r.id = v_next.id;
        BEGIN
            v_runs := v_runs || sluice.dag_run_begin(v_next.id, v_next.definition);
        EXCEPTION
            WHEN serialization_failure OR deadlock_detected OR lock_not_available
                 OR query_canceled OR admin_shutdown THEN
                RAISE;
            WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_error = MESSAGE_TEXT;
                UPDATE sluice.dag_runs r
                   SET state = 'failed', finished_at = now(), deadline = NULL,
                       reason = left('could not start: ' || v_error, 1000)
                 WHERE r.id = v_next.id
                RETURNING r.* INTO v_next;
                INSERT INTO sluice.jobs (tenant, queue, task, payload, max_attempts, backoff_base)
                SELECT v_next.tenant, 'default', n.task, n.payload, 10, '5 seconds'
                  FROM sluice.notification_jobs(v_next.notify, sluice.dag_run_event(v_next)) n
                 WHERE v_next.notify IS NOT NULL;
        END;
    END LOOP;
    RETURN v_runs;
END
$$;

-- Start a run of the newest version of a stored DAG.
CREATE FUNCTION sluice.dag_run_start(
    p_tenant          text,
    p_dag_name        text,
    p_params          jsonb DEFAULT '{}',
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_schedule_id     bigint DEFAULT NULL,
    p_occurrence      timestamptz DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_dag sluice.dags;
BEGIN
    SELECT * INTO v_dag
      FROM sluice.dags d
     WHERE d.tenant = p_tenant AND d.name = p_dag_name
     ORDER BY d.version DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no DAG named % for tenant %', p_dag_name, p_tenant
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN sluice.dag_run_create(p_tenant, v_dag.definition, p_params, v_dag.name, v_dag.version,
                                 p_notify, p_idempotency_key, p_schedule_id, p_occurrence);
END
$$;
