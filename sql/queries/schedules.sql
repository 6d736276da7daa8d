-- Runtime queries on cron schedules.

-- cron firing
-- The maintenance leader's side: read due schedules, fire them (sluice.schedule_fire),
-- and sleep until the next one is due. Times come from the database clock.

-- name: schedule_due :many
SELECT s.id, s.tenant, s.name, s.cron, s.timezone, s.misfire, s.next_fire_at,
       s.last_fired_at, s.updated_at, now() AS now
  FROM sluice.schedules s
 WHERE s.enabled AND (s.next_fire_at IS NULL OR s.next_fire_at <= now())
 ORDER BY s.next_fire_at NULLS FIRST, s.id
 LIMIT %(limit)s;

-- name: schedule_fire :scalar
SELECT sluice.schedule_fire(
    %(id)s, %(seen)s, %(occurrences)s::timestamptz[], %(next_fire_at)s, %(error)s);

-- name: schedule_next_due_in :scalar
SELECT extract(epoch FROM min(s.next_fire_at) - now())::double precision
  FROM sluice.schedules s
 WHERE s.enabled;
