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
