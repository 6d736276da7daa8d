-- Runtime queries on queues for the API (the admin functions live in
-- sql/schema/42_queues.sql).

-- Jobs per queue and state. With a tenant, only that tenant's jobs are counted
-- (queue settings are shared by every tenant); queues with settings but no
-- jobs are listed too.
-- name: queue_list :many
WITH counts AS (
    SELECT j.queue,
           count(*) FILTER (WHERE j.state = 'blocked')   AS blocked,
           count(*) FILTER (WHERE j.state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE j.state = 'ready')     AS ready,
           count(*) FILTER (WHERE j.state = 'running')   AS running,
           count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE j.state = 'failed')    AS failed,
           count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled,
           min(j.run_at) FILTER (WHERE j.state = 'ready') AS oldest_ready_at
      FROM sluice.jobs j
     WHERE %(tenant)s::text IS NULL OR j.tenant = %(tenant)s
     GROUP BY j.queue
)
SELECT coalesce(c.queue, q.name) AS name,
       coalesce(c.blocked, 0) AS blocked, coalesce(c.scheduled, 0) AS scheduled,
       coalesce(c.ready, 0) AS ready, coalesce(c.running, 0) AS running,
       coalesce(c.succeeded, 0) AS succeeded, coalesce(c.failed, 0) AS failed,
       coalesce(c.cancelled, 0) AS cancelled,
       coalesce(extract(epoch FROM greatest(now() - c.oldest_ready_at, '0'))::double precision, 0)
           AS oldest_ready_seconds,
       coalesce(q.paused, false) AS paused, q.concurrency_limit
  FROM counts c
  FULL JOIN sluice.queues q ON q.name = c.queue
 WHERE %(name)s::text IS NULL OR coalesce(c.queue, q.name) = %(name)s
 ORDER BY 1;

-- name: queue_pause :exec
SELECT sluice.pause_queue(%(name)s);

-- name: queue_resume :exec
SELECT sluice.resume_queue(%(name)s);

-- name: queue_set_concurrency :exec
SELECT sluice.queue_set_concurrency(%(name)s, %(limit)s);

-- Every queue's depth per state, for the metrics scrape (all tenants).
-- name: queue_depths :many
SELECT s.queue, s.blocked, s.scheduled, s.ready, s.running, s.succeeded, s.failed, s.cancelled
  FROM sluice.queue_stats s;
