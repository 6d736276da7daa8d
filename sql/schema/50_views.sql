-- Admin views, for psql and the dashboard. Each reads through an index or one
-- pass over sluice.jobs, so they stay well under a second at a million jobs.

-- Which worker holds which running job, until when. A lease is two columns on
-- the job row rather than a table of its own: claiming writes it in the same
-- row version as the state, and a heartbeat touches no index (a HOT update).
CREATE VIEW sluice.leases AS
SELECT j.id AS job_id, j.worker_id, j.attempt, j.started_at AS claimed_at,
       j.lease_expires_at AS expires_at
  FROM sluice.jobs j
 WHERE j.state = 'running' AND j.archived_at IS NULL;

-- Running jobs with their worker and lease.
CREATE VIEW sluice.running_jobs AS
SELECT j.id AS job_id, j.tenant, j.queue, j.task, j.attempt, j.max_attempts, j.run_id,
       j.worker_id, j.started_at AS since, now() - j.started_at AS running_for,
       j.lease_expires_at, j.progress
  FROM sluice.jobs j
 WHERE j.state = 'running' AND j.archived_at IS NULL;

-- Running jobs whose lease has expired: their worker is gone; the rescuer will retry them.
CREATE VIEW sluice.stuck_jobs AS
SELECT r.*, now() - r.lease_expires_at AS expired_for
  FROM sluice.running_jobs r
 WHERE r.lease_expires_at < now();

-- Unresolved dead letters, newest first.
CREATE VIEW sluice.dead_letter_queue AS
SELECT d.id AS dead_letter_id, d.job_id, j.tenant, j.queue, j.task, j.payload, j.run_id,
       d.attempts, d.reason, d.last_error, d.errors, d.failed_at
  FROM sluice.dead_letters d
  JOIN sluice.jobs j ON j.id = d.job_id
 WHERE d.resolved_at IS NULL
 ORDER BY d.failed_at DESC, d.id DESC;

-- Per DAG run: nodes in each state and how much is done. A mapped node counts
-- once, as a node (waiting while its elements run); its elements are counted
-- apart. Done: succeeded, failed, cancelled or skipped.
CREATE VIEW sluice.dag_run_progress AS
SELECT r.id AS run_id, r.tenant, r.dag_name, r.dag_version, r.state, r.created_at, r.finished_at,
       coalesce(n.total, 0) AS nodes,
       coalesce(n.blocked, 0) AS blocked,
       coalesce(n.scheduled, 0) AS scheduled,
       coalesce(n.ready, 0) AS ready,
       coalesce(n.running, 0) AS running,
       coalesce(n.waiting, 0) AS waiting,
       coalesce(n.succeeded, 0) AS succeeded,
       coalesce(n.failed, 0) AS failed,
       coalesce(n.cancelled, 0) AS cancelled,
       coalesce(n.skipped, 0) AS skipped,
       CASE WHEN coalesce(n.total, 0) = 0 THEN 0
            ELSE round(100.0 * (n.succeeded + n.failed + n.cancelled + n.skipped) / n.total, 1) END AS percent_done,
       coalesce(n.elements, 0) AS elements,
       coalesce(n.elements_done, 0) AS elements_done
  FROM sluice.dag_runs r
  LEFT JOIN LATERAL (
      SELECT count(*) FILTER (WHERE j.map_index IS NULL) AS total,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'blocked')   AS blocked,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'scheduled') AS scheduled,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'ready')     AS ready,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'running')   AS running,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'waiting')   AS waiting,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'succeeded') AS succeeded,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'failed')    AS failed,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'cancelled') AS cancelled,
             count(*) FILTER (WHERE j.map_index IS NULL AND j.state = 'skipped')   AS skipped,
             count(*) FILTER (WHERE j.map_index IS NOT NULL) AS elements,
             count(*) FILTER (WHERE j.map_index IS NOT NULL AND sluice.state_is_terminal(j.state)) AS elements_done
        FROM sluice.jobs j
       WHERE j.run_id = r.id) n ON true;

-- DAG nodes holding no worker while they wait: for a duration, for a signal
-- (wakes_at: its timeout, null without one), or for their map elements.
CREATE VIEW sluice.waiting_nodes AS
SELECT j.run_id, j.node, j.id AS job_id, j.tenant,
       CASE WHEN j.pending_parents > 0 THEN 'map'
            WHEN j.flow #> '{wait,signal}' = 'true' THEN 'signal'
            ELSE 'duration' END AS kind,
       coalesce(j.started_at, j.created_at) AS since,
       CASE WHEN j.pending_parents > 0 OR j.run_at >= sluice.never() THEN NULL ELSE j.run_at END AS wakes_at,
       CASE WHEN j.pending_parents > 0 THEN j.pending_parents END AS elements_left
  FROM sluice.jobs j
 WHERE j.state = 'waiting';

-- Workers, their last heartbeat, how many jobs each runs, and whether it is
-- alive (stopped cleanly: no; silent for three heartbeat intervals: no).
CREATE VIEW sluice.worker_status AS
SELECT w.id AS worker_id, w.hostname, w.pid, w.queues, w.concurrency, w.paused,
       w.started_at, w.heartbeat_at, w.stopped_at,
       coalesce(r.running, 0) AS running,
       w.stopped_at IS NULL AND w.heartbeat_at > now() - 3 * w.heartbeat_interval AS alive
  FROM sluice.workers w
  LEFT JOIN (SELECT j.worker_id, count(*) AS running
               FROM sluice.jobs j
              WHERE j.state = 'running' AND j.archived_at IS NULL
              GROUP BY j.worker_id) r ON r.worker_id = w.id;

-- Jobs finished per minute and queue over the last hour. The archived_at bound
-- spares every history partition older than the hour (jobs_archived_after_finish:
-- a job is archived when it finishes or later); the BRIN of the others
-- (13_jobs.sql, jobs_finished) reads the hour's pages, and the live
-- partition's btree its failed jobs.
CREATE VIEW sluice.throughput AS
SELECT date_trunc('minute', j.finished_at) AS minute, j.queue,
       count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE j.state = 'failed')    AS failed,
       count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE j.state = 'skipped')   AS skipped
  FROM sluice.jobs j
 WHERE j.state IN ('succeeded', 'failed', 'cancelled', 'skipped')
   AND j.finished_at >= now() - interval '1 hour'
   AND (j.archived_at IS NULL OR j.archived_at >= now() - interval '1 hour')
 GROUP BY 1, 2
 ORDER BY 1 DESC, 2;

-- The newest p_sample jobs that finished (succeeded, failed, cancelled) in the
-- last p_minutes and started in them too, of one tenant and queue (null: all),
-- newest first: the sample behind the dashboard's wait times (job_wait_times).
-- History partitions have a BRIN on finished_at, not a btree (13_jobs.sql), so
-- one ORDER BY finished_at DESC LIMIT would read every job of p_minutes. This
-- reads windows newest first, each four times as far back as the last (the
-- last 10 seconds, then back to 40, 160, 640 ... seconds, up to p_minutes),
-- each sorted and cut to what the sample still lacks, and stops once it has
-- p_sample: it reads at most about four times the rows the sample holds, plus
-- the pages of the ranges the BRIN has not summarized yet (the newest, for up
-- to a minute: autosummarize), which every window reads; few windows, as each
-- is planned anew. PL/pgSQL, so that each statement is planned for the window
-- it reads (a plan for an unknown window expects a third of all history and,
-- with it, a JIT compilation that takes longer than the query).
CREATE FUNCTION sluice.job_wait_sample(p_minutes integer, p_sample integer,
                                       p_tenant text DEFAULT NULL, p_queue text DEFAULT NULL)
    RETURNS TABLE (id bigint, queue text, run_at timestamptz, started_at timestamptz,
                   finished_at timestamptz)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_all  double precision := 60.0 * p_minutes;
    v_secs double precision := 0;   -- seconds back from now read so far
    v_next double precision;
    v_left bigint := p_sample;
    v_got  bigint;
BEGIN
    WHILE v_left > 0 AND v_secs < v_all LOOP
        v_next := least(greatest(4 * v_secs, 10), v_all);
        RETURN QUERY
            SELECT j.id, j.queue::text, j.run_at::timestamptz, j.started_at, j.finished_at
              FROM sluice.jobs j
             WHERE j.state IN ('succeeded', 'failed', 'cancelled')
               AND j.finished_at >= now() - make_interval(secs => v_next)
               -- the first window is open above: a finished_at ahead of now() counts too
               AND (v_secs = 0 OR j.finished_at < now() - make_interval(secs => v_secs))
               AND (j.archived_at IS NULL OR j.archived_at >= now() - make_interval(secs => v_next))
               AND j.started_at >= now() - make_interval(secs => v_all)
               AND (p_tenant IS NULL OR j.tenant = p_tenant)
               AND (p_queue IS NULL OR j.queue = p_queue)
             ORDER BY j.finished_at DESC
             LIMIT v_left;
        GET DIAGNOSTICS v_got = ROW_COUNT;
        v_left := v_left - v_got;
        v_secs := v_next;
    END LOOP;
END
$$;

-- Per queue: jobs in each state, how long the oldest ready job has waited,
-- settings, and how many live workers take from it: `no_consumer` flags a queue
-- whose waiting jobs no live, unpaused worker will ever claim (a typo in a queue
-- name, workers started with the wrong --queue, all of them down);
-- `unrunnable` counts its ready jobs whose task none of those workers has a
-- handler for (they wait for one). A worker taking '*' consumes every queue.
CREATE VIEW sluice.queue_stats AS
WITH counts AS (
    SELECT j.queue,
           count(*) FILTER (WHERE j.state = 'blocked')   AS blocked,
           count(*) FILTER (WHERE j.state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE j.state = 'ready')     AS ready,
           count(*) FILTER (WHERE j.state = 'running')   AS running,
           count(*) FILTER (WHERE j.state = 'waiting')   AS waiting,
           count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE j.state = 'failed')    AS failed,
           count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE j.state = 'skipped')   AS skipped,
           min(j.run_at) FILTER (WHERE j.state = 'ready') AS oldest_ready_at
      FROM sluice.jobs j
     GROUP BY j.queue
),
live AS (
    SELECT w.id, w.queues, w.tasks
      FROM sluice.workers w
      JOIN sluice.worker_status s ON s.worker_id = w.id
     WHERE s.alive AND NOT s.paused
),
consumers AS (
    SELECT n.queue, count(DISTINCT w.id) AS consumers,
           -- null when some consumer takes any task
           CASE WHEN bool_and(w.tasks IS NOT NULL)
                THEN array_agg(DISTINCT t.task) FILTER (WHERE t.task IS NOT NULL) END AS tasks
      FROM (SELECT c.queue::text FROM counts c UNION SELECT q.name FROM sluice.queues q) n(queue)
      JOIN live w ON n.queue = ANY(w.queues) OR '*' = ANY(w.queues)
      LEFT JOIN LATERAL unnest(w.tasks) AS t(task) ON true
     GROUP BY n.queue
),
-- Ready jobs whose task no live, unpaused consumer of their queue has a handler
-- for: workers claim only what they can run (job_claim's p_tasks), so these wait.
unrunnable AS (
    SELECT j.queue, count(*) AS unrunnable
      FROM sluice.jobs j
      JOIN consumers k ON k.queue = j.queue
     WHERE j.state = 'ready' AND k.tasks IS NOT NULL AND j.task <> ALL (k.tasks)
     GROUP BY j.queue
)
SELECT coalesce(c.queue, q.name) AS queue,
       coalesce(c.blocked, 0) AS blocked,
       coalesce(c.scheduled, 0) AS scheduled,
       coalesce(c.ready, 0) AS ready,
       coalesce(c.running, 0) AS running,
       coalesce(c.waiting, 0) AS waiting,
       coalesce(c.succeeded, 0) AS succeeded,
       coalesce(c.failed, 0) AS failed,
       coalesce(c.cancelled, 0) AS cancelled,
       coalesce(c.skipped, 0) AS skipped,
       greatest(now() - c.oldest_ready_at, '0') AS oldest_ready_age,
       coalesce(q.paused, false) AS paused,
       q.concurrency_limit,
       coalesce(k.consumers, 0) AS consumers,
       coalesce(c.ready + c.scheduled, 0) > 0 AND k.consumers IS NULL AS no_consumer,
       coalesce(u.unrunnable, 0) AS unrunnable
  FROM counts c
  FULL JOIN sluice.queues q ON q.name = c.queue
  LEFT JOIN consumers k ON k.queue = coalesce(c.queue, q.name)
  LEFT JOIN unrunnable u ON u.queue = coalesce(c.queue, q.name);
