-- Live worker registry. A worker upserts its row at start, heartbeats it, and
-- marks it stopped on a clean exit; a row whose heartbeat is old is a dead worker.
CREATE TABLE sluice.workers (
    id                 text PRIMARY KEY,
    hostname           text NOT NULL,
    pid                integer NOT NULL,
    queues             text[] NOT NULL,
    -- The task names it has handlers for: it claims only those (job_claim's
    -- p_tasks). Null: any task (a client claiming through SQL without naming them).
    tasks              text[],
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
