-- Runtime queries on the worker registry and the maintenance leader lease.

-- name: worker_register :exec
SELECT sluice.worker_register(
    %(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(heartbeat_interval)s, %(version)s,
    %(tasks)s);

-- name: worker_heartbeat :scalar
SELECT sluice.worker_heartbeat(%(id)s);

-- name: worker_stop :exec
SELECT sluice.worker_stop(%(id)s);

-- name: worker_set_paused :scalar
SELECT sluice.worker_set_paused(%(id)s, %(paused)s);

-- name: worker_prune :scalar
SELECT sluice.worker_prune(%(age)s);

-- name: leader_acquire :scalar
SELECT sluice.leader_acquire(%(name)s, %(holder)s, %(ttl)s);

-- name: leader_release :exec
SELECT sluice.leader_release(%(name)s, %(holder)s);

-- name: worker_listen :exec
SELECT sluice.worker_listen();

-- API

-- name: worker_list :many
SELECT w.worker_id, w.hostname, w.pid, w.queues, w.concurrency, w.paused, w.started_at,
       w.heartbeat_at, w.stopped_at, w.running, w.alive
  FROM sluice.worker_status w
 ORDER BY w.alive DESC, w.worker_id
 LIMIT %(limit)s;

-- name: workers_alive :scalar
SELECT count(*) FROM sluice.worker_status WHERE alive;

-- name: worker_get :one
SELECT w.worker_id, w.hostname, w.pid, w.queues, w.concurrency, w.paused, w.started_at,
       w.heartbeat_at, w.stopped_at, w.running, w.alive
  FROM sluice.worker_status w
 WHERE w.worker_id = %(id)s;

-- The claimer's idle protocol (sluice.notify_ready in 30_jobs_triggers.sql).
-- name: worker_waiting :exec
SELECT sluice.worker_waiting(%(id)s, %(queues)s);

-- name: worker_wait_barrier :scalar
SELECT sluice.worker_wait_barrier(%(queues)s);

-- name: worker_busy :exec
SELECT sluice.worker_busy(%(id)s);
