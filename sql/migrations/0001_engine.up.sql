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
-- Shape of a `notify` value on a job or a run:
--   {"webhook": {"url": "https://...", "secret": "...", "on": ["failed", ...]},
--    "email":   {"to": ["ops@example.com"], "on": ["failed"]}}
-- "on" lists terminal outcomes (succeeded, failed, cancelled); it defaults to all three.
-- Checked by a constraint so a plain SQL insert gets the same answer as the API.
CREATE FUNCTION sluice.notify_valid(notify jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN notify IS NULL OR (
    jsonb_typeof(notify) = 'object'
    AND notify - 'webhook' - 'email' = '{}'::jsonb
    AND (NOT notify ? 'webhook' OR (
        jsonb_typeof(notify -> 'webhook') = 'object'
        AND (notify -> 'webhook') - 'url' - 'secret' - 'on' = '{}'::jsonb
        AND coalesce(notify #>> '{webhook,url}', '') ~ '^https?://[^\s]+$'
        AND coalesce(jsonb_typeof(notify #> '{webhook,secret}'), 'string') = 'string'
        AND coalesce(notify #> '{webhook,on}', '[]') <@ '["succeeded", "failed", "cancelled"]'::jsonb
        AND coalesce(jsonb_typeof(notify #> '{webhook,on}'), 'array') = 'array'))
    AND (NOT notify ? 'email' OR (
        jsonb_typeof(notify -> 'email') = 'object'
        AND (notify -> 'email') - 'to' - 'on' = '{}'::jsonb
        AND jsonb_typeof(notify #> '{email,to}') = 'array'
        AND jsonb_array_length(notify #> '{email,to}') > 0
        AND jsonb_path_query_array(notify, '$.email.to[*] ? (@.type() != "string" || !(@ like_regex "^[^@\\s]+@[^@\\s]+$"))') = '[]'::jsonb
        AND coalesce(notify #> '{email,on}', '[]') <@ '["succeeded", "failed", "cancelled"]'::jsonb
        AND coalesce(jsonb_typeof(notify #> '{email,on}'), 'array') = 'array'))
);

CREATE DOMAIN sluice.notify_spec AS jsonb
    CONSTRAINT notify_spec_valid CHECK (sluice.notify_valid(VALUE));
-- Queue settings. A queue needs no row to be used: a job may name any queue,
-- and a queue without a row is unpaused and unlimited. Rows appear when an
-- operator pauses a queue or sets its concurrency limit.
CREATE TABLE sluice.queues (
    name              sluice.queue_name PRIMARY KEY,
    paused            boolean NOT NULL DEFAULT false,
    -- At most this many jobs of the queue run at once, across all workers.
    concurrency_limit integer
                      CONSTRAINT queues_concurrency_limit_positive CHECK (concurrency_limit > 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- DAG definitions, one row per version: a run records the version it ran, and
-- older versions stay readable. `definition` is the normalised form the API
-- produced after validation ({"nodes": [{"id", "task", "payload", "depends_on", ...}]}).
CREATE TABLE sluice.dags (
    tenant      sluice.tenant_name NOT NULL DEFAULT 'default',
    name        text NOT NULL
                CONSTRAINT dags_name_valid CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    version     integer NOT NULL CONSTRAINT dags_version_positive CHECK (version > 0),
    definition  jsonb NOT NULL
                CONSTRAINT dags_definition_object CHECK (jsonb_typeof(definition) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    PRIMARY KEY (tenant, name, version)
);

-- One row per DAG run. Its jobs point here (jobs.run_id); its state follows
-- them (see jobs_after_update).
CREATE TABLE sluice.dag_runs (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant          sluice.tenant_name NOT NULL DEFAULT 'default',
    dag_name        text,          -- null for a run of an inline definition
    dag_version     integer,
    params          jsonb NOT NULL DEFAULT '{}',
    state           sluice.run_state NOT NULL DEFAULT 'running',
    notify          sluice.notify_spec,
    idempotency_key text,
    schedule_id     bigint,        -- the cron schedule that started it, if any
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT dag_runs_version_with_name CHECK ((dag_name IS NULL) = (dag_version IS NULL)),
    CONSTRAINT dag_runs_finished_when_done CHECK ((state = 'running') = (finished_at IS NULL))
);

CREATE UNIQUE INDEX dag_runs_idempotency_key ON sluice.dag_runs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX dag_runs_finished ON sluice.dag_runs (finished_at) WHERE state <> 'running';
-- One row per job. Columns a plain `INSERT INTO sluice.jobs (task) VALUES ('noop')`
-- leaves out get their defaults here; the state is decided by jobs_before_insert.
CREATE TABLE sluice.jobs (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant           sluice.tenant_name NOT NULL DEFAULT 'default',
    queue            sluice.queue_name NOT NULL DEFAULT 'default',
    task             sluice.task_name NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    priority         integer NOT NULL DEFAULT 0,     -- lower runs first
    run_at           timestamptz NOT NULL DEFAULT now(),
    state            sluice.job_state NOT NULL DEFAULT 'ready',
    attempt          integer NOT NULL DEFAULT 0,     -- attempts started so far
    max_attempts     integer NOT NULL DEFAULT 5,
    backoff          text NOT NULL DEFAULT 'exponential',
    backoff_base     interval NOT NULL DEFAULT '1 second',
    backoff_max      interval NOT NULL DEFAULT '1 hour',
    timeout          interval,                       -- null: the worker's default
    idempotency_key  text,
    run_id           bigint REFERENCES sluice.dag_runs (id) ON DELETE CASCADE,
    node             text,                           -- the node's id in its DAG run
    pending_parents  integer NOT NULL DEFAULT 0,     -- parents that have not succeeded
    -- The lease: which worker runs the job, until when (see the sluice.leases view).
    worker_id        text,
    lease_expires_at timestamptz,
    progress         jsonb,
    result           jsonb,
    last_error       text,
    reason           text,                           -- why it is failed or cancelled
    notify           sluice.notify_spec,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,

    CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT jobs_attempt_valid CHECK (attempt >= 0),
    CONSTRAINT jobs_backoff_valid CHECK (backoff IN ('exponential', 'linear', 'constant')),
    CONSTRAINT jobs_backoff_range CHECK (backoff_base >= '0' AND backoff_max >= backoff_base),
    CONSTRAINT jobs_timeout_positive CHECK (timeout > '0'),
    CONSTRAINT jobs_node_in_run CHECK (node IS NULL OR run_id IS NOT NULL),
    -- Only a blocked job waits for parents; a failed or cancelled one may still
    -- count parents it will never wait for.
    CONSTRAINT jobs_pending_parents_match_state CHECK (
        CASE state
            WHEN 'blocked' THEN pending_parents > 0
            WHEN 'failed' THEN pending_parents >= 0
            WHEN 'cancelled' THEN pending_parents >= 0
            ELSE pending_parents = 0
        END),
    CONSTRAINT jobs_running_has_lease CHECK (
        state <> 'running' OR (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Every job is updated at least twice (claim, completion): leave room on each
-- page so the new version usually lands beside the old one, and so updates that
-- touch no indexed column (heartbeats, progress) stay HOT.
-- Vacuum after 1% of the table has changed rather than the default 20%: the dead
-- versions sit at the head of the claim index and slow every claim until removed.
ALTER TABLE sluice.jobs SET (
    fillfactor = 85,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);

-- The claim path: only ready jobs are in it, in claim order, so a claim is an
-- index range scan of `limit` entries however many jobs are scheduled, blocked
-- or finished.
CREATE INDEX jobs_ready ON sluice.jobs (queue, priority, run_at, id) WHERE state = 'ready';
-- Promotion of due scheduled jobs reads this from its low end; future jobs are
-- never in the claim index.
CREATE INDEX jobs_scheduled ON sluice.jobs (run_at) WHERE state = 'scheduled';
-- Running jobs: per-queue concurrency counts and the rescue of expired leases.
CREATE INDEX jobs_running ON sluice.jobs (queue) WHERE state = 'running';
-- Pruning, and the throughput view, read finished jobs by time; with queue and
-- state in the index, the view is an index-only scan (0.2 s instead of 0.6 s for
-- 500k jobs finished in the last hour).
CREATE INDEX jobs_finished ON sluice.jobs (finished_at) INCLUDE (queue, state)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
-- Idempotency keys are unique per tenant for as long as the job is kept.
CREATE UNIQUE INDEX jobs_idempotency_key ON sluice.jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- A run's nodes; with state, "does this run still have unfinished nodes?" is one probe.
CREATE INDEX jobs_run ON sluice.jobs (run_id, state) WHERE run_id IS NOT NULL;
-- DAG edges: the child may start only after every parent has succeeded.
-- Edges are rows, so a DAG can be built in plain SQL in one transaction; the
-- triggers in 31_job_edges_triggers.sql keep jobs.pending_parents in step.
CREATE TABLE sluice.job_edges (
    parent_id bigint NOT NULL REFERENCES sluice.jobs (id) ON DELETE CASCADE,
    child_id  bigint NOT NULL REFERENCES sluice.jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id),
    CONSTRAINT job_edges_no_self_loop CHECK (parent_id <> child_id)
);
-- The primary key finds a parent's children (release); this finds a child's parents.
CREATE INDEX job_edges_child ON sluice.job_edges (child_id);
-- The execution log: one row per attempt, written when the attempt ends.
--
-- No foreign key to sluice.jobs: rows are only written by the engine's own
-- functions, for the job row they have just updated under its lock, and a
-- foreign key would check that row again and lock it FOR KEY SHARE for every
-- completed job (an extra heap write and WAL record on the hottest path).
-- The rows still go with their job: jobs_after_delete removes them.
CREATE TABLE sluice.job_attempts (
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL,
    worker_id   text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text NOT NULL,
    error       text,
    output      text,          -- tail of what the task printed (shell tasks)
    PRIMARY KEY (job_id, attempt),
    CONSTRAINT job_attempts_outcome_valid CHECK (
        outcome IN ('succeeded', 'failed', 'timeout', 'rescued', 'released', 'cancelled'))
);
-- Append-only: vacuum for the visibility map, not for dead rows.
ALTER TABLE sluice.job_attempts SET (autovacuum_vacuum_insert_scale_factor = 0.05);
-- The dead-letter queue: one row per time a job ended `failed`, holding its
-- error history, until an operator retries or discards it.
CREATE TABLE sluice.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint NOT NULL REFERENCES sluice.jobs (id) ON DELETE CASCADE,
    attempts    integer NOT NULL,   -- the job's attempt counter when it died
    reason      text NOT NULL,      -- attempts_exhausted | non_retryable
    last_error  text,
    errors      jsonb NOT NULL DEFAULT '[]',  -- [{attempt, outcome, error, finished_at}]
    failed_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    resolution  text,
    CONSTRAINT dead_letters_resolution_valid CHECK (resolution IN ('retried', 'discarded')),
    CONSTRAINT dead_letters_resolved_together CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
-- At most one open entry per job; also the lookup used by retry and discard.
CREATE UNIQUE INDEX dead_letters_open ON sluice.dead_letters (job_id) WHERE resolved_at IS NULL;
-- Live worker registry. A worker upserts its row at start, heartbeats it, and
-- marks it stopped on a clean exit; a row whose heartbeat is old is a dead worker.
CREATE TABLE sluice.workers (
    id                 text PRIMARY KEY,
    hostname           text NOT NULL,
    pid                integer NOT NULL,
    queues             text[] NOT NULL,
    concurrency        integer NOT NULL,
    paused             boolean NOT NULL DEFAULT false,
    heartbeat_interval interval NOT NULL DEFAULT '5 seconds',
    version            text,
    started_at         timestamptz NOT NULL DEFAULT now(),
    heartbeat_at       timestamptz NOT NULL DEFAULT now(),
    stopped_at         timestamptz
);

-- Leader election for maintenance: a row with an expiry, renewed by its holder.
-- Unlike session advisory locks it works through PgBouncer in transaction mode,
-- and a holder that dies loses the lease when it expires.
CREATE TABLE sluice.leaders (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
-- Cron schedules. The maintenance leader computes occurrences with croniter in
-- the schedule's time zone; each occurrence is enqueued with the idempotency key
-- 'schedule:<id>:<occurrence>' so it fires once however many schedulers run.
CREATE TABLE sluice.schedules (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant        sluice.tenant_name NOT NULL DEFAULT 'default',
    name          text NOT NULL
                  CONSTRAINT schedules_name_valid CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    cron          text NOT NULL,
    timezone      text NOT NULL DEFAULT 'UTC',
    -- What to start: a job (the arguments of sluice.enqueue, as JSON) or a DAG run.
    job           jsonb,
    dag_name      text,
    dag_params    jsonb NOT NULL DEFAULT '{}',
    -- After downtime: 'latest' runs the newest missed occurrence once,
    -- 'all' runs every missed occurrence, 'skip' runs none.
    misfire       text NOT NULL DEFAULT 'latest',
    enabled       boolean NOT NULL DEFAULT true,
    next_fire_at  timestamptz,   -- null until the scheduler has computed it
    last_fired_at timestamptz,   -- the last occurrence enqueued
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, name),
    CONSTRAINT schedules_one_target CHECK ((job IS NULL) <> (dag_name IS NULL)),
    CONSTRAINT schedules_job_has_task CHECK (job IS NULL OR jsonb_typeof(job -> 'task') = 'string'),
    CONSTRAINT schedules_misfire_valid CHECK (misfire IN ('latest', 'all', 'skip'))
);
CREATE INDEX schedules_due ON sluice.schedules (next_fire_at) WHERE enabled;
-- Retry policy, a pure function: the delay before attempt `attempt` + 1 after
-- attempt `attempt` failed. `jitter` is a number in [0, 1) supplied by the caller
-- (random() in production, fixed in tests): it spreads the delay over ±20% so jobs
-- that failed together do not all retry in the same instant. Computed in float
-- seconds so a large exponent saturates at `cap` instead of overflowing interval.
CREATE FUNCTION sluice.backoff_delay(
    kind text, base interval, cap interval, attempt integer, jitter double precision
) RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN make_interval(secs => least(
    extract(epoch FROM cap)::double precision,
    extract(epoch FROM base)::double precision
        * CASE kind
              WHEN 'exponential' THEN power(2::double precision, least(greatest(attempt, 1) - 1, 60))
              WHEN 'linear' THEN greatest(attempt, 1)
              ELSE 1
          END
        * (0.8 + 0.4 * jitter)));
-- Triggers on sluice.jobs: the database, not the client, decides a new job's
-- state, wakes workers, releases DAG children and settles runs. They fire for
-- every writer alike: the API, the worker, psql, or another application's INSERT.

-- A new job is `ready`, or `scheduled` when its run_at is in the future. The WHEN
-- clause keeps the common case (ready now, no state given) free of a function call.
CREATE FUNCTION sluice.jobs_before_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state NOT IN ('ready', 'scheduled') THEN
        RAISE EXCEPTION 'a new job cannot be inserted as %', NEW.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_inserted_pending',
                  SCHEMA = 'sluice', TABLE = 'jobs', COLUMN = 'state',
                  HINT = 'Leave state out: the database sets ready, or scheduled when run_at is in the future.';
    END IF;
    NEW.state := CASE WHEN NEW.run_at > now() THEN 'scheduled' ELSE 'ready' END;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_before_insert BEFORE INSERT ON sluice.jobs
    FOR EACH ROW WHEN (NEW.state <> 'ready' OR NEW.run_at > now())
    EXECUTE FUNCTION sluice.jobs_before_insert();

-- Wake idle workers: one NOTIFY per statement and queue, never one per row, so a
-- 10,000-row insert wakes each listener once. The payload is the queue name.
CREATE FUNCTION sluice.jobs_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sluice_jobs', q.queue)
       FROM (SELECT DISTINCT queue FROM new_jobs WHERE state = 'ready') q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_after_insert AFTER INSERT ON sluice.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.jobs_after_insert();

-- After any UPDATE statement, act on the state changes it made, set-based:
--   * parents that succeeded release their children (job_release_children);
--   * jobs that failed or were cancelled cancel their descendants;
--   * queues that got ready jobs are notified once each;
--   * the workers of cancelled running jobs are told to stop them;
--   * runs whose nodes finished (or came back) are settled;
--   * terminal jobs with `notify` get their notification jobs (the outbox).
-- This trigger updates sluice.jobs itself, so it fires again for those rows. The
-- recursion is bounded: released children only become ready (notify, no further
-- updates), and cancelled descendants were all cancelled by one recursive
-- statement, which sets sluice.cascading so the nested call does not walk the
-- same subtree again.
CREATE FUNCTION sluice.jobs_after_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_succeeded bigint[];
    v_doomed    bigint[];
    v_queues    text[];
    v_stopped   bigint[];
    v_runs      bigint[];
    v_notified  bigint[];
BEGIN
    -- Claims (ready -> running) and lease renewals change nothing this trigger acts
    -- on: when every row is running, skip the join below. A claim is the hottest
    -- UPDATE there is, and this probe costs a fraction of the join.
    IF NOT EXISTS (SELECT 1 FROM new_jobs n WHERE n.state <> 'running') THEN
        RETURN NULL;
    END IF;
    -- Each row's old and new state side by side. Grouped by id rather than joined:
    -- the planner has no statistics for transition tables, assumes one row each
    -- and picks a nested loop, which compares every new row with every old one
    -- (a DAG root releasing 10,000 children took nine seconds here). Grouping is
    -- one hash or sort pass whatever the size.
    SELECT array_agg(c.id) FILTER (WHERE c.state = 'succeeded'),
           array_agg(c.id) FILTER (WHERE c.state IN ('failed', 'cancelled')),
           array_agg(DISTINCT c.queue) FILTER (WHERE c.state = 'ready'),
           array_agg(c.id) FILTER (WHERE c.state = 'cancelled' AND c.old_state = 'running'),
           array_agg(DISTINCT c.run_id) FILTER (
               WHERE c.run_id IS NOT NULL
                 AND sluice.state_is_terminal(c.state) <> sluice.state_is_terminal(c.old_state)),
           array_agg(c.id) FILTER (WHERE c.has_notify AND sluice.state_is_terminal(c.state))
      INTO v_succeeded, v_doomed, v_queues, v_stopped, v_runs, v_notified
      FROM (SELECT u.id, max(u.state) AS state, max(u.old_state) AS old_state,
                   max(u.queue) AS queue, max(u.run_id) AS run_id, bool_or(u.has_notify) AS has_notify
              FROM (SELECT n.id, n.state, NULL::sluice.job_state AS old_state, n.queue::text AS queue,
                           n.run_id, n.notify IS NOT NULL AS has_notify
                      FROM new_jobs n
                    UNION ALL
                    SELECT o.id, NULL, o.state, NULL, NULL, NULL
                      FROM old_jobs o) u
             GROUP BY u.id) c
     WHERE c.state <> c.old_state;

    IF v_succeeded IS NOT NULL THEN
        PERFORM sluice.job_release_children(v_succeeded);
    END IF;
    IF v_doomed IS NOT NULL AND current_setting('sluice.cascading', true) IS DISTINCT FROM 'on' THEN
        PERFORM sluice.job_cancel_descendants(v_doomed);
    END IF;
    IF v_queues IS NOT NULL THEN
        PERFORM pg_notify('sluice_jobs', q) FROM unnest(v_queues) q;
    END IF;
    IF v_stopped IS NOT NULL THEN
        -- NOTIFY payloads are limited to 8000 bytes: send the ids in chunks.
        PERFORM pg_notify('sluice_control', json_build_object('cancel', chunk)::text)
           FROM (SELECT array_agg(id) AS chunk
                   FROM unnest(v_stopped) WITH ORDINALITY AS s(id, n)
                  GROUP BY (n - 1) / 400) c;
    END IF;
    IF v_runs IS NOT NULL THEN
        PERFORM sluice.dag_run_settle(v_runs);
    END IF;
    IF v_notified IS NOT NULL THEN
        PERFORM sluice.job_notify_outbox(v_notified);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_after_update AFTER UPDATE ON sluice.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.jobs_after_update();

-- A deleted job takes its attempt log with it (job_attempts has no foreign key:
-- see 15_job_attempts.sql). One statement per DELETE, not one per row.
CREATE FUNCTION sluice.jobs_after_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sluice.job_attempts a USING old_jobs o WHERE a.job_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_after_delete AFTER DELETE ON sluice.jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.jobs_after_delete();

-- Deleting a job that may still run would strand its children (their pending
-- count would never reach zero): cancel it first. Pruning only deletes finished
-- jobs, so the WHEN clause keeps it free of a function call.
CREATE FUNCTION sluice.jobs_before_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'job % is %: cancel it before deleting it', OLD.id, OLD.state
        USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_delete_finished',
              SCHEMA = 'sluice', TABLE = 'jobs';
END
$$;

CREATE TRIGGER jobs_before_delete BEFORE DELETE ON sluice.jobs
    FOR EACH ROW WHEN (NOT sluice.state_is_terminal(OLD.state))
    EXECUTE FUNCTION sluice.jobs_before_delete();
-- DAG mechanics: edges, release of children, cancellation of descendants, run state.
--
-- Locking rule (why nothing here deadlocks): every function that locks several
-- jobs locks them in ascending id order, and jobs are always locked before runs.
-- Two transactions that take overlapping locks in the same order cannot wait on
-- each other in a cycle.

-- Move blocked children closer to ready: child `p_children[i]` has `p_counts[i]`
-- fewer parents to wait for. The decrement happens under the child's row lock
-- (taken in id order), so two parents succeeding at the same instant in two
-- transactions serialise on the child: the second sees the first's decrement,
-- and exactly one of them brings the count to zero and makes the child ready.
CREATE FUNCTION sluice.job_unblock(p_children bigint[], p_counts integer[]) RETURNS void
    LANGUAGE sql AS $$
    WITH counts AS (
        SELECT c.id, sum(c.n)::integer AS n
          FROM unnest(p_children, p_counts) AS c(id, n)
         GROUP BY c.id
    ), locked AS (
        SELECT j.id, counts.n
          FROM sluice.jobs j
          JOIN counts ON counts.id = j.id
         WHERE j.state = 'blocked'
         ORDER BY j.id
           FOR NO KEY UPDATE OF j
    )
    UPDATE sluice.jobs j
       SET pending_parents = j.pending_parents - l.n,
           state = CASE WHEN j.pending_parents > l.n THEN 'blocked'::sluice.job_state
                        WHEN j.run_at > now() THEN 'scheduled'
                        ELSE 'ready' END
      FROM locked l
     WHERE j.id = l.id;
$$;

-- Parents that just succeeded release their children. PL/pgSQL rather than SQL:
-- it runs after every completion batch, mostly finding no edges, and PL/pgSQL
-- keeps the lookup's plan where a SQL function would plan it again on each call.
CREATE FUNCTION sluice.job_release_children(p_parents bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_children bigint[];
BEGIN
    -- One entry per edge: job_unblock sums a child's entries and locks in id order.
    SELECT array_agg(e.child_id) INTO v_children
      FROM sluice.job_edges e
     WHERE e.parent_id = ANY(p_parents);
    IF v_children IS NOT NULL THEN
        PERFORM sluice.job_unblock(v_children, array_fill(1, ARRAY[cardinality(v_children)]));
    END IF;
END
$$;

-- Jobs that failed or were cancelled take every pending descendant with them, in
-- one recursive statement rather than a cascade of trigger calls one level at a
-- time. The jobs_after_update call this UPDATE causes must not walk the same
-- subtree again: sluice.cascading tells it so.
CREATE FUNCTION sluice.job_cancel_descendants(p_roots bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('sluice.cascading', 'on', true);
    WITH RECURSIVE descendants(id) AS (
        SELECT e.child_id FROM sluice.job_edges e WHERE e.parent_id = ANY(p_roots)
        UNION
        SELECT e.child_id FROM descendants d JOIN sluice.job_edges e ON e.parent_id = d.id
    ), locked AS (
        SELECT j.id
          FROM sluice.jobs j
          JOIN descendants d ON d.id = j.id
         WHERE j.state IN ('blocked', 'scheduled', 'ready')
         ORDER BY j.id
           FOR NO KEY UPDATE OF j
    )
    UPDATE sluice.jobs j
       SET state = 'cancelled', reason = 'upstream_failed', finished_at = now()
      FROM locked l
     WHERE j.id = l.id;
    PERFORM set_config('sluice.cascading', 'off', true);
END
$$;

-- A path of edges from job `p_from` to job `p_to` ([p_from, ..., p_to]), or null.
-- Breadth-first, remembering one predecessor per job, so the path is a shortest one.
CREATE FUNCTION sluice.job_path(p_from bigint, p_to bigint) RETURNS bigint[]
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_prev     jsonb := jsonb_build_object(p_from::text, p_from);
    v_frontier bigint[] := ARRAY[p_from];
    v_step     jsonb;
    v_node     bigint;
    v_path     bigint[];
BEGIN
    WHILE NOT v_prev ? p_to::text AND cardinality(v_frontier) > 0 LOOP
        SELECT coalesce(jsonb_object_agg(s.child_id::text, s.parent_id), '{}'), array_agg(s.child_id)
          INTO v_step, v_frontier
          FROM (SELECT DISTINCT ON (e.child_id) e.child_id, e.parent_id
                  FROM sluice.job_edges e
                 WHERE e.parent_id = ANY(v_frontier) AND NOT v_prev ? e.child_id::text
                 ORDER BY e.child_id, e.parent_id) s;
        v_prev := v_prev || v_step;
    END LOOP;
    IF NOT v_prev ? p_to::text THEN
        RETURN NULL;
    END IF;
    v_node := p_to;
    v_path := ARRAY[p_to];
    WHILE v_node <> p_from LOOP
        v_node := (v_prev ->> v_node::text)::bigint;
        v_path := v_node || v_path;
    END LOOP;
    RETURN v_path;
END
$$;

-- A cycle closed by the new edges (p_parents[i] -> p_children[i]), as the list of
-- jobs around it (first = last), or null when there is none.
--
-- Every job on such a cycle is a descendant of a new edge's child. Ids increase
-- along a cycle's edges and must also decrease somewhere, so if the edges leaving
-- those descendants all go the same way (parents inserted before children, the
-- usual case, or all the other way) there is no cycle and the check costs one
-- pass over the descendants. Otherwise each new edge whose parent is among the
-- descendants is checked on its own.
CREATE FUNCTION sluice.job_edges_find_cycle(p_parents bigint[], p_children bigint[])
    RETURNS bigint[]
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_reach bigint[];
    v_mixed boolean;
    v_edge  record;
    v_path  bigint[];
BEGIN
    WITH RECURSIVE reach(id) AS (
        SELECT unnest(p_children)
        UNION
        SELECT e.child_id FROM reach r JOIN sluice.job_edges e ON e.parent_id = r.id
    )
    SELECT array_agg(id) INTO v_reach FROM reach;

    SELECT bool_or(e.parent_id > e.child_id) AND bool_or(e.parent_id < e.child_id)
      INTO v_mixed
      FROM sluice.job_edges e
     WHERE e.parent_id = ANY(v_reach);
    IF NOT coalesce(v_mixed, false) THEN
        RETURN NULL;
    END IF;

    FOR v_edge IN
        SELECT DISTINCT x.parent_id, x.child_id
          FROM unnest(p_parents, p_children) AS x(parent_id, child_id)
         WHERE x.parent_id = ANY(v_reach)
         ORDER BY x.parent_id, x.child_id
    LOOP
        v_path := sluice.job_path(v_edge.child_id, v_edge.parent_id);
        IF v_path IS NOT NULL THEN
            RETURN v_edge.parent_id || v_path;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- New edges: lock what they touch, refuse what cannot work, and block children.
CREATE FUNCTION sluice.job_edges_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_bad   record;
    v_cycle bigint[];
BEGIN
    -- Lock parents and children together in id order. A parent completing at the
    -- same time either commits first (we then read it as succeeded and do not
    -- count it) or waits for us (its release then sees these edges).
    PERFORM 1
       FROM sluice.jobs j
      WHERE j.id IN (SELECT parent_id FROM new_edges UNION SELECT child_id FROM new_edges)
      ORDER BY j.id
        FOR NO KEY UPDATE;

    SELECT e.parent_id, e.child_id, c.state INTO v_bad
      FROM new_edges e JOIN sluice.jobs c ON c.id = e.child_id
     WHERE c.state NOT IN ('blocked', 'scheduled', 'ready')
     ORDER BY e.child_id, e.parent_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'job % cannot depend on job %: it is already %',
                        v_bad.child_id, v_bad.parent_id, v_bad.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_child_pending',
                  SCHEMA = 'sluice', TABLE = 'job_edges';
    END IF;

    SELECT e.parent_id, e.child_id, p.state INTO v_bad
      FROM new_edges e JOIN sluice.jobs p ON p.id = e.parent_id
     WHERE p.state IN ('failed', 'cancelled')
     ORDER BY e.parent_id, e.child_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'job % cannot depend on job %: that job is % and will never succeed',
                        v_bad.child_id, v_bad.parent_id, v_bad.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_parent_alive',
                  SCHEMA = 'sluice', TABLE = 'job_edges',
                  HINT = 'Retry the parent first (sluice.retry_dead).';
    END IF;

    SELECT sluice.job_edges_find_cycle(array_agg(parent_id), array_agg(child_id))
      INTO v_cycle
      FROM new_edges;
    IF v_cycle IS NOT NULL THEN
        RAISE EXCEPTION 'edge % -> % would close a cycle: %',
                        v_cycle[1], v_cycle[2], array_to_string(v_cycle, ' -> ')
            USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_acyclic',
                  SCHEMA = 'sluice', TABLE = 'job_edges';
    END IF;

    -- Count the parents each child must now wait for (not those already succeeded).
    UPDATE sluice.jobs c
       SET pending_parents = c.pending_parents + w.n, state = 'blocked'
      FROM (SELECT e.child_id, count(*)::integer AS n
              FROM new_edges e JOIN sluice.jobs p ON p.id = e.parent_id
             WHERE p.state <> 'succeeded'
             GROUP BY e.child_id) w
     WHERE c.id = w.child_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_edges_after_insert AFTER INSERT ON sluice.job_edges
    REFERENCING NEW TABLE AS new_edges
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.job_edges_after_insert();

-- A deleted edge no longer holds its child back. Edges of deleted (finished)
-- parents changed nothing: a succeeded parent already released the child, and a
-- failed or cancelled one cancelled it.
CREATE FUNCTION sluice.job_edges_after_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sluice.job_unblock(array_agg(o.child_id), array_agg(1))
       FROM old_edges o JOIN sluice.jobs p ON p.id = o.parent_id
      WHERE p.state <> 'succeeded'
     HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_edges_after_delete AFTER DELETE ON sluice.job_edges
    REFERENCING OLD TABLE AS old_edges
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.job_edges_after_delete();

CREATE FUNCTION sluice.job_edges_before_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'edges cannot be changed; delete the edge and insert a new one'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'job_edges_immutable',
              SCHEMA = 'sluice', TABLE = 'job_edges';
END
$$;

CREATE TRIGGER job_edges_before_update BEFORE UPDATE ON sluice.job_edges
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.job_edges_before_update();

-- A run's state follows its nodes: it ends when no node is left to run (failed
-- if any node failed, else cancelled if any was cancelled, else succeeded), and
-- runs again when a retry brings a node back.
CREATE FUNCTION sluice.dag_run_settle(p_runs bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    -- Lock the runs first: of two transactions finishing a run's last two nodes,
    -- the second waits here until the first commits, and its next statement (a
    -- fresh snapshot) then sees the first one's node finished.
    PERFORM 1 FROM sluice.dag_runs r WHERE r.id = ANY(p_runs) ORDER BY r.id FOR NO KEY UPDATE;

    UPDATE sluice.dag_runs r
       SET state = 'running', finished_at = NULL
     WHERE r.id = ANY(p_runs)
       AND r.state <> 'running'
       AND EXISTS (SELECT 1 FROM sluice.jobs j
                    WHERE j.run_id = r.id AND j.state IN ('blocked', 'scheduled', 'ready', 'running'));

    WITH finished AS (
        UPDATE sluice.dag_runs r
           SET state = CASE
                   WHEN EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.run_id = r.id AND j.state = 'failed')
                       THEN 'failed'::sluice.run_state
                   WHEN EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.run_id = r.id AND j.state = 'cancelled')
                       THEN 'cancelled'
                   ELSE 'succeeded' END,
               finished_at = now()
         WHERE r.id = ANY(p_runs)
           AND r.state = 'running'
           AND NOT EXISTS (SELECT 1 FROM sluice.jobs j
                            WHERE j.run_id = r.id AND j.state IN ('blocked', 'scheduled', 'ready', 'running'))
        RETURNING r.*
    )
    INSERT INTO sluice.jobs (tenant, queue, task, payload, max_attempts, backoff_base)
    SELECT f.tenant, 'default', n.task, n.payload, 10, '5 seconds'
      FROM finished f
     CROSS JOIN LATERAL sluice.notification_jobs(f.notify, sluice.dag_run_event(f)) n
     WHERE f.notify IS NOT NULL;
END
$$;
-- Notifications are an outbox: when a job or run with `notify` ends, its webhook
-- and email deliveries are inserted as ordinary jobs (tasks `webhook`, `email`)
-- in the same transaction as the state change, so they are delivered, with
-- retries, exactly when the change commits and never when it rolls back.

-- The event a job's notification reports.
CREATE FUNCTION sluice.job_event(j sluice.jobs) RETURNS jsonb
    LANGUAGE sql STABLE
RETURN jsonb_build_object(
    'event', 'job.' || j.state,
    'job_id', j.id, 'run_id', j.run_id, 'node', j.node,
    'tenant', j.tenant, 'queue', j.queue, 'task', j.task, 'state', j.state,
    'attempt', j.attempt, 'max_attempts', j.max_attempts,
    'created_at', j.created_at, 'started_at', j.started_at, 'finished_at', j.finished_at,
    'error', j.last_error, 'reason', j.reason);

-- The event a run's notification reports.
CREATE FUNCTION sluice.dag_run_event(r sluice.dag_runs) RETURNS jsonb
    LANGUAGE sql STABLE
RETURN jsonb_build_object(
    'event', 'run.' || r.state,
    'run_id', r.id, 'dag', r.dag_name, 'dag_version', r.dag_version,
    'tenant', r.tenant, 'state', r.state,
    'created_at', r.created_at, 'finished_at', r.finished_at);

-- The delivery jobs (task, payload) that `notify` asks for, for one event.
-- "on" defaults to every terminal outcome.
CREATE FUNCTION sluice.notification_jobs(p_notify jsonb, p_event jsonb)
    RETURNS TABLE (task text, payload jsonb)
    LANGUAGE sql IMMUTABLE AS $$
    SELECT 'webhook',
           jsonb_build_object('url', p_notify #>> '{webhook,url}',
                              'secret', p_notify #>> '{webhook,secret}',
                              'event', p_event)
     WHERE p_notify ? 'webhook'
       AND coalesce(p_notify #> '{webhook,on}', '["succeeded", "failed", "cancelled"]') ? (p_event ->> 'state')
    UNION ALL
    SELECT 'email',
           jsonb_build_object(
               'to', p_notify #> '{email,to}',
               'subject', format('[sluice] %s %s', replace(p_event ->> 'event', '.', ' '),
                                 coalesce(p_event ->> 'job_id', p_event ->> 'run_id')),
               'body', (SELECT string_agg(format('%s: %s', key, value), E'\n' ORDER BY key)
                          FROM jsonb_each_text(p_event) WHERE value IS NOT NULL))
     WHERE p_notify ? 'email'
       AND coalesce(p_notify #> '{email,on}', '["succeeded", "failed", "cancelled"]') ? (p_event ->> 'state');
$$;

-- Outbox rows for jobs that just reached a terminal state (called by jobs_after_update).
CREATE FUNCTION sluice.job_notify_outbox(p_ids bigint[]) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO sluice.jobs (tenant, queue, task, payload, max_attempts, backoff_base)
    SELECT j.tenant, j.queue, n.task, n.payload, 10, '5 seconds'
      FROM sluice.jobs j
     CROSS JOIN LATERAL sluice.notification_jobs(j.notify, sluice.job_event(j)) n
     WHERE j.id = ANY(p_ids)
       AND sluice.state_is_terminal(j.state);
$$;
-- Starting DAG runs. A definition here is the normalised JSON the API stores
-- after validation (so SQL trusts its shape; constraints still guard each row):
--
--   {"nodes": [{"id": "extract", "task": "shell", "payload": {...},
--               "depends_on": ["..."], "queue": "default", "priority": 0,
--               "max_attempts": 3, "backoff": "exponential",
--               "backoff_base": 1.0, "backoff_max": 3600.0,   -- seconds
--               "timeout": 30.0}, ...]}                        -- seconds or null
--
-- Nodes come in topological order (parents first), so ids grow along every
-- edge and the cycle check takes its one-pass fast path.

-- Fill `{{ params.name }}` placeholders inside the string values of `payload`
-- with the run's parameters (as text, JSON-escaped). Unknown names stay as written.
CREATE FUNCTION sluice.dag_render(payload jsonb, params jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_text  text;
    v_param record;
BEGIN
    IF payload IS NULL OR params IS NULL OR params = '{}'::jsonb THEN
        RETURN payload;
    END IF;
    v_text := regexp_replace(payload::text, '\{\{\s*params\.([A-Za-z0-9_]+)\s*\}\}', '{{params.\1}}', 'g');
    IF strpos(v_text, '{{params.') = 0 THEN
        RETURN payload;
    END IF;
    FOR v_param IN SELECT key, value FROM jsonb_each_text(params) LOOP
        v_text := replace(v_text, '{{params.' || v_param.key || '}}',
                          substr(to_jsonb(coalesce(v_param.value, ''))::text, 2,
                                 length(to_jsonb(coalesce(v_param.value, ''))::text) - 2));
    END LOOP;
    RETURN v_text::jsonb;
END
$$;

-- Create a run of `p_definition`: the run row, one job per node, one edge per
-- dependency, in one transaction. With an idempotency key the tenant already
-- used, returns that run and creates nothing.
CREATE FUNCTION sluice.dag_run_create(
    p_tenant          text,
    p_definition      jsonb,
    p_params          jsonb DEFAULT '{}',
    p_dag_name        text DEFAULT NULL,
    p_dag_version     integer DEFAULT NULL,
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_schedule_id     bigint DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_run   bigint;
    v_ids   bigint[];
    v_nodes text[];
BEGIN
    INSERT INTO sluice.dag_runs AS r (tenant, dag_name, dag_version, params, notify, idempotency_key, schedule_id)
    VALUES (p_tenant, p_dag_name, p_dag_version, coalesce(p_params, '{}'), p_notify, p_idempotency_key, p_schedule_id)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING r.id INTO v_run;
    IF v_run IS NULL THEN
        SELECT r.id INTO v_run
          FROM sluice.dag_runs r
         WHERE r.tenant = p_tenant AND r.idempotency_key = p_idempotency_key;
        RETURN v_run;
    END IF;

    -- Ids are drawn in node order, so parents (listed first) get smaller ids.
    SELECT array_agg(nextval(pg_get_serial_sequence('sluice.jobs', 'id')) ORDER BY n.ord),
           array_agg(n.node ->> 'id' ORDER BY n.ord)
      INTO v_ids, v_nodes
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord);
    IF v_ids IS NULL THEN
        RAISE EXCEPTION 'a DAG needs at least one node'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'dag_runs_nodes_present';
    END IF;

    INSERT INTO sluice.jobs (id, tenant, run_id, node, task, payload, queue, priority,
                             max_attempts, backoff, backoff_base, backoff_max, timeout)
    SELECT v_ids[n.ord], p_tenant, v_run, n.node ->> 'id', n.node ->> 'task',
           sluice.dag_render(coalesce(n.node -> 'payload', '{}'), p_params),
           coalesce(n.node ->> 'queue', 'default'),
           coalesce((n.node ->> 'priority')::integer, 0),
           coalesce((n.node ->> 'max_attempts')::integer, 5),
           coalesce(n.node ->> 'backoff', 'exponential'),
           make_interval(secs => coalesce((n.node ->> 'backoff_base')::double precision, 1)),
           make_interval(secs => coalesce((n.node ->> 'backoff_max')::double precision, 3600)),
           make_interval(secs => (n.node ->> 'timeout')::double precision)
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord);

    INSERT INTO sluice.job_edges (parent_id, child_id)
    SELECT parent.id, v_ids[n.ord]
      FROM jsonb_array_elements(p_definition -> 'nodes') WITH ORDINALITY AS n(node, ord)
     CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(n.node -> 'depends_on', '[]')) AS d(name)
      JOIN unnest(v_nodes, v_ids) AS parent(name, id) ON parent.name = d.name;
    RETURN v_run;
END
$$;

-- Start a run of the newest version of a stored DAG.
CREATE FUNCTION sluice.dag_run_start(
    p_tenant          text,
    p_dag_name        text,
    p_params          jsonb DEFAULT '{}',
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_schedule_id     bigint DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_dag sluice.dags;
BEGIN
    SELECT * INTO v_dag
      FROM sluice.dags d
     WHERE d.tenant = p_tenant AND d.name = p_dag_name
     ORDER BY d.version DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no DAG named % for tenant %', p_dag_name, p_tenant
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN sluice.dag_run_create(p_tenant, v_dag.definition, p_params, v_dag.name, v_dag.version,
                                 p_notify, p_idempotency_key, p_schedule_id);
END
$$;
-- The worker's side of a job's life: claim, heartbeat, complete, fail, release,
-- and the maintenance that promotes, rescues and prunes. Every function that
-- finishes an attempt only touches jobs still `running` under the caller's lease
-- (same worker, same attempt): a late completion from a worker whose lease was
-- rescued, or a duplicate one, changes nothing.
--
-- Those functions find their jobs by primary key and test the state as text
-- (`j.state::text = 'running'`). Written as `j.state = 'running'`, the test
-- lets the planner read every running job through the jobs_running partial
-- index and hash-join them with the batch: statistics taken while nothing ran
-- say "about one running job", so that looks cheapest. It is not: every
-- running job of every worker is read on each call, and while a long
-- transaction keeps vacuum from cleaning up, jobs_running holds an entry for
-- every job that ever ran, so each completion reads them all. As text, the test
-- matches no index, and the rows are found by id.

-- Claim up to p_limit ready jobs from p_queues for worker p_worker_id, leasing
-- them for p_lease. Lowest priority value first, then the longest due, then the
-- oldest; paused queues are skipped and queue concurrency limits honoured.
--
-- p_after (priority, run_at, id), optional, is where the caller's previous claim
-- from the same single queue ended: the scan starts past it instead of at the
-- head of jobs_ready. While a long transaction keeps vacuum from removing the
-- index entries of jobs already claimed, the head fills with dead entries that
-- every claim would otherwise step over, and claims slow down in proportion to
-- the jobs processed since. A job that becomes ready behind the bound (a
-- released DAG child, a lower priority value) always comes with a NOTIFY, on
-- which the worker drops its bound; so does its fallback poll.
CREATE FUNCTION sluice.job_claim(
    p_worker_id text, p_queues text[], p_limit integer, p_lease interval,
    p_after_priority integer DEFAULT NULL, p_after_run_at timestamptz DEFAULT NULL,
    p_after_id bigint DEFAULT NULL
) RETURNS TABLE (
    id bigint, tenant sluice.tenant_name, queue sluice.queue_name, task sluice.task_name,
    payload jsonb, priority integer,
    attempt integer, max_attempts integer, timeout interval, run_id bigint, node text,
    run_at timestamptz, created_at timestamptz, started_at timestamptz
)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF p_limit < 1 THEN
        RETURN;
    END IF;
    -- The common case, one queue neither paused nor limited, as one plain
    -- statement: an ordered range scan of jobs_ready for that queue. It costs
    -- about half the general form below, and a claim is on the path from an
    -- INSERT to its handler starting.
    IF cardinality(p_queues) = 1 AND NOT EXISTS (
        SELECT 1 FROM sluice.queues q
         WHERE q.name = p_queues[1] AND (q.paused OR q.concurrency_limit IS NOT NULL))
    THEN
        RETURN QUERY
        WITH picked AS (
            SELECT j.id
              FROM sluice.jobs j
             WHERE j.state = 'ready' AND j.queue = p_queues[1]
               -- An index bound: without p_after it is below every job.
               AND (j.priority, j.run_at, j.id)
                   > (coalesce(p_after_priority, -2147483648),
                      coalesce(p_after_run_at, '-infinity'), coalesce(p_after_id, 0))
             ORDER BY j.priority, j.run_at, j.id
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        )
        UPDATE sluice.jobs j
           SET state = 'running',
               attempt = j.attempt + 1,
               worker_id = p_worker_id,
               lease_expires_at = now() + p_lease,
               started_at = now(),
               progress = NULL
          FROM picked
         WHERE j.id = picked.id
        RETURNING j.id, j.tenant, j.queue, j.task, j.payload, j.priority, j.attempt,
                  j.max_attempts, j.timeout, j.run_id, j.node, j.run_at, j.created_at, j.started_at;
        RETURN;
    END IF;
    -- A limited queue's running count must not be read by two claimers at once,
    -- or both would fill the same free slots: lock those queue rows (in name
    -- order) so limited claims take turns. The claim below is a new statement,
    -- so it counts with a snapshot taken after the lock was granted.
    PERFORM 1
       FROM sluice.queues q
      WHERE q.name = ANY(p_queues) AND q.concurrency_limit IS NOT NULL AND NOT q.paused
      ORDER BY q.name
        FOR NO KEY UPDATE;

    RETURN QUERY
    WITH lanes AS (
        SELECT l.name,
               CASE WHEN q.concurrency_limit IS NULL THEN p_limit
                    ELSE least(p_limit, q.concurrency_limit - (
                             SELECT count(*)::integer FROM sluice.jobs r
                              WHERE r.state = 'running' AND r.queue = l.name))
               END AS slots
          FROM unnest(p_queues) AS l(name)
          LEFT JOIN sluice.queues q ON q.name = l.name
         WHERE q.paused IS NOT TRUE
    ), picked AS (
        -- Per queue, a range scan of the jobs_ready index; SKIP LOCKED passes over
        -- rows another claimer is taking right now instead of waiting for it.
        SELECT c.id
          FROM lanes
         CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.run_at
                  FROM sluice.jobs j
                 WHERE j.state = 'ready' AND j.queue = lanes.name
                 ORDER BY j.priority, j.run_at, j.id
                 LIMIT greatest(lanes.slots, 0)
                   FOR UPDATE SKIP LOCKED) c
         ORDER BY c.priority, c.run_at, c.id
         LIMIT p_limit
    )
    UPDATE sluice.jobs j
       SET state = 'running',
           attempt = j.attempt + 1,
           worker_id = p_worker_id,
           lease_expires_at = now() + p_lease,
           started_at = now(),
           progress = NULL
      FROM picked
     WHERE j.id = picked.id
    RETURNING j.id, j.tenant, j.queue, j.task, j.payload, j.priority, j.attempt,
              j.max_attempts, j.timeout, j.run_id, j.node, j.run_at, j.created_at, j.started_at;
END
$$;

-- Renew the leases of the jobs a worker is still running, in one statement,
-- and return the ids renewed. A job missing from the answer is no longer this
-- worker's (cancelled, or rescued after a stall): the worker should stop it.
CREATE FUNCTION sluice.job_heartbeat(p_worker_id text, p_ids bigint[], p_lease interval)
    RETURNS SETOF bigint
    LANGUAGE sql AS $$
    UPDATE sluice.jobs
       SET lease_expires_at = now() + p_lease
     WHERE id = ANY(p_ids) AND state::text = 'running' AND worker_id = p_worker_id
    RETURNING id;
$$;

-- Record a running job's progress (any JSON the handler reports).
CREATE FUNCTION sluice.job_progress(p_worker_id text, p_id bigint, p_attempt integer, p_progress jsonb)
    RETURNS boolean
    LANGUAGE sql AS $$
    WITH updated AS (
        UPDATE sluice.jobs
           SET progress = p_progress
         WHERE id = p_id AND attempt = p_attempt AND state::text = 'running' AND worker_id = p_worker_id
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM updated);
$$;

-- Finish a batch of successful attempts (the arrays are parallel: job, attempt,
-- result, output tail). One statement for the whole batch: the jobs, their
-- attempt log rows, and (through jobs_after_update) their children and runs.
-- Returns the ids that were still this worker's to complete. PL/pgSQL, not SQL:
-- it keeps the statement's plan across calls, where a SQL function would plan
-- this CTE again for every batch.
CREATE FUNCTION sluice.job_complete_many(
    p_worker_id text, p_ids bigint[], p_attempts integer[], p_results jsonb[],
    p_outputs text[] DEFAULT NULL
) RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH done AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_results, p_outputs) AS d(id, attempt, result, output)
    ), completed AS (
        UPDATE sluice.jobs j
           SET state = 'succeeded', result = d.result, finished_at = now(), lease_expires_at = NULL
          FROM done d
         WHERE j.id = d.id AND j.attempt = d.attempt AND j.state::text = 'running' AND j.worker_id = p_worker_id
        RETURNING j.id, j.attempt, j.started_at, d.output
    ), logged AS (
        INSERT INTO sluice.job_attempts (job_id, attempt, worker_id, started_at, outcome, output)
        SELECT c.id, c.attempt, p_worker_id, c.started_at, 'succeeded', c.output FROM completed c
    )
    SELECT c.id FROM completed c;
END
$$;

-- Finish failed attempts (parallel arrays; each row names its worker, so the
-- rescuer can use it for jobs of many workers). With attempts left and a
-- retryable error the job is scheduled again after its backoff; otherwise it
-- ends `failed` with a dead-letter row holding its error history.
CREATE FUNCTION sluice.job_fail_rows(
    p_ids bigint[], p_attempts integer[], p_worker_ids text[], p_errors text[],
    p_retryable boolean[], p_outcomes text[], p_outputs text[]
) RETURNS TABLE (id bigint, state sluice.job_state, run_at timestamptz)
    LANGUAGE sql AS $$
    WITH f AS (
        SELECT *
          FROM unnest(p_ids, p_attempts, p_worker_ids, p_errors, p_retryable, p_outcomes, p_outputs)
            AS f(id, attempt, worker_id, error, retryable, outcome, output)
    ), decided AS (
        SELECT f.*,
               f.retryable AND j.attempt < j.max_attempts AS retry,
               now() + sluice.backoff_delay(j.backoff, j.backoff_base, j.backoff_max, j.attempt, random())
                   AS retry_at
          FROM f JOIN sluice.jobs j ON j.id = f.id
    ), failed AS (
        UPDATE sluice.jobs j
           SET state = CASE WHEN NOT d.retry THEN 'failed'::sluice.job_state
                            WHEN d.retry_at > now() THEN 'scheduled'
                            ELSE 'ready' END,
               run_at = CASE WHEN d.retry THEN d.retry_at ELSE j.run_at END,
               finished_at = CASE WHEN d.retry THEN NULL ELSE now() END,
               reason = CASE WHEN d.retry THEN NULL
                             WHEN d.retryable THEN 'attempts_exhausted'
                             ELSE 'non_retryable' END,
               last_error = d.error,
               lease_expires_at = NULL
          FROM decided d
         WHERE j.id = d.id AND j.attempt = d.attempt AND j.state::text = 'running' AND j.worker_id = d.worker_id
        RETURNING j.id, j.state, j.run_at, j.attempt, j.started_at, j.reason,
                  d.worker_id, d.error, d.outcome, d.output
    ), logged AS (
        INSERT INTO sluice.job_attempts (job_id, attempt, worker_id, started_at, outcome, error, output)
        SELECT x.id, x.attempt, x.worker_id, x.started_at, x.outcome, x.error, x.output FROM failed x
    ), dead AS (
        -- This statement's own attempt rows are not visible to it yet: add them by hand.
        INSERT INTO sluice.dead_letters (job_id, attempts, reason, last_error, errors)
        SELECT x.id, x.attempt, x.reason, x.error,
               coalesce((SELECT jsonb_agg(jsonb_build_object('attempt', a.attempt, 'outcome', a.outcome,
                                                             'error', a.error, 'finished_at', a.finished_at)
                                          ORDER BY a.attempt)
                           FROM sluice.job_attempts a WHERE a.job_id = x.id), '[]')
               || jsonb_build_array(jsonb_build_object('attempt', x.attempt, 'outcome', x.outcome,
                                                       'error', x.error, 'finished_at', now()))
          FROM failed x
         WHERE x.state = 'failed'
    )
    SELECT x.id, x.state, x.run_at FROM failed x;
$$;

-- A worker's failed attempts. p_retryable[i] false fails the job at once;
-- p_outcomes[i] is 'failed' (the handler raised) or 'timeout'.
CREATE FUNCTION sluice.job_fail_many(
    p_worker_id text, p_ids bigint[], p_attempts integer[], p_errors text[],
    p_retryable boolean[], p_outcomes text[] DEFAULT NULL, p_outputs text[] DEFAULT NULL
) RETURNS TABLE (id bigint, state sluice.job_state, run_at timestamptz)
    LANGUAGE sql AS $$
    SELECT * FROM sluice.job_fail_rows(
        p_ids, p_attempts, array_fill(p_worker_id, ARRAY[cardinality(p_ids)]), p_errors, p_retryable,
        coalesce(p_outcomes, array_fill('failed'::text, ARRAY[cardinality(p_ids)])), p_outputs);
$$;

-- Hand running jobs back without counting the attempt against them (graceful
-- shutdown past its grace period): they are ready again at once.
CREATE FUNCTION sluice.job_release_many(p_worker_id text, p_ids bigint[], p_attempts integer[])
    RETURNS SETOF bigint
    LANGUAGE sql AS $$
    WITH released AS (
        UPDATE sluice.jobs j
           SET state = 'ready', run_at = now(), max_attempts = j.max_attempts + 1, lease_expires_at = NULL
          FROM unnest(p_ids, p_attempts) AS r(id, attempt)
         WHERE j.id = r.id AND j.attempt = r.attempt AND j.state::text = 'running' AND j.worker_id = p_worker_id
        RETURNING j.id, j.attempt, j.started_at
    ), logged AS (
        INSERT INTO sluice.job_attempts (job_id, attempt, worker_id, started_at, outcome, error)
        SELECT r.id, r.attempt, p_worker_id, r.started_at, 'released', 'worker shut down'
          FROM released r
    )
    SELECT id FROM released;
$$;

-- Rescue jobs whose lease expired (their worker died, hung, or lost the
-- network): each counts as a failed attempt and is retried or dead-lettered.
CREATE FUNCTION sluice.job_rescue_expired(p_limit integer DEFAULT 1000)
    RETURNS TABLE (id bigint, state sluice.job_state, run_at timestamptz)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids      bigint[];
    v_attempts integer[];
    v_workers  text[];
BEGIN
    SELECT array_agg(e.id), array_agg(e.attempt), array_agg(e.worker_id)
      INTO v_ids, v_attempts, v_workers
      FROM (SELECT j.id, j.attempt, j.worker_id
              FROM sluice.jobs j
             WHERE j.state = 'running' AND j.lease_expires_at < now()
             ORDER BY j.id
             LIMIT p_limit
               FOR NO KEY UPDATE SKIP LOCKED) e;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT * FROM sluice.job_fail_rows(
        v_ids, v_attempts, v_workers,
        ARRAY(SELECT format('lease expired: worker %s stopped heartbeating', w) FROM unnest(v_workers) w),
        array_fill(true, ARRAY[cardinality(v_ids)]),
        array_fill('rescued'::text, ARRAY[cardinality(v_ids)]),
        NULL);
END
$$;

-- Make due scheduled jobs ready (their queues are notified by jobs_after_update).
-- Returns how many were promoted; call again while it returns p_limit.
CREATE FUNCTION sluice.job_promote_scheduled(p_limit integer DEFAULT 10000)
    RETURNS integer
    LANGUAGE sql AS $$
    WITH due AS (
        SELECT j.id
          FROM sluice.jobs j
         WHERE j.state = 'scheduled' AND j.run_at <= now()
         ORDER BY j.run_at
         LIMIT p_limit
           FOR NO KEY UPDATE SKIP LOCKED
    ), promoted AS (
        UPDATE sluice.jobs j SET state = 'ready' FROM due WHERE j.id = due.id RETURNING 1
    )
    SELECT count(*)::integer FROM promoted;
$$;

-- When the next scheduled job falls due (null when none is scheduled): the
-- maintenance loop sleeps until then instead of polling.
CREATE FUNCTION sluice.job_next_due() RETURNS timestamptz
    LANGUAGE sql STABLE AS $$
    SELECT min(run_at) FROM sluice.jobs WHERE state = 'scheduled';
$$;

-- Delete finished jobs older than p_retention, at most p_limit jobs and
-- p_limit / 100 runs per call, so each call is a short transaction. Failed jobs
-- waiting in the dead-letter queue are kept until resolved; jobs of a DAG run go
-- with their run, once the whole run is finished and old.
CREATE FUNCTION sluice.job_prune(p_retention interval, p_limit integer DEFAULT 1000)
    RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_jobs integer;
    v_runs integer;
BEGIN
    WITH doomed AS (
        SELECT j.id
          FROM sluice.jobs j
         WHERE j.state IN ('succeeded', 'failed', 'cancelled')
           AND j.finished_at < now() - p_retention
           AND j.run_id IS NULL
           AND NOT EXISTS (SELECT 1 FROM sluice.dead_letters d
                            WHERE d.job_id = j.id AND d.resolved_at IS NULL)
         ORDER BY j.finished_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    )
    DELETE FROM sluice.jobs j USING doomed WHERE j.id = doomed.id;
    GET DIAGNOSTICS v_jobs = ROW_COUNT;

    WITH doomed AS (
        SELECT r.id
          FROM sluice.dag_runs r
         WHERE r.state <> 'running'
           AND r.finished_at < now() - p_retention
           AND NOT EXISTS (SELECT 1 FROM sluice.jobs j
                             JOIN sluice.dead_letters d ON d.job_id = j.id AND d.resolved_at IS NULL
                            WHERE j.run_id = r.id)
         ORDER BY r.finished_at
         LIMIT greatest(p_limit / 100, 1)
           FOR UPDATE SKIP LOCKED
    )
    DELETE FROM sluice.dag_runs r USING doomed WHERE r.id = doomed.id;
    GET DIAGNOSTICS v_runs = ROW_COUNT;
    RETURN v_jobs + v_runs;
END
$$;
-- Operator and client actions on jobs: enqueue, cancel, retry, the DLQ.

-- Enqueue a job; any client that can call a function can use it. With an
-- idempotency key already used by the tenant, returns the existing job's id and
-- changes nothing. depends_on lists parent job ids (the job stays blocked until
-- they all succeed). The defaults are the column defaults of sluice.jobs.
CREATE FUNCTION sluice.enqueue(
    task            text,
    payload         jsonb DEFAULT '{}',
    queue           text DEFAULT 'default',
    priority        integer DEFAULT 0,
    run_at          timestamptz DEFAULT NULL,
    max_attempts    integer DEFAULT 5,
    depends_on      bigint[] DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    timeout         interval DEFAULT NULL,
    tenant          text DEFAULT 'default',
    backoff         text DEFAULT 'exponential',
    backoff_base    interval DEFAULT '1 second',
    backoff_max     interval DEFAULT '1 hour',
    notify          jsonb DEFAULT NULL
) RETURNS bigint
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO sluice.jobs AS j (tenant, queue, task, payload, priority, run_at, max_attempts,
                                  idempotency_key, timeout, backoff, backoff_base, backoff_max, notify)
    VALUES (enqueue.tenant, enqueue.queue, enqueue.task, enqueue.payload, enqueue.priority,
            coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.idempotency_key,
            enqueue.timeout, enqueue.backoff, enqueue.backoff_base, enqueue.backoff_max, enqueue.notify)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING j.id INTO v_id;

    IF v_id IS NULL THEN
        -- The key is taken. ON CONFLICT waited for the holder to commit, so this
        -- statement's fresh snapshot sees it.
        SELECT j.id INTO v_id
          FROM sluice.jobs j
         WHERE j.tenant = enqueue.tenant AND j.idempotency_key = enqueue.idempotency_key;
        RETURN v_id;
    END IF;

    IF cardinality(depends_on) > 0 THEN
        INSERT INTO sluice.job_edges (parent_id, child_id)
        SELECT DISTINCT p, v_id FROM unnest(depends_on) p;
    END IF;
    RETURN v_id;
END
$$;

-- Cancel jobs that have not finished. Pending ones simply end; a running one
-- loses its lease at once (its worker's late completion is ignored) and its
-- worker is told to stop it (jobs_after_update sends the NOTIFY). Descendants
-- are cancelled as upstream_failed. Returns the ids cancelled.
CREATE FUNCTION sluice.job_cancel(p_ids bigint[], p_reason text DEFAULT 'cancelled')
    RETURNS SETOF bigint
    LANGUAGE sql AS $$
    WITH locked AS (
        SELECT j.id, j.state AS was, j.attempt, j.worker_id, j.started_at
          FROM sluice.jobs j
         WHERE j.id = ANY(p_ids) AND NOT sluice.state_is_terminal(j.state)
         ORDER BY j.id
           FOR NO KEY UPDATE
    ), cancelled AS (
        UPDATE sluice.jobs j
           SET state = 'cancelled', reason = p_reason, finished_at = now(), lease_expires_at = NULL
          FROM locked l
         WHERE j.id = l.id
        RETURNING j.id
    ), logged AS (
        INSERT INTO sluice.job_attempts (job_id, attempt, worker_id, started_at, outcome, error)
        SELECT l.id, l.attempt, l.worker_id, l.started_at, 'cancelled', p_reason
          FROM locked l
         WHERE l.was = 'running'
    )
    SELECT id FROM cancelled;
$$;

-- Cancel one job (psql-friendly). True when it was cancelled by this call.
CREATE FUNCTION sluice.cancel_job(job_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM sluice.job_cancel(ARRAY[job_id]));
$$;

-- Retry failed or cancelled jobs. Each gets fresh attempts (as many as its
-- last round had) and runs again as soon as its parents allow; descendants that
-- were cancelled because of it come back to `blocked`; open dead-letter entries
-- are resolved as retried. A job with a parent that is itself failed or
-- cancelled (and not retried here) stays cancelled. Returns the ids retried.
CREATE FUNCTION sluice.job_retry(p_ids bigint[]) RETURNS SETOF bigint
    LANGUAGE plpgsql AS $$
DECLARE
    v_roots   bigint[];
    v_revived bigint[];
    v_all     bigint[];
BEGIN
    SELECT array_agg(j.id ORDER BY j.id) INTO v_roots
      FROM sluice.jobs j
     WHERE j.id = ANY(p_ids) AND j.state IN ('failed', 'cancelled');
    IF v_roots IS NULL THEN
        RETURN;
    END IF;

    WITH RECURSIVE revived(id) AS (
        SELECT e.child_id
          FROM sluice.job_edges e JOIN sluice.jobs c ON c.id = e.child_id
         WHERE e.parent_id = ANY(v_roots) AND c.state = 'cancelled' AND c.reason = 'upstream_failed'
        UNION
        SELECT e.child_id
          FROM revived r
          JOIN sluice.job_edges e ON e.parent_id = r.id
          JOIN sluice.jobs c ON c.id = e.child_id
         WHERE c.state = 'cancelled' AND c.reason = 'upstream_failed'
    )
    SELECT array_agg(id) INTO v_revived FROM revived WHERE id <> ALL (v_roots);

    -- Lock roots and revived descendants together, in id order; re-check states under the lock.
    SELECT array_agg(j.id ORDER BY j.id) INTO v_all
      FROM (SELECT j.id FROM sluice.jobs j
             WHERE j.id = ANY(v_roots || coalesce(v_revived, '{}'))
               AND j.state IN ('failed', 'cancelled')
             ORDER BY j.id
               FOR NO KEY UPDATE) j;

    -- Every job counts the parents it must wait for again; parents being
    -- retried here are not succeeded, so they count.
    UPDATE sluice.jobs j
       SET state = CASE WHEN w.n > 0 THEN 'blocked'::sluice.job_state ELSE 'ready' END,
           pending_parents = w.n,
           max_attempts = CASE WHEN j.id = ANY(v_roots)
                               THEN j.attempt + j.max_attempts - coalesce(
                                        (SELECT max(d.attempts) FROM sluice.dead_letters d
                                          WHERE d.job_id = j.id AND d.resolution = 'retried'), 0)
                               ELSE j.max_attempts END,
           run_at = now(), reason = NULL, finished_at = NULL, result = NULL,
           worker_id = NULL, lease_expires_at = NULL
      FROM (SELECT x.id, (SELECT count(*)::integer
                            FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                           WHERE e.child_id = x.id AND p.state <> 'succeeded') AS n
              FROM unnest(v_all) AS x(id)) w
     WHERE j.id = w.id;

    UPDATE sluice.dead_letters d
       SET resolved_at = now(), resolution = 'retried'
     WHERE d.job_id = ANY(v_all) AND d.resolved_at IS NULL;

    -- A job whose parent is failed or cancelled, and was not retried here, cannot
    -- run: cancel it again (jobs_after_update cascades to its descendants).
    PERFORM sluice.job_cancel(array_agg(DISTINCT e.child_id), 'upstream_failed')
       FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
      WHERE e.child_id = ANY(v_all) AND p.state IN ('failed', 'cancelled')
     HAVING count(*) > 0;

    RETURN QUERY
    SELECT j.id FROM sluice.jobs j
     WHERE j.id = ANY(v_roots) AND NOT sluice.state_is_terminal(j.state)
     ORDER BY j.id;
END
$$;

-- Retry a job from the dead-letter queue (psql-friendly). True when retried.
CREATE FUNCTION sluice.retry_dead(job_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    SELECT EXISTS (
        SELECT 1 FROM sluice.job_retry(ARRAY(
            SELECT d.job_id FROM sluice.dead_letters d
             WHERE d.job_id = retry_dead.job_id AND d.resolved_at IS NULL)));
$$;

-- Resolve a dead-letter entry without retrying: the job stays failed and may be pruned.
CREATE FUNCTION sluice.dead_letter_discard(job_id bigint) RETURNS boolean
    LANGUAGE sql AS $$
    WITH resolved AS (
        UPDATE sluice.dead_letters d
           SET resolved_at = now(), resolution = 'discarded'
         WHERE d.job_id = dead_letter_discard.job_id AND d.resolved_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM resolved);
$$;

-- Cancel every unfinished node of a run; the run then ends `cancelled`.
CREATE FUNCTION sluice.dag_run_cancel(p_run_id bigint) RETURNS integer
    LANGUAGE sql AS $$
    SELECT count(*)::integer
      FROM sluice.job_cancel(ARRAY(
          SELECT j.id FROM sluice.jobs j
           WHERE j.run_id = p_run_id AND j.state IN ('blocked', 'scheduled', 'ready', 'running')),
          'run cancelled');
$$;

-- Retry a run's failed nodes and the ones cancelled by hand; the nodes cancelled
-- because of them come back with them. Returns how many nodes were retried.
CREATE FUNCTION sluice.dag_run_retry(p_run_id bigint) RETURNS integer
    LANGUAGE sql AS $$
    SELECT count(*)::integer
      FROM sluice.job_retry(ARRAY(
          SELECT j.id FROM sluice.jobs j
           WHERE j.run_id = p_run_id
             AND (j.state = 'failed' OR (j.state = 'cancelled' AND j.reason IS DISTINCT FROM 'upstream_failed'))));
$$;
-- Queue administration. Workers hear of a pause at once (NOTIFY on
-- sluice_control), and the claim skips paused queues whatever a worker has heard,
-- so a lost notification never lets a paused queue run.

CREATE FUNCTION sluice.queue_set_paused(p_name text, p_paused boolean) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sluice.queues AS q (name, paused) VALUES (p_name, p_paused)
    ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE SET paused = p_paused, updated_at = now();
    PERFORM pg_notify('sluice_control', json_build_object(
        CASE WHEN p_paused THEN 'pause_queue' ELSE 'resume_queue' END, p_name)::text);
    IF NOT p_paused THEN
        -- Its ready jobs may have waited: wake workers as if they had just arrived.
        PERFORM pg_notify('sluice_jobs', p_name);
    END IF;
END
$$;

CREATE FUNCTION sluice.pause_queue(name text) RETURNS void
    LANGUAGE sql
RETURN sluice.queue_set_paused(name, true);

CREATE FUNCTION sluice.resume_queue(name text) RETURNS void
    LANGUAGE sql
RETURN sluice.queue_set_paused(name, false);

-- Limit how many jobs of a queue run at once across all workers (null: no limit).
CREATE FUNCTION sluice.queue_set_concurrency(p_name text, p_limit integer) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sluice.queues AS q (name, concurrency_limit) VALUES (p_name, p_limit)
    ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE SET concurrency_limit = p_limit, updated_at = now();
    -- A raised limit frees slots: let workers claim into them.
    PERFORM pg_notify('sluice_jobs', p_name);
END
$$;
-- The worker registry and the maintenance leader lease.

CREATE FUNCTION sluice.worker_register(
    p_id text, p_hostname text, p_pid integer, p_queues text[], p_concurrency integer,
    p_heartbeat_interval interval, p_version text
) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO sluice.workers AS w (id, hostname, pid, queues, concurrency, heartbeat_interval, version)
    VALUES (p_id, p_hostname, p_pid, p_queues, p_concurrency, p_heartbeat_interval, p_version)
    ON CONFLICT (id) DO UPDATE
       SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
           concurrency = EXCLUDED.concurrency, heartbeat_interval = EXCLUDED.heartbeat_interval,
           version = EXCLUDED.version, heartbeat_at = now(), stopped_at = NULL;
$$;

-- The worker is alive; answers whether it is paused (the fallback when a
-- pause NOTIFY was missed). Null when the row is gone (pruned as dead).
CREATE FUNCTION sluice.worker_heartbeat(p_id text) RETURNS boolean
    LANGUAGE sql AS $$
    UPDATE sluice.workers SET heartbeat_at = now() WHERE id = p_id RETURNING paused;
$$;

CREATE FUNCTION sluice.worker_stop(p_id text) RETURNS void
    LANGUAGE sql AS $$
    UPDATE sluice.workers SET stopped_at = now() WHERE id = p_id;
$$;

-- Pause (or resume) one worker: a paused worker stops claiming and finishes
-- what it runs. It hears at once by NOTIFY, or at its next heartbeat.
CREATE FUNCTION sluice.worker_set_paused(p_id text, p_paused boolean) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sluice.workers SET paused = p_paused WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('sluice_control', json_build_object(
        CASE WHEN p_paused THEN 'pause_worker' ELSE 'resume_worker' END, p_id)::text);
    RETURN true;
END
$$;

-- Forget workers that stopped, or stopped heartbeating, more than p_age ago.
CREATE FUNCTION sluice.worker_prune(p_age interval) RETURNS integer
    LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM sluice.workers
         WHERE coalesce(stopped_at, heartbeat_at) < now() - p_age
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;

-- Take or keep the lease named p_name for p_ttl. True when p_holder holds it
-- now: it was free, expired, or already p_holder's. Uses the database clock, so
-- hosts with skewed clocks still agree.
CREATE FUNCTION sluice.leader_acquire(p_name text, p_holder text, p_ttl interval) RETURNS boolean
    LANGUAGE sql AS $$
    WITH taken AS (
        INSERT INTO sluice.leaders AS l (name, holder, elected_at, expires_at)
        VALUES (p_name, p_holder, now(), now() + p_ttl)
        ON CONFLICT (name) DO UPDATE
           SET holder = EXCLUDED.holder,
               expires_at = EXCLUDED.expires_at,
               elected_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.elected_at ELSE now() END
         WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM taken);
$$;

-- Give the lease up (clean shutdown) so another candidate need not wait for it to expire.
CREATE FUNCTION sluice.leader_release(p_name text, p_holder text) RETURNS void
    LANGUAGE sql AS $$
    DELETE FROM sluice.leaders WHERE name = p_name AND holder = p_holder;
$$;
-- Firing cron schedules. The maintenance leader computes occurrences with
-- croniter (time zones, misfire policy) and hands them to sluice.schedule_fire,
-- which enqueues them and advances the schedule in one transaction. Each
-- occurrence carries the idempotency key 'schedule:<id>:<occurrence in UTC>', so
-- it starts one job (or DAG run) however many schedulers fire it, and across restarts.

-- A change to what or when a schedule runs, from the API or psql alike, makes
-- the scheduler recompute it: next_fire_at is cleared and updated_at moves on.
-- updated_at also serves as the scheduler's version check (see schedule_fire).
CREATE FUNCTION sluice.schedules_before_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.cron, NEW.timezone, NEW.job, NEW.dag_name, NEW.dag_params, NEW.misfire, NEW.enabled, NEW.tenant)
       IS DISTINCT FROM
       (OLD.cron, OLD.timezone, OLD.job, OLD.dag_name, OLD.dag_params, OLD.misfire, OLD.enabled, OLD.tenant)
    THEN
        NEW.next_fire_at := NULL;
        NEW.updated_at := greatest(now(), OLD.updated_at + interval '1 microsecond');
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER schedules_before_update BEFORE UPDATE ON sluice.schedules
    FOR EACH ROW EXECUTE FUNCTION sluice.schedules_before_update();

-- A duration in a schedule's job arguments: a number of seconds, or interval
-- text ('5 minutes'); JSON null or absent is SQL null.
CREATE FUNCTION sluice.schedule_interval(value jsonb) RETURNS interval
    LANGUAGE sql IMMUTABLE
RETURN CASE jsonb_typeof(value)
           WHEN 'number' THEN make_interval(secs => value::text::double precision)
           WHEN 'string' THEN (value #>> '{}')::interval
       END;

-- Fire schedule p_id: start one job or DAG run per occurrence in p_occurrences
-- and set its next occurrence, or only record p_error (an invalid cron
-- expression, say). p_seen is the schedule's updated_at when the scheduler read
-- it: if it changed since, the schedule was edited and nothing is done (null is
-- returned; the next pass recomputes it). Otherwise returns how many occurrences
-- were started. A failure to start (no such DAG, bad job arguments) is kept in
-- last_error and the schedule moves on, rather than failing every pass.
CREATE FUNCTION sluice.schedule_fire(
    p_id bigint, p_seen timestamptz, p_occurrences timestamptz[], p_next_fire_at timestamptz,
    p_error text DEFAULT NULL
) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_s     sluice.schedules;
    v_at    timestamptz;
    v_key   text;
    v_error text := p_error;
BEGIN
    SELECT * INTO v_s FROM sluice.schedules s
     WHERE s.id = p_id AND s.updated_at = p_seen AND s.enabled
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF v_error IS NULL AND cardinality(p_occurrences) > 0 THEN
        BEGIN
            FOREACH v_at IN ARRAY p_occurrences LOOP
                v_key := format('schedule:%s:%s', v_s.id,
                                to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
                IF v_s.dag_name IS NOT NULL THEN
                    PERFORM sluice.dag_run_start(v_s.tenant, v_s.dag_name, v_s.dag_params, NULL, v_key, v_s.id);
                ELSE
                    PERFORM sluice.enqueue(
                        task            => v_s.job ->> 'task',
                        payload         => coalesce(v_s.job -> 'payload', '{}'),
                        queue           => coalesce(v_s.job ->> 'queue', 'default'),
                        priority        => coalesce((v_s.job ->> 'priority')::integer, 0),
                        max_attempts    => coalesce((v_s.job ->> 'max_attempts')::integer, 5),
                        idempotency_key => v_key,
                        timeout         => sluice.schedule_interval(v_s.job -> 'timeout'),
                        tenant          => v_s.tenant,
                        backoff         => coalesce(v_s.job ->> 'backoff', 'exponential'),
                        backoff_base    => coalesce(sluice.schedule_interval(v_s.job -> 'backoff_base'), '1 second'),
                        backoff_max     => coalesce(sluice.schedule_interval(v_s.job -> 'backoff_max'), '1 hour'),
                        notify          => nullif(v_s.job -> 'notify', 'null'));
                END IF;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            -- Nothing of this firing is kept; the error is, and the schedule moves on.
            v_error := SQLERRM;
        END;
    END IF;

    UPDATE sluice.schedules s
       SET next_fire_at = p_next_fire_at,
           last_fired_at = CASE WHEN v_error IS NULL AND cardinality(p_occurrences) > 0
                                THEN (SELECT max(o) FROM unnest(p_occurrences) o)
                                ELSE s.last_fired_at END,
           last_error = v_error
     WHERE s.id = p_id;
    RETURN CASE WHEN v_error IS NULL THEN coalesce(cardinality(p_occurrences), 0) ELSE 0 END;
END
$$;
-- The channels a worker listens on, in one place:
--   sluice_jobs     payload: a queue name; ready jobs arrived there (one per statement and queue)
--   sluice_control  payload: JSON, {"cancel": [ids]}, {"pause_queue": name},
--                   {"resume_queue": name}, {"pause_worker": id}, {"resume_worker": id}
CREATE FUNCTION sluice.worker_listen() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    LISTEN sluice_jobs;
    LISTEN sluice_control;
END
$$;
-- Admin views, for psql and the dashboard. Each reads through an index or one
-- pass over sluice.jobs, so they stay well under a second at a million jobs.

-- Which worker holds which running job, until when. A lease is two columns on
-- the job row rather than a table of its own: claiming writes it in the same
-- row version as the state, and a heartbeat touches no index (a HOT update).
CREATE VIEW sluice.leases AS
SELECT j.id AS job_id, j.worker_id, j.attempt, j.started_at AS claimed_at,
       j.lease_expires_at AS expires_at
  FROM sluice.jobs j
 WHERE j.state = 'running';

-- Per queue: jobs in each state, how long the oldest ready job has waited, and settings.
CREATE VIEW sluice.queue_stats AS
WITH counts AS (
    SELECT j.queue,
           count(*) FILTER (WHERE j.state = 'blocked')   AS blocked,
           count(*) FILTER (WHERE j.state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE j.state = 'ready')     AS ready,
           count(*) FILTER (WHERE j.state = 'running')   AS running,
           count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE j.state = 'failed')    AS failed,
           count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled,
           min(j.run_at) FILTER (WHERE j.state = 'ready') AS oldest_ready_at
      FROM sluice.jobs j
     GROUP BY j.queue
)
SELECT coalesce(c.queue, q.name) AS queue,
       coalesce(c.blocked, 0) AS blocked,
       coalesce(c.scheduled, 0) AS scheduled,
       coalesce(c.ready, 0) AS ready,
       coalesce(c.running, 0) AS running,
       coalesce(c.succeeded, 0) AS succeeded,
       coalesce(c.failed, 0) AS failed,
       coalesce(c.cancelled, 0) AS cancelled,
       greatest(now() - c.oldest_ready_at, '0') AS oldest_ready_age,
       coalesce(q.paused, false) AS paused,
       q.concurrency_limit
  FROM counts c
  FULL JOIN sluice.queues q ON q.name = c.queue;

-- Running jobs with their worker and lease.
CREATE VIEW sluice.running_jobs AS
SELECT j.id AS job_id, j.tenant, j.queue, j.task, j.attempt, j.max_attempts, j.run_id,
       j.worker_id, j.started_at AS since, now() - j.started_at AS running_for,
       j.lease_expires_at, j.progress
  FROM sluice.jobs j
 WHERE j.state = 'running';

-- Running jobs whose lease has expired: their worker is gone; the rescuer will retry them.
CREATE VIEW sluice.stuck_jobs AS
SELECT r.*, now() - r.lease_expires_at AS expired_for
  FROM sluice.running_jobs r
 WHERE r.lease_expires_at < now();

-- Unresolved dead letters, newest first.
CREATE VIEW sluice.dead_letter_queue AS
SELECT d.id AS dead_letter_id, d.job_id, j.tenant, j.queue, j.task, j.payload, j.run_id,
       d.attempts, d.reason, d.last_error, d.errors, d.failed_at
  FROM sluice.dead_letters d
  JOIN sluice.jobs j ON j.id = d.job_id
 WHERE d.resolved_at IS NULL
 ORDER BY d.failed_at DESC, d.id DESC;

-- Per DAG run: nodes in each state and how much is done.
CREATE VIEW sluice.dag_run_progress AS
SELECT r.id AS run_id, r.tenant, r.dag_name, r.dag_version, r.state, r.created_at, r.finished_at,
       coalesce(n.total, 0) AS nodes,
       coalesce(n.blocked, 0) AS blocked,
       coalesce(n.scheduled, 0) AS scheduled,
       coalesce(n.ready, 0) AS ready,
       coalesce(n.running, 0) AS running,
       coalesce(n.succeeded, 0) AS succeeded,
       coalesce(n.failed, 0) AS failed,
       coalesce(n.cancelled, 0) AS cancelled,
       CASE WHEN coalesce(n.total, 0) = 0 THEN 0
            ELSE round(100.0 * (n.succeeded + n.failed + n.cancelled) / n.total, 1) END AS percent_done
  FROM sluice.dag_runs r
  LEFT JOIN LATERAL (
      SELECT count(*) AS total,
             count(*) FILTER (WHERE j.state = 'blocked')   AS blocked,
             count(*) FILTER (WHERE j.state = 'scheduled') AS scheduled,
             count(*) FILTER (WHERE j.state = 'ready')     AS ready,
             count(*) FILTER (WHERE j.state = 'running')   AS running,
             count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
             count(*) FILTER (WHERE j.state = 'failed')    AS failed,
             count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled
        FROM sluice.jobs j
       WHERE j.run_id = r.id) n ON true;

-- Workers, their last heartbeat, how many jobs each runs, and whether it is
-- alive (stopped cleanly: no; silent for three heartbeat intervals: no).
CREATE VIEW sluice.worker_status AS
SELECT w.id AS worker_id, w.hostname, w.pid, w.queues, w.concurrency, w.paused,
       w.started_at, w.heartbeat_at, w.stopped_at,
       coalesce(r.running, 0) AS running,
       w.stopped_at IS NULL AND w.heartbeat_at > now() - 3 * w.heartbeat_interval AS alive
  FROM sluice.workers w
  LEFT JOIN (SELECT j.worker_id, count(*) AS running
               FROM sluice.jobs j
              WHERE j.state = 'running'
              GROUP BY j.worker_id) r ON r.worker_id = w.id;

-- Jobs finished per minute and queue over the last hour.
CREATE VIEW sluice.throughput AS
SELECT date_trunc('minute', j.finished_at) AS minute, j.queue,
       count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE j.state = 'failed')    AS failed,
       count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled
  FROM sluice.jobs j
 WHERE j.state IN ('succeeded', 'failed', 'cancelled')
   AND j.finished_at >= now() - interval '1 hour'
 GROUP BY 1, 2
 ORDER BY 1 DESC, 2;
-- What the REST API adds to the engine: request fingerprints behind idempotency
-- keys, the job resource as the API shows it, versioned DAG saves, and run
-- submission that tells a replay from a creation.

-- A digest of the API request that used an idempotency key. A replay with the
-- same body gets the original back; a different body under the same key is
-- refused (409) instead of silently answered with a job the client did not ask
-- for. Null for rows written by plain SQL, which are always treated as replays.
ALTER TABLE sluice.jobs ADD COLUMN request_fingerprint text;
ALTER TABLE sluice.dag_runs ADD COLUMN request_fingerprint text;

-- A job as the REST API returns it: intervals as seconds (JSON has no interval
-- type), engine bookkeeping (pending_parents, fingerprints) left out.
CREATE VIEW sluice.api_jobs AS
SELECT j.id, j.tenant, j.queue, j.task, j.state, j.payload, j.priority,
       j.attempt, j.max_attempts, j.backoff,
       extract(epoch FROM j.backoff_base)::double precision AS backoff_base,
       extract(epoch FROM j.backoff_max)::double precision AS backoff_max,
       extract(epoch FROM j.timeout)::double precision AS timeout,
       j.run_at, j.created_at, j.started_at, j.finished_at,
       j.result, j.last_error, j.reason, j.run_id, j.node, j.idempotency_key,
       j.notify, j.progress, j.worker_id, j.lease_expires_at
  FROM sluice.jobs j;

-- A DAG run as the REST API returns it: the run and its node counts per state.
CREATE VIEW sluice.api_runs AS
SELECT p.run_id AS id, p.tenant, p.dag_name, p.dag_version, p.state, r.params, r.notify,
       r.idempotency_key, r.schedule_id, p.created_at, p.finished_at, p.nodes,
       p.blocked, p.scheduled, p.ready, p.running, p.succeeded, p.failed, p.cancelled,
       p.percent_done::double precision AS percent_done
  FROM sluice.dag_run_progress p
  JOIN sluice.dag_runs r ON r.id = p.run_id;

-- Save a DAG definition as its next version, unless it equals the newest
-- version (saving the same file twice is not a change). Saves of one DAG take
-- turns on a transaction-level advisory lock, which, unlike a session lock,
-- works behind PgBouncer in transaction mode; the first save has no row to lock.
CREATE FUNCTION sluice.dag_save(p_tenant text, p_name text, p_definition jsonb, p_created_by text)
    RETURNS TABLE (version integer, created boolean)
    LANGUAGE plpgsql AS $$
DECLARE
    v_latest sluice.dags;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('sluice.dags:' || p_tenant || ':' || p_name, 0));
    SELECT * INTO v_latest
      FROM sluice.dags d
     WHERE d.tenant = p_tenant AND d.name = p_name
     ORDER BY d.version DESC
     LIMIT 1;
    IF FOUND AND v_latest.definition = p_definition THEN
        RETURN QUERY SELECT v_latest.version, false;
        RETURN;
    END IF;
    INSERT INTO sluice.dags (tenant, name, version, definition, created_by)
    VALUES (p_tenant, p_name, coalesce(v_latest.version, 0) + 1, p_definition, p_created_by);
    RETURN QUERY SELECT coalesce(v_latest.version, 0) + 1, true;
END
$$;

-- Start a run of a validated definition for the API: inline (no name), or a
-- stored DAG's version. Answers the run, whether this call created it, and the
-- fingerprint of the request that did: on a replay under an idempotency key
-- the caller compares it with its own.
CREATE FUNCTION sluice.dag_run_submit(
    p_tenant          text,
    p_definition      jsonb,
    p_params          jsonb DEFAULT '{}',
    p_dag_name        text DEFAULT NULL,
    p_dag_version     integer DEFAULT NULL,
    p_notify          jsonb DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_fingerprint     text DEFAULT NULL
) RETURNS TABLE (run_id bigint, created boolean, request_fingerprint text)
    LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint;
    v_fp  text;
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        SELECT r.id, r.request_fingerprint INTO v_run, v_fp
          FROM sluice.dag_runs r
         WHERE r.tenant = p_tenant AND r.idempotency_key = p_idempotency_key;
        IF FOUND THEN
            RETURN QUERY SELECT v_run, false, v_fp;
            RETURN;
        END IF;
    END IF;

    v_run := sluice.dag_run_create(p_tenant, p_definition, p_params, p_dag_name, p_dag_version,
                                   p_notify, p_idempotency_key);
    IF p_idempotency_key IS NULL THEN
        RETURN QUERY SELECT v_run, true, NULL::text;
        RETURN;
    END IF;

    -- A concurrent request with the same key may have won the race: dag_run_create
    -- then answered its run, whose fingerprint is already set (this UPDATE reads
    -- the latest committed row version), so it is left alone.
    UPDATE sluice.dag_runs r SET request_fingerprint = p_fingerprint
     WHERE r.id = v_run AND r.request_fingerprint IS NULL;
    IF FOUND THEN
        RETURN QUERY SELECT v_run, true, p_fingerprint;
    ELSE
        RETURN QUERY SELECT r.id, false, r.request_fingerprint FROM sluice.dag_runs r WHERE r.id = v_run;
    END IF;
END
$$;
