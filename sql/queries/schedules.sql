-- Runtime queries on cron schedules.

-- schedules CRUD (the REST API). A change to what or when a schedule runs clears
-- next_fire_at (the schedules_before_update trigger), so the scheduler computes
-- the next occurrence afresh.

-- name: schedule_create :one
INSERT INTO sluice.schedules (tenant, name, cron, timezone, job, dag_name, dag_params, misfire,
                              enabled)
VALUES (%(tenant)s, %(name)s, %(cron)s, %(timezone)s, %(job)s, %(dag_name)s, %(dag_params)s,
        %(misfire)s, %(enabled)s)
RETURNING *;

-- name: schedule_list :many
SELECT *
  FROM sluice.schedules s
 WHERE (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s)
   AND (%(after_id)s::bigint IS NULL OR s.id > %(after_id)s)
 ORDER BY s.id
 LIMIT %(limit)s;

-- name: schedule_get :one
SELECT *
  FROM sluice.schedules s
 WHERE s.id = %(id)s
   AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s);

-- name: schedule_update :one
UPDATE sluice.schedules s
   SET name = %(name)s, cron = %(cron)s, timezone = %(timezone)s, job = %(job)s,
       dag_name = %(dag_name)s, dag_params = %(dag_params)s, misfire = %(misfire)s,
       enabled = %(enabled)s, updated_at = now()
 WHERE s.id = %(id)s
   AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s)
RETURNING *;

-- name: schedule_delete :rows
DELETE FROM sluice.schedules s
 WHERE s.id = %(id)s
   AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s);

-- cron firing
-- The maintenance leader's side: read due schedules, fire them (sluice.schedule_fire),
-- and sleep until the next one is due. Times come from the database clock, unless
-- the caller gives `now` (tests drive the clock that way).

-- name: schedule_due :many
SELECT s.id, s.tenant, s.name, s.cron, s.timezone, s.misfire, s.next_fire_at,
       s.last_fired_at, s.updated_at, coalesce(%(now)s::timestamptz, now()) AS now
  FROM sluice.schedules s
 WHERE s.enabled
   AND (s.next_fire_at IS NULL OR s.next_fire_at <= coalesce(%(now)s::timestamptz, now()))
 ORDER BY s.next_fire_at NULLS FIRST, s.id
 LIMIT %(limit)s;

-- name: schedule_fire :scalar
SELECT sluice.schedule_fire(
    %(id)s, %(seen)s, %(occurrences)s::timestamptz[], %(next_fire_at)s, %(error)s);

-- name: schedule_disable :scalar
SELECT sluice.schedule_disable(%(id)s, %(error)s);

-- Seconds until the next schedule is due, as a number (computed from epochs: an
-- infinite next_fire_at cannot be subtracted from now() as a timestamp).
-- name: schedule_next_due_in :scalar
SELECT (extract(epoch FROM min(s.next_fire_at))
        - extract(epoch FROM coalesce(%(now)s::timestamptz, now())))::double precision
  FROM sluice.schedules s
 WHERE s.enabled;
