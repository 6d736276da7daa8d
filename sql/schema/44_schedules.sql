-- Firing cron schedules. The maintenance leader computes occurrences with
-- croniter (time zones, misfire policy) and hands them to sluice.schedule_fire,
-- which enqueues them and advances the schedule in one transaction. Each
-- occurrence carries an idempotency key naming its wall-clock time, so it
-- starts one job (or DAG run) however many schedulers fire it, and across
-- restarts: 'schedule:<id>:2026-10-25T02:30:00[Europe/Berlin]' in a local time
-- zone, 'schedule:<id>:2026-10-25T02:30:00Z' in UTC. Keyed by the UTC instant
-- instead, the 02:30 that a fall-back night shows twice would be two
-- occurrences; by the wall clock it is one (docs/worker.md states the rule).

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

-- The idempotency key of occurrence p_at of schedule p_id in time zone p_timezone.
CREATE FUNCTION sluice.schedule_occurrence_key(p_id bigint, p_timezone text, p_at timestamptz)
    RETURNS text
    LANGUAGE sql STABLE
RETURN format('schedule:%s:%s', p_id,
              CASE WHEN p_timezone IN ('UTC', 'Etc/UTC')
                   THEN to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                   ELSE to_char(p_at AT TIME ZONE p_timezone, 'YYYY-MM-DD"T"HH24:MI:SS')
                        || '[' || p_timezone || ']'
              END);

-- Fire schedule p_id: start one job or DAG run per occurrence in p_occurrences
-- and set its next occurrence, p_next_fire_at. A null p_next_fire_at means the
-- schedule cannot fire again (no next occurrence, an invalid expression or
-- time zone): it is disabled, with p_error (or 'no next occurrence') as the
-- reason in last_error; editing and enabling it again makes the scheduler
-- compute it afresh. p_seen is the schedule's updated_at when the scheduler
-- read it: if it changed since, the schedule was edited and nothing is done
-- (null is returned; the next pass recomputes it). Otherwise returns how many
-- occurrences were started. A failure to start (no such DAG, bad job
-- arguments) is kept in last_error and the schedule moves on, rather than
-- failing every pass.
CREATE FUNCTION sluice.schedule_fire(
    p_id bigint, p_seen timestamptz, p_occurrences timestamptz[], p_next_fire_at timestamptz,
    p_error text DEFAULT NULL
) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    v_s     sluice.schedules;
    v_at    timestamptz;
    v_key   text;
    v_error text;
BEGIN
    SELECT * INTO v_s FROM sluice.schedules s
     WHERE s.id = p_id AND s.updated_at = p_seen AND s.enabled
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF cardinality(p_occurrences) > 0 THEN
        BEGIN
            FOREACH v_at IN ARRAY p_occurrences LOOP
                v_key := sluice.schedule_occurrence_key(v_s.id, v_s.timezone, v_at);
                IF v_s.dag_name IS NOT NULL THEN
                    PERFORM sluice.dag_run_start(v_s.tenant, v_s.dag_name, v_s.dag_params, NULL, v_key, v_s.id, v_at);
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
           enabled = p_next_fire_at IS NOT NULL,
           last_fired_at = CASE WHEN v_error IS NULL AND cardinality(p_occurrences) > 0
                                THEN (SELECT max(o) FROM unnest(p_occurrences) o)
                                ELSE s.last_fired_at END,
           last_error = CASE WHEN p_next_fire_at IS NULL
                             THEN concat_ws('; ', v_error, coalesce(p_error, 'no next occurrence'))
                             ELSE v_error END
     WHERE s.id = p_id;
    RETURN CASE WHEN v_error IS NULL THEN coalesce(cardinality(p_occurrences), 0) ELSE 0 END;
END
$$;

-- Take schedule p_id out of the rotation, with p_error as the reason: the
-- scheduler's last resort for a schedule it cannot read or fire. False when
-- there is no such schedule.
CREATE FUNCTION sluice.schedule_disable(p_id bigint, p_error text) RETURNS boolean
    LANGUAGE sql AS $$
    WITH disabled AS (
        UPDATE sluice.schedules s SET enabled = false, last_error = p_error
         WHERE s.id = p_id
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM disabled);
$$;
