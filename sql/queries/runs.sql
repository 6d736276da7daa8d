-- Runtime queries on DAG runs for the API (creation and state changes are the
-- engine functions of sql/schema/33_dag_runs.sql and 41_job_admin.sql).

-- name: dag_run_submit :one
SELECT * FROM sluice.dag_run_submit(
    %(tenant)s, %(definition)s, %(params)s, %(dag_name)s, %(dag_version)s, %(notify)s,
    %(idempotency_key)s, %(fingerprint)s);

-- A run with its node counts per state.
-- name: dag_run_get :one
SELECT *
  FROM sluice.api_runs r
 WHERE r.id = %(id)s
   AND (%(tenant)s::text IS NULL OR r.tenant = %(tenant)s);

-- Runs newest first, keyset-paginated on id.
-- name: dag_run_list :many
SELECT *
  FROM sluice.api_runs r
 WHERE (%(tenant)s::text IS NULL OR r.tenant = %(tenant)s)
   AND (%(state)s::sluice.run_state IS NULL OR r.state = %(state)s::sluice.run_state)
   AND (%(dag_name)s::text IS NULL OR r.dag_name = %(dag_name)s)
   AND (%(before_id)s::bigint IS NULL OR r.id < %(before_id)s)
 ORDER BY r.id DESC
 LIMIT %(limit)s;

-- Every node of a run, in creation (topological) order, with what it waits for,
-- the start of its result, and a mapped node's elements per state (its
-- elements are not nodes of their own).
-- name: dag_run_nodes :many
SELECT n.id, n.job_id, n.task, n.queue, n.state, n.attempt, n.max_attempts, n.started_at,
       n.finished_at, n.last_error, n.reason, n.trigger, n."when", n.waiting_for, n.wakes_at,
       n.result_preview, n.result_truncated, n.map
  FROM sluice.api_run_nodes n
 WHERE n.run_id = %(id)s
 ORDER BY n.job_id;

-- name: dag_run_node :one
SELECT n.id, n.job_id, n.task, n.queue, n.state, n.attempt, n.max_attempts, n.started_at,
       n.finished_at, n.last_error, n.reason, n.trigger, n."when", n.waiting_for, n.wakes_at,
       n.result_preview, n.result_truncated, n.map
  FROM sluice.api_run_nodes n
 WHERE n.run_id = %(id)s AND n.id = %(node)s;

-- A node's whole result, through the one view results are read from.
-- name: dag_run_node_result :one
SELECT r.node AS id, r.job_id, r.state, r.result
  FROM sluice.node_results r
 WHERE r.run_id = %(id)s AND r.node = %(node)s AND r.map_index IS NULL;

-- name: dag_run_signal :scalar
SELECT sluice.signal(%(id)s, %(node)s, %(payload)s);

-- name: dag_run_rerun :scalar
SELECT sluice.dag_run_rerun(%(id)s, %(node)s);

-- name: dag_run_backfill :many
SELECT * FROM sluice.dag_run_backfill(%(schedule_id)s, %(occurrences)s::timestamptz[], %(params)s);

-- The run's edges as node ids (parent -> child), ready for drawing.
-- name: dag_run_edges :many
SELECT p.node AS parent, c.node AS child
  FROM sluice.jobs c
  JOIN sluice.job_edges e ON e.child_id = c.id
  JOIN sluice.jobs p ON p.id = e.parent_id
 WHERE c.run_id = %(id)s
 ORDER BY e.parent_id, e.child_id;

-- name: dag_run_cancel :scalar
SELECT sluice.dag_run_cancel(%(id)s);

-- name: dag_run_retry :scalar
SELECT sluice.dag_run_retry(%(id)s);
