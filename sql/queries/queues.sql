-- Runtime queries on queues for the API (the admin functions live in
-- sql/schema/42_queues.sql).

-- Jobs per queue and state (as a JSON object), the oldest ready job's wait, and
-- the queue's settings. With a tenant, only that tenant's jobs are counted
-- (queue settings are shared by every tenant); queues with settings but no jobs
-- are listed too.
-- name: queue_list :many
WITH counts AS (
    SELECT j.queue, j.state, count(*) AS n, min(j.run_at) AS oldest
      FROM sluice.jobs j
     WHERE (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s)
       AND (%(name)s::text IS NULL OR j.queue = %(name)s)
     GROUP BY j.queue, j.state
)
SELECT coalesce(c.queue, q.name) AS name,
       coalesce(jsonb_object_agg(c.state, c.n) FILTER (WHERE c.state IS NOT NULL), '{}') AS counts,
       -- A run_at SQL stored as -infinity reads as year 1 rather than failing the list.
       coalesce(extract(epoch FROM greatest(
                    now() - greatest(min(c.oldest) FILTER (WHERE c.state = 'ready'),
                                     timestamptz '0001-01-01 00:00:00+00'),
                    '0'))::double precision, 0) AS oldest_ready_seconds,
       coalesce(bool_or(q.paused), false) AS paused,
       max(q.concurrency_limit) AS concurrency_limit
  FROM counts c
  FULL JOIN sluice.queues q ON q.name = c.queue
 WHERE %(name)s::text IS NULL OR coalesce(c.queue, q.name) = %(name)s
 GROUP BY coalesce(c.queue, q.name)
 ORDER BY 1;

-- name: queue_pause :exec
SELECT sluice.pause_queue(%(name)s);

-- name: queue_resume :exec
SELECT sluice.resume_queue(%(name)s);

-- name: queue_set_concurrency :exec
SELECT sluice.queue_set_concurrency(%(name)s, %(limit)s);

-- Every queue's depth per state, for the metrics scrape (all tenants).
-- name: queue_depths :many
SELECT s.queue, s.blocked, s.scheduled, s.ready, s.running, s.waiting, s.succeeded, s.failed,
       s.cancelled, s.skipped,
       coalesce(extract(epoch FROM s.oldest_ready_age), 0)::double precision AS oldest_ready_seconds,
       s.consumers, s.paused
  FROM sluice.queue_stats s;

-- Queues whose waiting jobs no live, unpaused worker takes (`sluice up` warns).
-- name: queue_unconsumed :many
SELECT s.queue, s.ready, s.scheduled, s.consumers
  FROM sluice.queue_stats s
 WHERE s.no_consumer
 ORDER BY s.queue;
