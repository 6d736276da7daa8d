-- Runtime queries on the dead-letter queue for the API (the actions are the
-- admin functions of sql/schema/41_job_admin.sql).

-- Unresolved entries, newest first, keyset-paginated on the entry id.
-- name: dead_letter_list :many
SELECT d.dead_letter_id, d.job_id, d.tenant, d.queue, d.task, d.payload, d.run_id,
       d.attempts, d.reason, d.last_error, d.errors, d.failed_at
  FROM sluice.dead_letter_queue d
 WHERE (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)
   AND (%(queue)s::text IS NULL OR d.queue = %(queue)s)
   AND (%(task)s::text IS NULL OR d.task = %(task)s)
   AND (%(before_id)s::bigint IS NULL OR d.dead_letter_id < %(before_id)s)
 ORDER BY d.dead_letter_id DESC
 LIMIT %(limit)s;

-- The open entry of one job, if the tenant may see it.
-- name: dead_letter_get :one
SELECT d.dead_letter_id, d.job_id, d.tenant, d.queue, d.task, d.payload, d.run_id,
       d.attempts, d.reason, d.last_error, d.errors, d.failed_at
  FROM sluice.dead_letter_queue d
 WHERE d.job_id = %(job_id)s
   AND (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s);

-- name: dead_letter_retry :scalar
SELECT sluice.retry_dead(%(job_id)s);

-- name: dead_letter_discard :scalar
SELECT sluice.dead_letter_discard(%(job_id)s);

-- Unresolved entries a tenant (null: every tenant) can see: the DLQ's size.
-- name: dead_letter_size :scalar
SELECT count(*)
  FROM sluice.dead_letters d
  JOIN sluice.jobs j ON j.id = d.job_id
 WHERE d.resolved_at IS NULL
   AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s);
