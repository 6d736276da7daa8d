-- The worker registry and the maintenance leader lease.

CREATE FUNCTION sluice.worker_register(
    p_id text, p_hostname text, p_pid integer, p_queues text[], p_concurrency integer,
    p_heartbeat_interval interval, p_version text, p_tasks text[] DEFAULT NULL
) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO sluice.workers AS w (id, hostname, pid, queues, concurrency, heartbeat_interval, version, tasks)
    VALUES (p_id, p_hostname, p_pid, p_queues, p_concurrency, p_heartbeat_interval, p_version, p_tasks)
    ON CONFLICT (id) DO UPDATE
       SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
           concurrency = EXCLUDED.concurrency, heartbeat_interval = EXCLUDED.heartbeat_interval,
           version = EXCLUDED.version, tasks = EXCLUDED.tasks, heartbeat_at = now(), stopped_at = NULL;
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
    DELETE FROM sluice.queue_waiters WHERE worker_id = p_id;
$$;

-- A worker whose claim came back short is about to sleep on LISTEN for
-- p_queues: from now on, ready jobs there are notified. Call
-- sluice.worker_wait_barrier next, then claim once more before sleeping.
CREATE FUNCTION sluice.worker_waiting(p_id text, p_queues text[]) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO sluice.queue_waiters (queue, worker_id)
    SELECT DISTINCT q, p_id FROM unnest(p_queues) q
    ON CONFLICT DO NOTHING;
$$;

-- True when no transaction that inserted ready jobs into p_queues without
-- seeing this worker's waiter rows is still open: a claim after it sees their
-- jobs. False: try again shortly (and claim meanwhile). Never waits.
CREATE FUNCTION sluice.worker_wait_barrier(p_queues text[]) RETURNS boolean
    LANGUAGE sql AS $$
    SELECT coalesce(bool_and(pg_try_advisory_xact_lock(sluice.waiter_key(q))), true)
      FROM unnest(p_queues) q;
$$;

-- The worker is busy (its claims come back full): no NOTIFY needed for it.
CREATE FUNCTION sluice.worker_busy(p_id text) RETURNS void
    LANGUAGE sql AS $$
    DELETE FROM sluice.queue_waiters WHERE worker_id = p_id;
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
        RETURNING id
    ), waiters AS (
        DELETE FROM sluice.queue_waiters w USING gone g WHERE w.worker_id = g.id
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
