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
