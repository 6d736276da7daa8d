-- The Python API (sluice.core.enqueueing): enqueue in the caller's transaction,
-- through the same engine functions any SQL client calls.

-- One job: sluice.enqueue, every argument given (the defaults are filled in by
-- Python from sluice.core.jobs, which tests/api/test_declarations.py pairs with
-- the catalog). A null run_at and delay mean now. The Python API calls it for a
-- job with an idempotency key or parents; job_insert for the others.
-- name: job_enqueue :scalar
SELECT sluice.enqueue(
    task => %(task)s, payload => %(payload)s::jsonb, queue => %(queue)s,
    priority => %(priority)s,
    run_at => coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
    max_attempts => %(max_attempts)s, depends_on => %(depends_on)s::bigint[],
    idempotency_key => %(idempotency_key)s, timeout => make_interval(secs => %(timeout)s::float8),
    tenant => %(tenant)s, backoff => %(backoff)s,
    backoff_base => make_interval(secs => %(backoff_base)s::float8),
    backoff_max => make_interval(secs => %(backoff_max)s::float8), notify => %(notify)s::jsonb);

-- One job without an idempotency key or parents, the Python API's common case:
-- the INSERT sluice.enqueue makes for it (41_job_admin.sql), the row from
-- sluice.enqueue_row, without the PL/pgSQL call and its 14 parameters around it.
-- The Python API writes the arguments a task's jobs share into the statement as
-- literals, once per task and options (sluice.core.enqueueing.bound_insert): a
-- call sends its payload (and run_at and delay, when its options give one), and
-- the server folds the rest when it plans, once per connection. The same
-- triggers fire as for any insert.
-- name: job_insert :scalar
INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at, max_attempts,
                              idempotency_key, timeout, backoff, backoff_base, backoff_max,
                              notify)
SELECT * FROM sluice.enqueue_row(
    %(tenant)s::text, %(queue)s::text, %(task)s::text, %(payload)s::jsonb, %(priority)s::integer,
    coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
    %(max_attempts)s::integer, NULL, make_interval(secs => %(timeout)s::float8),
    %(backoff)s::text, make_interval(secs => %(backoff_base)s::float8),
    make_interval(secs => %(backoff_max)s::float8), %(notify)s::jsonb)
RETURNING j.id;

-- Many jobs in one statement (sluice.enqueue_many): their ids, in order. The
-- Python API's enqueue_many takes this path for items with an idempotency key,
-- parents or a delay, or options of their own; job_copy for the others.
-- name: job_enqueue_many :scalar
SELECT sluice.enqueue_many(%(jobs)s::jsonb, %(tenant)s);

-- Ids for the jobs job_copy is about to write (sluice.reserve_job_ids).
-- name: job_ids_reserve :scalar
SELECT sluice.reserve_job_ids(%(n)s);

-- Many jobs of one task with the same options, the cheapest way in: COPY, with
-- the ids job_ids_reserve handed out in the same transaction. `{columns}` is the
-- options the jobs set, from a fixed list (sluice.core.enqueueing); a column
-- left out gets its default from the table, which is what sluice.enqueue gives
-- (tests/python_api/test_enqueue.py compares the rows of both paths). The
-- triggers fire as for any insert: jobs_before_insert, the wake-up.
-- name: job_copy :copy
COPY sluice.jobs (id, task, payload{columns}) FROM STDIN;

-- A run of the newest version of a stored DAG, with its parameters.
-- name: dag_run_start_named :scalar
SELECT sluice.dag_run_start(
    p_tenant => %(tenant)s, p_dag_name => %(dag)s, p_params => %(params)s::jsonb,
    p_notify => %(notify)s::jsonb, p_idempotency_key => %(idempotency_key)s);
