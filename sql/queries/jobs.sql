-- Runtime queries on jobs. Each calls an engine function from sql/schema/; the
-- logic lives there, this file only names the calls for app/ and worker/.

-- name: job_claim :many
SELECT * FROM sluice.job_claim(%(worker_id)s, %(queues)s, %(limit)s, %(lease)s);

-- name: job_heartbeat :many
SELECT id FROM sluice.job_heartbeat(%(worker_id)s, %(ids)s, %(lease)s) AS id;

-- name: job_progress :scalar
SELECT sluice.job_progress(%(worker_id)s, %(id)s, %(attempt)s, %(progress)s);

-- name: job_complete_many :many
SELECT id FROM sluice.job_complete_many(
    %(worker_id)s, %(ids)s, %(attempts)s, %(results)s::jsonb[], %(outputs)s::text[]) AS id;

-- name: job_fail_many :many
SELECT * FROM sluice.job_fail_many(
    %(worker_id)s, %(ids)s, %(attempts)s, %(errors)s, %(retryable)s, %(outcomes)s::text[],
    %(outputs)s::text[]);

-- name: job_release_many :many
SELECT id FROM sluice.job_release_many(%(worker_id)s, %(ids)s, %(attempts)s) AS id;

-- name: job_rescue_expired :many
SELECT * FROM sluice.job_rescue_expired(%(limit)s);

-- name: job_promote_scheduled :scalar
SELECT sluice.job_promote_scheduled(%(limit)s);

-- name: job_next_due :scalar
SELECT sluice.job_next_due();

-- name: job_prune :scalar
SELECT sluice.job_prune(%(retention)s, %(limit)s);

-- name: job_cancel :many
SELECT id FROM sluice.job_cancel(%(ids)s, %(reason)s) AS id;

-- name: job_retry :many
SELECT id FROM sluice.job_retry(%(ids)s) AS id;
