-- The public SQL interface: what applications and operators call from their own
-- transactions and from psql. Public names are verb first (`enqueue`,
-- `cancel_job`, `retry_dead`, as SPEC.md fixes them); the engine's functions
-- are named noun first after what they act on (`job_claim`, `dag_run_settle`)
-- and are internal: the worker and the API call them through the typed doors
-- in sluice.core, and they may change between releases.
--
-- Public functions defined elsewhere keep their place (enqueue, enqueue_many,
-- reserve_job_ids, cancel_job, retry_dead, pause_queue, resume_queue, signal); the others are
-- thin verb-first doors here onto the internal function that does the work.
-- The noun-first names docs and READMEs used before (dead_letter_discard,
-- queue_set_concurrency, dag_run_create, ...) still work; they are internal.
--
-- Last, every function in the schema is marked in the catalog (`\df+ sluice.*`
-- in psql shows it): "public: ..." on this list, "internal: ..." on the rest,
-- so the split is visible where operators look, and
-- tests/engine/test_public_sql.py checks it against docs/sql.md.

CREATE FUNCTION sluice.discard_dead(job_id bigint) RETURNS boolean
    LANGUAGE sql
RETURN sluice.dead_letter_discard(job_id);

CREATE FUNCTION sluice.set_queue_concurrency(name text, "limit" integer) RETURNS void
    LANGUAGE sql
RETURN sluice.queue_set_concurrency(name, "limit");

CREATE FUNCTION sluice.pause_worker(worker_id text) RETURNS boolean
    LANGUAGE sql
RETURN sluice.worker_set_paused(worker_id, true);

CREATE FUNCTION sluice.resume_worker(worker_id text) RETURNS boolean
    LANGUAGE sql
RETURN sluice.worker_set_paused(worker_id, false);

CREATE FUNCTION sluice.create_run(
    definition      jsonb,
    params          jsonb DEFAULT '{}',
    tenant          text DEFAULT 'default',
    idempotency_key text DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql
RETURN sluice.dag_run_create(tenant, definition, params, p_idempotency_key => idempotency_key);

CREATE FUNCTION sluice.start_run(
    dag             text,
    params          jsonb DEFAULT '{}',
    tenant          text DEFAULT 'default',
    idempotency_key text DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql
RETURN sluice.dag_run_start(tenant, dag, params, p_idempotency_key => idempotency_key);

CREATE FUNCTION sluice.cancel_run(run_id bigint) RETURNS integer
    LANGUAGE sql
RETURN sluice.dag_run_cancel(run_id);

CREATE FUNCTION sluice.retry_run(run_id bigint) RETURNS integer
    LANGUAGE sql
RETURN sluice.dag_run_retry(run_id);

CREATE FUNCTION sluice.rerun_from(run_id bigint, node text) RETURNS integer
    LANGUAGE sql
RETURN sluice.dag_run_rerun(run_id, node);

CREATE FUNCTION sluice.await_job(job_id bigint)
    RETURNS TABLE (id bigint, state sluice.job_state, result jsonb, last_error text, reason text)
    LANGUAGE sql
BEGIN ATOMIC
    SELECT * FROM sluice.job_await(job_id);
END;

CREATE FUNCTION sluice.await_run(run_id bigint)
    RETURNS TABLE (id bigint, state sluice.run_state)
    LANGUAGE sql
BEGIN ATOMIC
    SELECT * FROM sluice.run_await(run_id);
END;

CREATE FUNCTION sluice.prune_jobs(retention interval, "limit" integer DEFAULT 1000) RETURNS integer
    LANGUAGE sql
RETURN sluice.job_prune(retention, "limit");

DO $$
DECLARE
    v_public CONSTANT jsonb := jsonb_build_object(
        'enqueue', 'a job, in the caller''s transaction; its id',
        'enqueue_many', 'a JSON list of jobs in one statement; their ids, in order',
        'reserve_job_ids', 'n ids for jobs the caller is about to COPY in with their id given',
        'cancel_job', 'cancel a pending or running job (its worker is told to stop it)',
        'retry_dead', 'retry a dead-lettered job with a fresh round of attempts',
        'discard_dead', 'resolve a dead-letter entry without retrying',
        'pause_queue', 'stop claiming from a queue, on every worker',
        'resume_queue', 'claim from a paused queue again',
        'set_queue_concurrency', 'at most n jobs of a queue run at once (null: no limit)',
        'pause_worker', 'one worker stops claiming',
        'resume_worker', 'a paused worker claims again',
        'create_run', 'a DAG run from a definition given inline; its id',
        'start_run', 'a run of the newest version of a stored DAG; its id',
        'cancel_run', 'cancel a run and what is left of it',
        'retry_run', 'retry the failed nodes of a run',
        'rerun_from', 'run a node and its descendants again; the rest keep their results',
        'signal', 'complete a node waiting for a signal, the payload as its result',
        'await_job', 'the job now; if it has not ended, its end will be notified',
        'await_run', 'the run now; if it has not ended, its end will be notified',
        'prune_jobs', 'delete finished jobs older than the retention (maintenance does it)');
    v_fn record;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure AS signature, p.proname
          FROM pg_proc p
         WHERE p.pronamespace = 'sluice'::regnamespace AND p.prokind = 'f'
    LOOP
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_fn.signature,
                       CASE WHEN v_public ? v_fn.proname
                            THEN 'public: ' || (v_public ->> v_fn.proname)
                            ELSE 'internal: called by Sluice itself; may change in any release' END);
    END LOOP;
END
$$;
