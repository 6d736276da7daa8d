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

-- Names and specs checked once, when a value is written. A domain's CHECK runs
-- when a value is assigned to the column; a table CHECK runs on every UPDATE of
-- the row, and jobs are updated on every claim and completion, so the regexes
-- below would cost each of those updates several microseconds for nothing.
CREATE DOMAIN sluice.queue_name AS text
    CONSTRAINT queue_name_valid CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$');
CREATE DOMAIN sluice.task_name AS text
    CONSTRAINT task_name_valid CHECK (VALUE ~ '^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$');
CREATE DOMAIN sluice.tenant_name AS text
    CONSTRAINT tenant_name_valid CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$');

-- Terminal states, in one place so SQL and views agree.
CREATE FUNCTION sluice.state_is_terminal(state sluice.job_state) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN state IN ('succeeded', 'failed', 'cancelled');
