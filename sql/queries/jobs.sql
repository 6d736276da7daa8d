-- Runtime queries on jobs. Each calls an engine function from sql/schema/; the
-- logic lives there, this file only names the calls for app/ and worker/.

-- Without synchronous replicas a claim does not wait for its WAL to reach the
-- disk: should the server crash before the flush, the claim is undone and the
-- job is ready again, to be claimed anew (delivery is at-least-once); the
-- completion, which does wait, makes the claim durable with it. This takes a
-- disk flush off the path from NOTIFY to the handler starting.
--
-- With synchronous replicas (synchronous_standby_names set, as Patroni's
-- synchronous_mode and pg_auto_failover do it) a claim waits until a standby
-- has written it (remote_write): a claim lost with a killed primary would let
-- the promoted standby hand the job out again, with the same attempt, while
-- the first run goes on, and the job would run twice because of a failover.
-- Measured locally with a synchronous standby: +3.4 ms per claim of one job
-- (0.34 -> 3.7 ms median), a quarter fewer jobs/s in a drain (docs/scaling.md).
--
-- The worker calls job_claim_once, not job_claim: one PL/pgSQL frame and no
-- subtransaction. A claim that meets a row moved to history (40001, see
-- sluice.job_claim) fails whole, nothing claimed, and its door
-- (protocol.job_claim) runs it again at once, which is what job_claim's
-- subtransaction does in the database. The subtransaction and the second frame were a fifth of a
-- one-job claim's backend CPU (460 -> 373 us, alternated runs), on the path from
-- an INSERT to its handler starting (issue 15).
-- name: job_claim :many
SELECT c.*
  FROM set_config('synchronous_commit',
                  CASE current_setting('synchronous_standby_names')
                       WHEN '' THEN 'off' ELSE 'remote_write' END,
                  true) AS s,
       sluice.job_claim_once(%(worker_id)s, %(queues)s, %(limit)s, %(lease)s,
                             %(after_priority)s, %(after_run_at)s, %(after_id)s,
                             %(tasks)s) AS c;

-- The parents' results of claimed nodes whose claim left them out (together over
-- sluice.inline_parents_bytes, the claim answers {"_omitted": true}): one query
-- per claim batch, outside the claim's transaction (a parent's result no longer
-- changes once its child may run).
-- name: job_parent_results :many
SELECT j.id, sluice.job_parent_results(j.id) AS parents
  FROM unnest(%(ids)s::bigint[]) AS j(id);

-- name: job_heartbeat :many
SELECT h.id, h.attempt
  FROM sluice.job_heartbeat(%(worker_id)s, %(ids)s, %(attempts)s, %(lease)s) AS h;

-- name: job_progress :scalar
SELECT sluice.job_progress(%(worker_id)s, %(id)s, %(attempt)s, %(progress)s);

-- name: job_complete_many :many
SELECT id FROM sluice.job_complete_many(
    %(worker_id)s, %(ids)s, %(attempts)s, %(results)s::jsonb[], %(outputs)s::text[]) AS id;

-- Only what the worker reads back: a run_at it cannot decode (a BC date, say)
-- would otherwise fail the whole batch after it committed.
-- name: job_fail_many :many
SELECT f.id, f.state FROM sluice.job_fail_many(
    %(worker_id)s, %(ids)s, %(attempts)s, %(errors)s, %(retryable)s, %(outcomes)s::text[],
    %(outputs)s::text[]) AS f;

-- name: job_release_many :many
SELECT id FROM sluice.job_release_many(%(worker_id)s, %(ids)s, %(attempts)s) AS id;

-- The jobs the database says this worker runs (to find claims whose answer it
-- never got).
-- name: worker_running_jobs :many
SELECT id, attempt FROM sluice.jobs
 WHERE worker_id = %(worker_id)s AND state = 'running' AND archived_at IS NULL;

-- name: job_release_unanswered :many
SELECT id FROM sluice.job_release_many(
    %(worker_id)s, %(ids)s, %(attempts)s,
    p_error => 'handed back: the claim committed but its answer never reached the worker '
               '(the connection failed)') AS id;

-- name: job_rescue_expired :many
SELECT r.id, r.state FROM sluice.job_rescue_expired(%(limit)s) AS r;

-- name: job_promote_scheduled :scalar
SELECT sluice.job_promote_scheduled(%(limit)s);

-- name: job_prune :scalar
SELECT sluice.job_prune(%(retention)s, %(limit)s);

-- name: job_cancel :many
SELECT id FROM sluice.job_cancel(%(ids)s, %(reason)s) AS id;

-- name: job_retry :many
SELECT id FROM sluice.job_retry(%(ids)s) AS id;

-- API

-- Submit jobs set-based for the REST API: the whole list arrives as two JSON
-- parameters (the fields that vary by job as one array each, and those every
-- job shares once: sluice.job_submit_rows), so a batch of thousands is one
-- statement and one round trip. As fast as COPY into sluice.jobs, and unlike
-- COPY it can skip idempotency keys already used. Rows come back in input
-- order, skipped ones left out, and the caller pairs them up using the
-- idempotency keys of the skipped rows.
-- name: job_submit_many :many
SELECT s.id, s.idempotency_key
  FROM sluice.job_submit_rows(%(tenant)s, %(each)s::jsonb, %(shared)s::jsonb) AS s;

-- Edges from existing parents to new jobs (parallel arrays). The edge trigger
-- blocks the children, and refuses cycles and parents that already failed.
-- name: job_edges_add :exec
INSERT INTO sluice.job_edges (parent_id, child_id)
SELECT DISTINCT e.parent_id, e.child_id
  FROM unnest(%(parents)s::bigint[], %(children)s::bigint[]) AS e(parent_id, child_id);

-- The jobs holding a tenant's idempotency keys (after job_submit_many skipped them).
-- name: job_by_idempotency_keys :many
SELECT j.id, j.idempotency_key, j.request_fingerprint
  FROM sluice.job_keys k
  JOIN sluice.jobs j ON j.id = k.job_id
 WHERE k.tenant = %(tenant)s AND k.idempotency_key = ANY(%(keys)s::text[]);

-- Which of these job ids exist and are visible to the tenant (null: any tenant).
-- name: job_ids_visible :many
SELECT j.id
  FROM sluice.jobs j
 WHERE j.id = ANY(%(ids)s::bigint[])
   AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s);

-- name: job_get :one
SELECT *
  FROM sluice.api_jobs j
 WHERE j.id = %(id)s
   AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s);

-- Newest first, keyset-paginated on id (the primary key index, scanned backwards).
-- name: job_list :many
SELECT *
  FROM sluice.api_jobs j
 WHERE (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s)
   AND (%(states)s::sluice.job_state[] IS NULL OR j.state = ANY(%(states)s::sluice.job_state[]))
   AND (%(queue)s::text IS NULL OR j.queue = %(queue)s)
   AND (%(task)s::text IS NULL OR j.task = %(task)s)
   AND (%(run_id)s::bigint IS NULL OR j.run_id = %(run_id)s)
   AND (%(created_after)s::timestamptz IS NULL OR j.created_at >= %(created_after)s)
   AND (%(created_before)s::timestamptz IS NULL OR j.created_at < %(created_before)s)
   AND (%(before_id)s::bigint IS NULL OR j.id < %(before_id)s)
 ORDER BY j.id DESC
 LIMIT %(limit)s;

-- The execution log of one job, oldest attempt first.
-- name: job_attempts :many
SELECT a.attempt, a.worker_id, a.started_at, a.finished_at, a.outcome, a.error, a.output
  FROM sluice.job_attempts a
 WHERE a.job_id = %(id)s
 ORDER BY a.attempt;

-- name: job_parent_ids :scalar
SELECT coalesce(array_agg(e.parent_id ORDER BY e.parent_id), '{}')
  FROM sluice.job_edges e
 WHERE e.child_id = %(id)s;

-- Jobs that finished in each of the last `minutes` minutes, by outcome, with
-- the empty minutes as zeros (what the dashboard charts). Like the
-- sluice.throughput view, but for one tenant (null: all) and one queue (null:
-- all). The archived_at bound spares the history partitions older than the
-- first minute (jobs_archived_after_finish: a job is archived when it finished
-- or later); in the rest, the BRIN on finished_at reads the pages of those
-- minutes, and in the live partition the jobs_finished btree its failed jobs.
-- name: job_throughput :many
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1),
                           date_trunc('minute', now()), interval '1 minute') AS minute
), finished AS (
    SELECT date_trunc('minute', j.finished_at) AS minute,
           count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE j.state = 'failed') AS failed,
           count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled
      FROM sluice.jobs j
     WHERE j.state IN ('succeeded', 'failed', 'cancelled')
       AND j.finished_at >= (SELECT min(m.minute) FROM minutes m)
       AND (j.archived_at IS NULL OR j.archived_at >= (SELECT min(m.minute) FROM minutes m))
       AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s)
       AND (%(queue)s::text IS NULL OR j.queue = %(queue)s)
     GROUP BY 1
)
SELECT m.minute, coalesce(f.succeeded, 0) AS succeeded, coalesce(f.failed, 0) AS failed,
       coalesce(f.cancelled, 0) AS cancelled
  FROM minutes m
  LEFT JOIN finished f ON f.minute = m.minute
 ORDER BY m.minute;

-- How long jobs waited before a worker took them, per queue and over all queues
-- (the row whose queue is null), for jobs that started in the last `minutes`:
-- percentiles of started_at minus the moment the job could first run. That is
-- run_at (enqueue, delay, or retry backoff), or for a DAG child the moment its
-- last parent finished, since its run_at is when it was created, blocked.
-- Finished jobs are the newest `sample` (sluice.job_wait_sample: bounded cost
-- at any throughput); running jobs are few.
-- name: job_wait_times :many
WITH started AS (
    SELECT f.id, f.queue, f.run_at, f.started_at
      FROM sluice.job_wait_sample(%(minutes)s, %(sample)s, %(tenant)s, %(queue)s) AS f
    UNION ALL
    SELECT j.id, j.queue, j.run_at, j.started_at
      FROM sluice.jobs j
     WHERE j.state = 'running' AND j.archived_at IS NULL
       AND j.started_at >= now() - make_interval(mins => %(minutes)s)
       AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s)
       AND (%(queue)s::text IS NULL OR j.queue = %(queue)s)
), released AS (
    -- One join for the whole sample rather than a probe per job: most jobs have
    -- no parents, and a per-job subquery makes the planner expect (and JIT-compile
    -- for) far more work than there is.
    SELECT e.child_id, max(parent.finished_at) AS released_at
      FROM started s
      JOIN sluice.job_edges e ON e.child_id = s.id
      JOIN sluice.jobs parent ON parent.id = e.parent_id
     GROUP BY e.child_id
), waits AS (
    SELECT s.queue,
           greatest(extract(epoch FROM s.started_at - greatest(s.run_at, r.released_at)),
                    0)::double precision AS wait
      FROM started s
      LEFT JOIN released r ON r.child_id = s.id
)
SELECT w.queue,
       count(*) AS jobs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY w.wait) AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY w.wait) AS p90,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY w.wait) AS p99,
       max(w.wait) AS max
  FROM waits w
 GROUP BY GROUPING SETS ((w.queue), ())
 ORDER BY w.queue NULLS FIRST;
