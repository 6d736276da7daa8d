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
