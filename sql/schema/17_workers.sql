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

-- Workers about to sleep on LISTEN for a queue: the ones a NOTIFY of ready jobs
-- would wake (sluice.notify_ready). A worker's rows are written when its claim
-- first comes back short and deleted when a claim comes back full (a busy
-- worker claims again without being told), so this holds a few rows, written
-- on idle/busy transitions only; worker_stop and worker_prune remove them. No
-- foreign key: a claimer that never registered a worker row still gets its
-- wake-ups. Unlogged would lose the rows, and the wake-ups, on a crash restart.
CREATE TABLE sluice.queue_waiters (
    queue     text NOT NULL,
    worker_id text NOT NULL,
    since     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, worker_id)
);
CREATE INDEX queue_waiters_worker ON sluice.queue_waiters (worker_id);

-- The advisory lock that orders an inserter's waiter probe against a worker
-- going to sleep on queue p_queue (sluice.notify_ready).
CREATE FUNCTION sluice.waiter_key(p_queue text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN hashtextextended('sluice.waiters:' || p_queue, 0);

-- Leader election for maintenance: a row with an expiry, renewed by its holder.
-- Unlike session advisory locks it works through PgBouncer in transaction mode,
-- and a holder that dies loses the lease when it expires.
CREATE TABLE sluice.leaders (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
