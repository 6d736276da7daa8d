-- The sluice schema: everything Sluice keeps lives here.
-- IF NOT EXISTS because Alembic creates the schema first to hold its version table.
CREATE SCHEMA IF NOT EXISTS sluice;
COMMENT ON SCHEMA sluice IS 'Sluice: a job queue and DAG task scheduler whose engine is PostgreSQL';

-- An enum keeps the state column four bytes wide and lets a typo fail loudly.
-- See docs/state-machine.md for the transitions.
CREATE TYPE sluice.job_state AS ENUM (
    'blocked',    -- waiting for parents (pending_parents > 0)
    'scheduled',  -- run_at is in the future (a delay, or a retry backoff)
    'ready',      -- claimable now
    'running',    -- leased by a worker
    'succeeded',  -- terminal
    'failed',     -- terminal, and in the dead-letter queue
    'cancelled'   -- terminal: by a user, or because an upstream job failed
);

CREATE TYPE sluice.run_state AS ENUM ('running', 'succeeded', 'failed', 'cancelled');

-- Terminal states, in one place so SQL and views agree.
CREATE FUNCTION sluice.state_is_terminal(state sluice.job_state) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN state IN ('succeeded', 'failed', 'cancelled');
