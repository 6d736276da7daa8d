-- Starting DAG runs. A definition here is the normalised JSON the API stores
-- after validation (so SQL trusts its shape; constraints still guard each row):
--
--   {"nodes": [{"id": "extract", "task": "shell", "payload": {...},
--               "depends_on": ["..."], "queue": "default", "priority": 0,
--               "max_attempts": 3, "backoff": "exponential",
--               "backoff_base": 1.0, "backoff_max": 3600.0,   -- seconds
--               "timeout": 30.0}, ...]}                        -- seconds or null
--
-- Nodes come in topological order (parents first), so ids grow along every
-- edge and the cycle check takes its one-pass fast path.

-- Fill `{{ params.name }}` placeholders inside the string values of `payload`
-- with the run's parameters (as text, JSON-escaped). Unknown names stay as written.
CREATE FUNCTION sluice.dag_render(payload jsonb, params jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_text  text;
    v_param record;
BEGIN
    IF payload IS NULL OR params IS NULL OR params = '{}'::jsonb THEN
        RETURN payload;
    END IF;
    v_text := regexp_replace(payload::text, '\{\{\s*params\.([A-Za-z0-9_]+)\s*\}\}', '{{params.\1}}', 'g');
    IF strpos(v_text, '{{params.') = 0 THEN
        RETURN payload;
    END IF;
    FOR v_param IN SELECT key, value FROM jsonb_each_text(params) LOOP
        v_text := replace(v_text, '{{params.' || v_param.key || '}}',
                          substr(to_jsonb(coalesce(v_param.value, ''))::text, 2,
                                 length(to_jsonb(coalesce(v_param.value, ''))::text) - 2));
    END LOOP;
    RETURN v_text::jsonb;
END
$$;

-- Create a run of `p_definition`: the run row, one job per node, one edge per
-- dependency, in one transaction. With an idempotency key the tenant already
-- used, returns that run and creates nothing.
CREATE FUNCTION sluice.dag_run_create(
    p_tenant          text,
    p_definition      jsonb,
    p_params          jsonb DEFAULT '{}',
    p_dag_name        text DEFAULT NULL,
    p_dag_version     integer DEFAULT NULL,
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_schedule_id     bigint DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_run   bigint;
    v_ids   bigint[];
    v_nodes text[];
BEGIN
    INSERT INTO sluice.dag_runs AS r (tenant, dag_name, dag_version, params, notify, idempotency_key, schedule_id)
    VALUES (p_tenant, p_dag_name, p_dag_version, coalesce(p_params, '{}'), p_notify, p_idempotency_key, p_schedule_id)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING r.id INTO v_run;
    IF v_run IS NULL THEN
        SELECT r.id INTO v_run
          FROM sluice.dag_runs r
         WHERE r.tenant = p_tenant AND r.idempotency_key = p_idempotency_key;
        RETURN v_run;
    END IF;

    -- Ids are drawn in node order, so parents (listed first) get smaller ids.
    SELECT array_agg(nextval(pg_get_serial_sequence('sluice.jobs', 'id')) ORDER BY n.ord),
           array_agg(n.node ->> 'id' ORDER BY n.ord)
      INTO v_ids, v_nodes
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord);
    IF v_ids IS NULL THEN
        RAISE EXCEPTION 'a DAG needs at least one node'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'dag_runs_nodes_present';
    END IF;

    INSERT INTO sluice.jobs (id, tenant, run_id, node, task, payload, queue, priority,
                             max_attempts, backoff, backoff_base, backoff_max, timeout)
    SELECT v_ids[n.ord], p_tenant, v_run, n.node ->> 'id', n.node ->> 'task',
           sluice.dag_render(coalesce(n.node -> 'payload', '{}'), p_params),
           coalesce(n.node ->> 'queue', 'default'),
           coalesce((n.node ->> 'priority')::integer, 0),
           coalesce((n.node ->> 'max_attempts')::integer, 5),
           coalesce(n.node ->> 'backoff', 'exponential'),
           make_interval(secs => coalesce((n.node ->> 'backoff_base')::double precision, 1)),
           make_interval(secs => coalesce((n.node ->> 'backoff_max')::double precision, 3600)),
           make_interval(secs => (n.node ->> 'timeout')::double precision)
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord);

    INSERT INTO sluice.job_edges (parent_id, child_id)
    SELECT parent.id, v_ids[n.ord]
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord)
     CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(n.node -> 'depends_on', '[]')) AS d(name)
      JOIN unnest(v_nodes, v_ids) AS parent(name, id) ON parent.name = d.name;
    RETURN v_run;
END
$$;

-- Start a run of the newest version of a stored DAG.
CREATE FUNCTION sluice.dag_run_start(
    p_tenant          text,
    p_dag_name        text,
    p_params          jsonb DEFAULT '{}',
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_schedule_id     bigint DEFAULT NULL
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
                                 p_notify, p_idempotency_key, p_schedule_id);
END
$$;
