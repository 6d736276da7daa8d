-- Runtime queries on cron schedules.

-- schedules CRUD (the REST API). A changed cron expression or time zone clears
-- next_fire_at, so the scheduler computes the next occurrence afresh.

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
       enabled = %(enabled)s, updated_at = now(),
       next_fire_at = CASE WHEN s.cron = %(cron)s AND s.timezone = %(timezone)s
                           THEN s.next_fire_at END
 WHERE s.id = %(id)s
   AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s)
RETURNING *;

-- name: schedule_delete :rows
DELETE FROM sluice.schedules s
 WHERE s.id = %(id)s
   AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s);
