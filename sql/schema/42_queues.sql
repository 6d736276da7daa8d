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
