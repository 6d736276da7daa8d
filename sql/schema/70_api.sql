-- What the REST API adds to the engine: request fingerprints behind idempotency
-- keys, the job resource as the API shows it, versioned DAG saves, and run
-- submission that tells a replay from a creation.

-- jobs.request_fingerprint and dag_runs.request_fingerprint (declared with their
-- tables) hold a digest of the API request that used an idempotency key: a
-- replay with the same body gets the original back; a different body under the
-- same key is refused (409) instead of silently answered with a job the client
-- did not ask for. Null for rows written by plain SQL, always treated as replays.

-- A job as the REST API returns it: intervals as seconds (JSON has no interval
-- type), engine bookkeeping (pending_parents, fingerprints) left out. The
-- retry policy as in force: a row's null is the default (sluice.backoff_delay).
CREATE VIEW sluice.api_jobs AS
SELECT j.id, j.tenant, j.queue, j.task, j.state, j.payload, j.priority,
       j.attempt, j.max_attempts, coalesce(j.backoff, 'exponential') AS backoff,
       extract(epoch FROM coalesce(j.backoff_base, '1 second'))::double precision AS backoff_base,
       extract(epoch FROM coalesce(j.backoff_max, '1 hour'))::double precision AS backoff_max,
       extract(epoch FROM j.timeout)::double precision AS timeout,
       j.run_at, j.created_at, j.started_at, j.finished_at,
       j.result, j.last_error, j.reason, j.run_id, j.node, j.idempotency_key,
       j.notify, j.progress, j.worker_id, j.lease_expires_at, j.map_index
  FROM sluice.jobs j;

-- A DAG run as the REST API returns it: the run and its node counts per state.
CREATE VIEW sluice.api_runs AS
SELECT p.run_id AS id, p.tenant, p.dag_name, p.dag_version, p.state, r.params, r.notify,
       r.idempotency_key, r.schedule_id, p.created_at, p.finished_at, p.nodes,
       p.blocked, p.scheduled, p.ready, p.running, p.waiting, p.succeeded, p.failed, p.cancelled,
       p.skipped, p.percent_done::double precision AS percent_done, p.elements, p.elements_done,
       r.reason, r.occurrence, r.started_at, r.deadline, r.concurrency_key,
       CASE WHEN r.state = 'queued'
            THEN (SELECT count(*) FROM sluice.dag_runs q
                   WHERE q.state = 'queued' AND q.tenant = r.tenant
                     AND coalesce(q.dag_name, '') = coalesce(r.dag_name, '')
                     AND q.concurrency_key = r.concurrency_key AND q.id < r.id)::integer END AS queue_position
  FROM sluice.dag_run_progress p
  JOIN sluice.dag_runs r ON r.id = p.run_id;

-- A run's nodes as the REST API shows them: what each waits for, the start of
-- its result (the whole one is at GET .../nodes/{node}/result), a mapped node's
-- elements per state. Map elements are not nodes of their own.
CREATE VIEW sluice.api_run_nodes AS
SELECT j.run_id, j.node AS id, j.id AS job_id, j.task, j.queue, j.state, j.attempt, j.max_attempts,
       j.started_at, j.finished_at, j.last_error, j.reason,
       coalesce(j.flow ->> 'trigger', 'all_success') AS trigger, j.flow ->> 'when' AS "when",
       CASE WHEN j.state <> 'waiting' THEN NULL
            WHEN j.pending_parents > 0 THEN 'map'
            WHEN j.flow #> '{wait,signal}' = 'true' THEN 'signal'
            ELSE 'duration' END AS waiting_for,
       CASE WHEN j.state = 'waiting' AND j.pending_parents = 0 AND j.run_at < sluice.never()
            THEN j.run_at END AS wakes_at,
       left(j.result::text, 200) AS result_preview,
       coalesce(length(j.result::text) > 200, false) AS result_truncated,
       m.counts AS map
  FROM sluice.jobs j
  LEFT JOIN LATERAL (
      SELECT jsonb_build_object(
                 'total', count(*),
                 'scheduled', count(*) FILTER (WHERE e.state = 'scheduled'),
                 'ready', count(*) FILTER (WHERE e.state = 'ready'),
                 'running', count(*) FILTER (WHERE e.state = 'running'),
                 'succeeded', count(*) FILTER (WHERE e.state = 'succeeded'),
                 'failed', count(*) FILTER (WHERE e.state = 'failed'),
                 'cancelled', count(*) FILTER (WHERE e.state = 'cancelled')) AS counts
        FROM sluice.jobs e
       WHERE e.group_id = j.id) m ON j.flow ? 'map'
 WHERE j.run_id IS NOT NULL AND j.map_index IS NULL;

-- Save a DAG definition as its next version, unless it equals the newest
-- version (saving the same file twice is not a change). Saves of one DAG take
-- turns on a transaction-level advisory lock, which, unlike a session lock,
-- works behind PgBouncer in transaction mode; the first save has no row to lock.
CREATE FUNCTION sluice.dag_save(p_tenant text, p_name text, p_definition jsonb, p_created_by text)
    RETURNS TABLE (version integer, created boolean)
    LANGUAGE plpgsql AS $$
DECLARE
    v_latest sluice.dags;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('sluice.dags:' || p_tenant || ':' || p_name, 0));
    SELECT * INTO v_latest
      FROM sluice.dags d
     WHERE d.tenant = p_tenant AND d.name = p_name
     ORDER BY d.version DESC
     LIMIT 1;
    IF FOUND AND v_latest.definition = p_definition THEN
        RETURN QUERY SELECT v_latest.version, false;
        RETURN;
    END IF;
    INSERT INTO sluice.dags (tenant, name, version, definition, created_by)
    VALUES (p_tenant, p_name, coalesce(v_latest.version, 0) + 1, p_definition, p_created_by);
    RETURN QUERY SELECT coalesce(v_latest.version, 0) + 1, true;
END
$$;

-- Start a run of a validated definition for the API: inline (no name), or a
-- stored DAG's version. Answers the run, whether this call created it, and the
-- fingerprint of the request that did: on a replay under an idempotency key
-- the caller compares it with its own.
CREATE FUNCTION sluice.dag_run_submit(
    p_tenant          text,
    p_definition      jsonb,
    p_params          jsonb DEFAULT '{}',
    p_dag_name        text DEFAULT NULL,
    p_dag_version     integer DEFAULT NULL,
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_fingerprint     text DEFAULT NULL
) RETURNS TABLE (run_id bigint, created boolean, request_fingerprint text)
    LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint;
    v_fp  text;
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        SELECT r.id, r.request_fingerprint INTO v_run, v_fp
          FROM sluice.dag_runs r
         WHERE r.tenant = p_tenant AND r.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN QUERY SELECT v_run, false, v_fp;
            RETURN;
        END IF;
    END IF;

    v_run := sluice.dag_run_create(p_tenant, p_definition, p_params, p_dag_name, p_dag_version,
                                   p_notify, p_idempotency_key);
    IF p_idempotency_key IS NULL THEN
        RETURN QUERY SELECT v_run, true, NULL::text;
        RETURN;
    END IF;

    -- A concurrent request with the same key may have won the race: dag_run_create
    -- then answered its run, whose fingerprint is already set (this UPDATE reads
    -- the latest committed row version), so it is left alone.
    UPDATE sluice.dag_runs r SET request_fingerprint = p_fingerprint
     WHERE r.id = v_run AND r.request_fingerprint IS NULL;
    IF FOUND THEN
        RETURN QUERY SELECT v_run, true, p_fingerprint;
    ELSE
        RETURN QUERY SELECT r.id, false, r.request_fingerprint FROM sluice.dag_runs r WHERE r.id = v_run;
    END IF;
END
$$;

-- The REST API's set-based submit (sql/queries/jobs.sql, job_submit_many),
-- inserted in input order; a row whose idempotency key the tenant already used
-- is left out (jobs_claim_key), and the caller pairs the answer up with the keys
-- of the rows left out. The jobs come as columns, not as one object per job:
-- p_each holds a JSON array per field, one value per job, and p_shared the
-- fields every job of the batch has alike (a batch's settings usually are), once.
-- A field is in one of the two, or in neither (null for every job). Why not an
-- array of objects through json_to_recordset, as before: that builds a hash
-- table for each object, and parsing it and the defaults a client repeats in
-- every object took a third of the statement's CPU (4.5 of 13 µs a job, where
-- COPY takes 8 in all); these columns cost under 1 µs a job besides the payload.
CREATE FUNCTION sluice.job_submit_rows(p_tenant text, p_each jsonb, p_shared jsonb)
    RETURNS TABLE (id bigint, idempotency_key text)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    -- Typed as the columns' domains: a shared name is checked once, not per row.
    v_tenant sluice.tenant_name := p_tenant;
    v record;
BEGIN
    SELECT * INTO v
      FROM jsonb_to_record(p_shared) AS s(
               task sluice.task_name, payload jsonb, queue sluice.queue_name, priority integer,
               run_at timestamptz, delay_seconds double precision, max_attempts integer,
               backoff text, backoff_base double precision, backoff_max double precision,
               timeout double precision, idempotency_key text, fingerprint text, notify jsonb);
    PERFORM set_config('sluice.keys_skip', 'on', true);
    -- ROWS FROM walks the arrays in step (an absent one gives nulls), and WITH
    -- ORDINALITY's order is known to the planner: ORDER BY costs no sort, and
    -- RETURNING answers rows as they are inserted, in input order. A JSON null
    -- in p_each is SQL's null, as in p_shared.
    RETURN QUERY
    INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at, max_attempts,
                                  backoff, backoff_base, backoff_max, timeout, idempotency_key,
                                  request_fingerprint, notify)
    SELECT v_tenant, coalesce(i.queue::sluice.queue_name, v.queue),
           coalesce(i.task::sluice.task_name, v.task), coalesce(nullif(i.payload, 'null'), v.payload),
           coalesce(i.priority::integer, v.priority),
           coalesce(i.run_at::timestamptz, v.run_at,
                    now() + make_interval(secs => coalesce(i.delay_seconds::double precision,
                                                           v.delay_seconds, 0))),
           coalesce(i.max_attempts::integer, v.max_attempts),
           -- The default retry policy is stored as null (13_jobs.sql): 44 bytes a row.
           nullif(coalesce(i.backoff, v.backoff), 'exponential'),
           nullif(make_interval(secs => coalesce(i.backoff_base::double precision, v.backoff_base)),
                  '1 second'),
           nullif(make_interval(secs => coalesce(i.backoff_max::double precision, v.backoff_max)),
                  '1 hour'),
           make_interval(secs => coalesce(i.timeout::double precision, v.timeout)),
           coalesce(i.idempotency_key, v.idempotency_key), coalesce(i.fingerprint, v.fingerprint),
           coalesce(nullif(i.notify, 'null'), v.notify)
      FROM ROWS FROM (jsonb_array_elements_text(p_each -> 'task'),
                      jsonb_array_elements(p_each -> 'payload'),
                      jsonb_array_elements_text(p_each -> 'queue'),
                      jsonb_array_elements_text(p_each -> 'priority'),
                      jsonb_array_elements_text(p_each -> 'run_at'),
                      jsonb_array_elements_text(p_each -> 'delay_seconds'),
                      jsonb_array_elements_text(p_each -> 'max_attempts'),
                      jsonb_array_elements_text(p_each -> 'backoff'),
                      jsonb_array_elements_text(p_each -> 'backoff_base'),
                      jsonb_array_elements_text(p_each -> 'backoff_max'),
                      jsonb_array_elements_text(p_each -> 'timeout'),
                      jsonb_array_elements_text(p_each -> 'idempotency_key'),
                      jsonb_array_elements_text(p_each -> 'fingerprint'),
                      jsonb_array_elements(p_each -> 'notify'))
           WITH ORDINALITY AS i(task, payload, queue, priority, run_at, delay_seconds, max_attempts,
                                backoff, backoff_base, backoff_max, timeout, idempotency_key,
                                fingerprint, notify, ord)
     ORDER BY i.ord
    RETURNING j.id, j.idempotency_key;
    PERFORM set_config('sluice.keys_skip', 'off', true);
END
$$;
