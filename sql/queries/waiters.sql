-- Waiting for jobs and runs to end (sql/schema/48_waiters.sql): the state now,
-- and a waiter registered when it has not ended. Called after LISTEN.

-- name: job_await :one
SELECT a.id, a.state::text AS state, a.result, a.last_error, a.reason
  FROM sluice.job_await(%(id)s) AS a;

-- name: run_await :one
SELECT a.id, a.state::text AS state FROM sluice.run_await(%(id)s) AS a;
