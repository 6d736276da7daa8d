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
    'waiting',    -- a DAG node holding no worker: a `wait` node until its run_at
                  -- or its signal, or a mapped node while its elements run
    'succeeded',  -- terminal
    'failed',     -- terminal, and in the dead-letter queue
    'cancelled',  -- terminal: by a user, or because an upstream job failed
    'skipped'     -- terminal: a DAG node that will not run (its `when` was false,
                  -- its trigger rule can no longer be met, or its wait timed out)
);

-- A run is `queued` while its DAG's `concurrency` is used up: its jobs are
-- created when it starts.
CREATE TYPE sluice.run_state AS ENUM ('queued', 'running', 'succeeded', 'failed', 'cancelled');

-- Names and specs checked once, when a value is written. A domain's CHECK runs
-- when a value is assigned to the column; a table CHECK runs on every UPDATE of
-- the row, and jobs are updated on every claim and completion, so the regexes
-- below would cost each of those updates several microseconds for nothing.
-- "A first character of one class, then up to N-1 of another" is written as an
-- unbounded repetition plus a length test, never as `{0,N}`: PostgreSQL's regex
-- engine expands a bounded repetition into an automaton N states long, and
-- checking a task name that way cost 20 us, most of an insert's CPU (COPY ran
-- 3x faster without it). The classes are ASCII, so length() counts bytes.
CREATE DOMAIN sluice.queue_name AS text
    CONSTRAINT queue_name_valid CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(VALUE) <= 64);
CREATE DOMAIN sluice.task_name AS text
    CONSTRAINT task_name_valid CHECK (VALUE ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' AND length(VALUE) <= 200);
CREATE DOMAIN sluice.tenant_name AS text
    CONSTRAINT tenant_name_valid CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' AND length(VALUE) <= 64);

-- Bounds on what a job may carry, so that every value the database accepts can
-- be decoded by any client (Python's datetime stops at year 9999 and at year 1,
-- in the session's time zone; its JSON decoder recurses once per nesting level)
-- and survives the engine's arithmetic (a retry adds at most 30 days of backoff
-- to now(), a lease a few minutes). Domains rather than table CHECKs: they run
-- when a value is written to the column, not on every claim and completion.
-- docs/sql.md lists them.

-- When a job may run: finite, from 1900 up to (not including) 9000. Anything
-- earlier is as good as "now"; anything later leaves room for the arithmetic.
CREATE DOMAIN sluice.job_run_at AS timestamptz
    CONSTRAINT jobs_run_at_range
    CHECK (VALUE >= '1900-01-01 00:00:00+00' AND VALUE < '9000-01-01 00:00:00+00');

-- How long one attempt may run: more than nothing, at most 30 days.
CREATE DOMAIN sluice.job_timeout AS interval
    CONSTRAINT jobs_timeout_positive CHECK (VALUE > '0')
    CONSTRAINT jobs_timeout_max CHECK (VALUE <= '30 days');

-- A retry delay (backoff_base, backoff_max): from 0 to 30 days. The lower bound
-- carries the name of the table's base <= max check (13_jobs.sql): both say
-- "this retry delay makes no sense", and the API reports both on backoff_base.
CREATE DOMAIN sluice.job_backoff AS interval
    CONSTRAINT jobs_backoff_max CHECK (VALUE <= '30 days')
    CONSTRAINT jobs_backoff_range CHECK (VALUE >= '0');

-- JSON documents nest at most 100 levels below their top: jsonb itself allows
-- thousands, which Python's decoders (and msgspec's) refuse with a recursion
-- error. The jsonpath asks whether any value sits 101 levels down; it walks the
-- document once and stops at that depth. Measured: about 0.1 us of CPU for a
-- payload of a few keys, 7 us for 8 KB of JSON (600 values); an insert of one
-- job costs 100 us or more.
CREATE FUNCTION sluice.json_nesting_ok(doc jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN NOT jsonb_path_exists(doc, 'strict $.**{101}');

CREATE DOMAIN sluice.job_payload AS jsonb
    CONSTRAINT jobs_payload_depth CHECK (sluice.json_nesting_ok(VALUE));

-- A statement on live jobs failed with a serialization failure (40001) because a
-- row it saw was moved to another partition of sluice.jobs meanwhile, which
-- PostgreSQL reports even in READ COMMITTED (docs/state-machine.md, "Moved
-- rows"). The engine's functions run such a statement in a subtransaction and
-- call this from its handler: it answers the next round when the statement may
-- run again (READ COMMITTED: its new snapshot no longer sees the row where it
-- was), and raises the failure again after 10 rounds, or in REPEATABLE READ and
-- SERIALIZABLE, whose snapshot would fail again (retry the transaction).
CREATE FUNCTION sluice.moved_row_retry(p_round integer, p_message text) RETURNS integer
    LANGUAGE plpgsql AS $$
BEGIN
    IF p_round >= 10 OR current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure', MESSAGE = p_message;
    END IF;
    RETURN p_round + 1;
END
$$;

-- Terminal states, in one place so SQL and views agree.
CREATE FUNCTION sluice.state_is_terminal(state sluice.job_state) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN state IN ('succeeded', 'failed', 'cancelled', 'skipped');

-- The data-flow spec of a DAG node (jobs.flow), written once when its run is
-- created (sluice.dag_run_create) and only read afterwards, by the engine:
--   {"trigger": "all_done", "when": "$.nodes.a.result.n > 0",
--    "refs": [node ids its templates and condition read],
--    "template": <the payload before rendering>, "sites": <template_compile(template)>,
--    "map": {"expr": <a list, or one template giving one>, "sites": ...},
--    "wait": {"for": seconds} | {"signal": true, "timeout": seconds | null, "on_timeout": "fail" | "skip"}}
-- Every key is optional (an absent trigger is all_success); a node without any
-- is a plain node and its column is null. docs/dags.md describes the format.
-- Checked when written, so that a hand-written value cannot make a release fail.
CREATE FUNCTION sluice.flow_valid(flow jsonb) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN flow IS NULL OR (
        jsonb_typeof(flow) = 'object'
        AND coalesce(flow ->> 'trigger', 'all_success')
            IN ('all_success', 'all_done', 'one_success', 'one_failed', 'none_failed')
        AND coalesce(jsonb_typeof(flow -> 'trigger'), 'string') = 'string'
        AND coalesce(jsonb_typeof(flow -> 'refs'), 'array') = 'array'
        AND coalesce(jsonb_typeof(flow -> 'sites'), 'array') = 'array'
        AND (NOT flow ? 'when' OR (jsonb_typeof(flow -> 'when') = 'string'
                                   AND sluice.when_problem(flow ->> 'when') IS NULL))
        AND (NOT flow ? 'map' OR (jsonb_typeof(flow -> 'map') = 'object'
                                  AND jsonb_typeof(flow #> '{map,expr}') IN ('array', 'string')))
        AND (NOT flow ? 'wait' OR (
            jsonb_typeof(flow -> 'wait') = 'object'
            AND CASE WHEN flow #> '{wait,signal}' = 'true'
                     THEN coalesce(jsonb_typeof(flow #> '{wait,timeout}'), 'null') IN ('number', 'null')
                          AND coalesce((flow #>> '{wait,timeout}')::numeric, 1) BETWEEN 0.001 AND 315360000
                          AND coalesce(flow #>> '{wait,on_timeout}', 'fail') IN ('fail', 'skip')
                     ELSE jsonb_typeof(flow #> '{wait,for}') = 'number'
                          AND (flow #>> '{wait,for}')::numeric BETWEEN 0 AND 315360000
                END)));
END
$$;

-- A domain is checked for the null of every job without a spec, nearly all of
-- them: the guard keeps that check from calling PL/pgSQL, whose setup at each
-- insert statement was about a fifth of a single-row INSERT's backend CPU.
CREATE DOMAIN sluice.flow_spec AS jsonb
    CONSTRAINT flow_spec_valid CHECK (VALUE IS NULL OR sluice.flow_valid(VALUE));
