-- Runtime queries of the maintenance leader that only it uses: the passes it
-- runs one row at a time after a batch failed (sql/schema/46_maintenance.sql),
-- and when to wake up next. The batch passes themselves are in jobs.sql.

-- Seconds until the next scheduled job falls due (negative: overdue; null:
-- none), computed as a number: a run_at Python cannot represent (past year
-- 9999, or infinite) must not make every pass fail to decode its answer.
-- name: job_next_due_in :scalar
SELECT (extract(epoch FROM sluice.job_next_due()) - extract(epoch FROM now()))::double precision;

-- name: job_promote_scheduled_isolated :many
SELECT * FROM sluice.job_promote_scheduled_isolated(%(limit)s);

-- name: job_rescue_expired_isolated :many
SELECT * FROM sluice.job_rescue_expired_isolated(%(limit)s);

-- name: job_prune_isolated :many
SELECT * FROM sluice.job_prune_isolated(%(retention)s, %(limit)s);

-- History partitions (sql/schema/47_history.sql): made ahead, then the ones past
-- retention retired whole. Each in a transaction of its own, with a short
-- lock_timeout: attaching, detaching and dropping a partition wait for every
-- open statement on sluice.jobs, and must never queue the queue behind them.
-- name: history_prepare :scalar
SELECT sluice.history_prepare();

-- name: history_retire :scalar
SELECT sluice.history_retire(%(retention)s, 1);

-- The counts of the closed history partitions (sql/schema/47_history_counts.sql),
-- which sluice.queue_stats reads instead of their rows: the partitions whose day
-- is over are watched (an instant's lock each), then counted, one per call.
-- name: history_rollup_watch :scalar
SELECT sluice.history_rollup_watch();

-- name: history_rollup :scalar
SELECT sluice.history_rollup(1);
