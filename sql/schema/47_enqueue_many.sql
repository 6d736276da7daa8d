-- Enqueue many jobs in one statement: sluice.enqueue for a list. The Python
-- API's enqueue_many (sluice.core.enqueueing) calls it; any client can.
--
-- `jobs` is one JSON array (one parameter, read by jsonb_to_recordset: a batch
-- of 10,000 is one round trip and no per-row work in the client), each
-- element an object with sluice.enqueue's argument names:
--   {"task": "...", "payload": {...}, "queue": "...", "priority": 0,
--    "run_at": "...", "delay": 1.5, "max_attempts": 5, "depends_on": [ids],
--    "idempotency_key": "...", "timeout": 30, "backoff": "exponential",
--    "backoff_base": 1, "backoff_max": 3600, "notify": {...}}
-- where `delay`, `timeout`, `backoff_base` and `backoff_max` are seconds.
-- `task` is required; a missing field gets what sluice.enqueue gives it (the
-- column defaults of sluice.jobs). Returns one id per element, in order; an
-- element whose idempotency key the tenant already used (or an earlier element
-- of the same list used) answers the existing job's id and creates nothing,
-- edges included, as sluice.enqueue does.
-- The rows sluice.enqueue_many inserts, in input order: each element with the
-- defaults sluice.enqueue gives what it leaves out, stored as sluice.enqueue_row
-- stores them. Plain SQL functions, so the planner inlines both into the
-- INSERTs below.
CREATE FUNCTION sluice.enqueue_rows(jobs jsonb, tenant text)
    RETURNS TABLE (tenant text, queue text, task text, payload jsonb, priority integer,
                   run_at timestamptz, max_attempts integer, idempotency_key text,
                   timeout interval, backoff text, backoff_base interval, backoff_max interval,
                   notify jsonb)
    LANGUAGE sql STABLE AS $$
    SELECT r.*
      FROM ROWS FROM (jsonb_to_recordset(jobs) AS (
               task text, payload jsonb, queue text, priority integer, run_at timestamptz,
               delay double precision, max_attempts integer, idempotency_key text,
               timeout double precision, backoff text, backoff_base double precision,
               backoff_max double precision, notify jsonb))
           WITH ORDINALITY AS i(task, payload, queue, priority, run_at, delay, max_attempts,
                                idempotency_key, timeout, backoff, backoff_base, backoff_max,
                                notify, ord)
     CROSS JOIN LATERAL sluice.enqueue_row(
               enqueue_rows.tenant, coalesce(i.queue, 'default'), i.task, coalesce(i.payload, '{}'),
               coalesce(i.priority, 0), coalesce(i.run_at, now() + make_interval(secs => i.delay)),
               coalesce(i.max_attempts, 5), i.idempotency_key, make_interval(secs => i.timeout),
               i.backoff, make_interval(secs => i.backoff_base), make_interval(secs => i.backoff_max),
               i.notify) AS r
     ORDER BY i.ord;
$$;

CREATE FUNCTION sluice.enqueue_many(jobs jsonb, tenant text DEFAULT 'default')
    RETURNS bigint[]
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_new     bigint[];   -- the jobs inserted, in input order
    v_keys    text[];     -- their idempotency keys
    v_ids     bigint[] := '{}';
    v_created boolean[] := '{}';
    v_next    integer := 1;
    v_element record;
BEGIN
    -- The rows come sorted by position and the identity default draws each id as
    -- its row is inserted, so ids grow with the position: sorting the inserted
    -- rows by id puts them back in input order, whatever order RETURNING uses.
    -- (jsonb_to_recordset rather than json_: parsing the list once as jsonb
    -- costs less than finding 14 fields in each element's text.) Without keys,
    -- the INSERT has no ON CONFLICT: a speculative insertion per row costs 6%.
    IF jsonb_path_exists(jobs, '$[*].idempotency_key ? (@ != null)') THEN
        -- Rows whose key the tenant already used are left out (jobs_claim_key).
        PERFORM set_config('sluice.keys_skip', 'on', true);
        WITH inserted AS (
            INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at,
                                          max_attempts, idempotency_key, timeout, backoff,
                                          backoff_base, backoff_max, notify)
            SELECT * FROM sluice.enqueue_rows(jobs, enqueue_many.tenant)
            RETURNING j.id, j.idempotency_key
        )
        SELECT array_agg(x.id ORDER BY x.id), array_agg(x.idempotency_key ORDER BY x.id)
          INTO v_new, v_keys
          FROM inserted x;
        PERFORM set_config('sluice.keys_skip', 'off', true);
    ELSE
        WITH inserted AS (
            INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at,
                                          max_attempts, idempotency_key, timeout, backoff,
                                          backoff_base, backoff_max, notify)
            SELECT * FROM sluice.enqueue_rows(jobs, enqueue_many.tenant)
            RETURNING j.id
        )
        SELECT array_agg(x.id ORDER BY x.id) INTO v_new FROM inserted x;
    END IF;

    IF coalesce(cardinality(v_new), 0) = jsonb_array_length(jobs) THEN
        -- Nothing skipped (the common case): every element made its job.
        v_ids := v_new;
    ELSE
        -- Some keys were taken. Inserted rows come in the order of the elements
        -- that made them, so walk both: an element made the next inserted row if
        -- their keys agree, else it was skipped and answers the job holding its
        -- key, read by a new statement, whose snapshot sees the keys whose insert
        -- waited for another transaction to commit, and those inserted above (a
        -- key repeated in the list made one job, which each element with it answers).
        FOR v_element IN
            SELECT i.idempotency_key AS key
              FROM ROWS FROM (jsonb_to_recordset(jobs) AS (idempotency_key text))
                   WITH ORDINALITY AS i(idempotency_key, ord)
             ORDER BY i.ord
        LOOP
            IF v_next <= coalesce(cardinality(v_new), 0)
               AND v_keys[v_next] IS NOT DISTINCT FROM v_element.key THEN
                v_ids := v_ids || v_new[v_next];
                v_created := v_created || true;
                v_next := v_next + 1;
            ELSE
                v_ids := v_ids || (SELECT k.job_id FROM sluice.job_keys k
                                    WHERE k.tenant = enqueue_many.tenant
                                      AND k.idempotency_key = v_element.key);
                v_created := v_created || false;
            END IF;
        END LOOP;
    END IF;

    -- Only the jobs created here get their parents, as with sluice.enqueue; the
    -- edge trigger blocks them, and refuses cycles and parents that failed.
    IF jsonb_path_exists(jobs, '$[*].depends_on[*]') THEN
        INSERT INTO sluice.job_edges (parent_id, child_id)
        SELECT DISTINCT p.id, v_ids[i.ord]
          FROM ROWS FROM (jsonb_to_recordset(jobs) AS (depends_on bigint[]))
               WITH ORDINALITY AS i(depends_on, ord)
         CROSS JOIN LATERAL unnest(i.depends_on) AS p(id)
         WHERE v_created = '{}' OR v_created[i.ord];
    END IF;
    RETURN coalesce(v_ids, '{}');
END
$$;

-- Ids for n jobs a client is about to COPY into sluice.jobs with their `id`
-- column given: COPY is the cheapest way in (no expression per row, no
-- RETURNING to collect), but cannot say which ids the identity gave. The
-- Python API's enqueue_many reserves them here, then copies its rows with them,
-- in the same transaction (sluice.core.enqueueing). The ids come from the
-- column's own sequence, so they never collide with the identity's, and grow
-- in the order they are handed out.
CREATE FUNCTION sluice.reserve_job_ids(n integer) RETURNS bigint[]
    LANGUAGE sql
RETURN ARRAY(SELECT nextval('sluice.jobs_id_seq') FROM generate_series(1, n));
