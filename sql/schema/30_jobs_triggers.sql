-- Triggers on sluice.jobs: the database, not the client, decides a new job's
-- state, wakes workers, releases DAG children and settles runs. They fire for
-- every writer alike: the API, the worker, psql, or another application's INSERT.
--
-- One exception, on purpose: the engine's claim (sluice.job_claim_once) updates
-- sluice.jobs_live by name, and a statement trigger fires only for the table
-- its statement names, so the AFTER UPDATE statement triggers below (and
-- jobs_wake_waiters, 48_waiters.sql) do not run for claims. Neither has
-- anything to do for one (a claim's rows are all `running`, none ended), and
-- running them was a good part of a claim's backend CPU (40_job_lifecycle.sql,
-- job_claim_once). A statement trigger added here that must see claims goes on
-- sluice.jobs_live (a row trigger on sluice.jobs is cloned to it and fires
-- for claims too); tests/engine/test_claim.py checks that claims call neither.

-- A new job is `ready`, or `scheduled` when its run_at is in the future. The WHEN
-- clause keeps the common case (ready now, no state given) free of a function call.
-- sluice.dag_run_create inserts its nodes with their parents already counted
-- (`blocked`, pending_parents set) under the transaction-local setting
-- sluice.engine_insert, which the clause reads through sluice.engine_inserting
-- (below) rather than in the function: there it cost every node the engine
-- inserts blocked a PL/pgSQL call (46,600 -> 54,400 instructions per row).
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

-- Whether this statement inserts for the engine (sluice.engine_insert is on), for
-- jobs_before_insert's WHEN clause and nothing else. Declared IMMUTABLE, which it
-- is not, so that PostgreSQL folds the call to a constant where it prepares the
-- clause: once per INSERT statement (per result relation, never in a cached plan),
-- the first time a row reaches the trigger; the setting is written before the
-- engine's INSERT statements, never during one. PostgreSQL rebuilds a WHEN clause
-- from its stored text at every statement, and the test written out in the clause
-- (current_setting(...) IS DISTINCT FROM 'on') cost 30,000 of a single-row
-- INSERT's 680,000 instructions; this call, folded, 18,000, and the engine's rows
-- then find a constant clause (false) instead of a setting read per row. Any
-- other caller would have the setting folded into its plan: use current_setting.
CREATE FUNCTION sluice.engine_inserting() RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN coalesce(current_setting('sluice.engine_insert', true) = 'on', false);
END
$$;

-- On the live partition, where every insert lands: a row trigger on the parent
-- would be cloned onto the history partitions too, and fire for every finished
-- job moved into them. A job revived from history (job_retry, a rerun) moves
-- back into this partition, which fires it too: those moves run with
-- sluice.engine_insert on, as their rows carry the state the engine decided.
CREATE TRIGGER jobs_before_insert BEFORE INSERT ON sluice.jobs_live
    FOR EACH ROW WHEN ((NEW.state <> 'ready' OR NEW.run_at > now()) AND NOT sluice.engine_inserting())
    EXECUTE FUNCTION sluice.jobs_before_insert();

-- A job inserted with an idempotency key takes the key in sluice.job_keys
-- (16_job_keys.sql), whoever inserts it: a key the tenant already used fails the
-- insert with a unique violation of jobs_idempotency_key, as the unique index
-- on sluice.jobs did before the table was partitioned. The engine's enqueue
-- functions set sluice.keys_skip for their statement instead: a row whose key
-- is taken is then left out (as ON CONFLICT DO NOTHING left it out), after the
-- holder of the key committed (the speculative insert waits for it), and the
-- caller reads the holder from sluice.job_keys. A job revived from history
-- moves back into the live partition and finds its own key.
CREATE FUNCTION sluice.jobs_claim_key() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('sluice.keys_skip', true) IS DISTINCT FROM 'on' THEN
        IF EXISTS (SELECT 1 FROM sluice.job_keys k
                    WHERE k.tenant = NEW.tenant AND k.idempotency_key = NEW.idempotency_key
                      AND k.job_id = NEW.id) THEN
            RETURN NEW;
        END IF;
        INSERT INTO sluice.job_keys (tenant, idempotency_key, job_id)
        VALUES (NEW.tenant, NEW.idempotency_key, NEW.id);
        RETURN NEW;
    END IF;
    INSERT INTO sluice.job_keys (tenant, idempotency_key, job_id)
    VALUES (NEW.tenant, NEW.idempotency_key, NEW.id)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_claim_key BEFORE INSERT ON sluice.jobs_live
    FOR EACH ROW WHEN (NEW.idempotency_key IS NOT NULL)
    EXECUTE FUNCTION sluice.jobs_claim_key();

-- Wake the workers waiting for ready jobs in p_queues: NOTIFY a queue only when
-- a worker sleeps on it, or on every queue ('*'), in sluice.queue_waiters.
-- PostgreSQL commits the transactions that notified one at a time (a global
-- lock taken before commit and held until the commit record is flushed), so a
-- NOTIFY nobody needed cost every inserting client its group commit: 16 clients
-- inserting one row each ran 4x slower with it (perf-design.md D8).
--
-- Why no wake-up is lost: an inserter takes a shared advisory lock per queue
-- (sluice.waiter_key), and one more for '*', until its transaction ends, and
-- only then probes for waiters, with a snapshot taken after the locks (a new
-- statement). A worker about to sleep commits its waiter rows, then takes the
-- lock of each queue it waits on exclusively ('*' for a wildcard worker), in a
-- transaction of its own (sluice.worker_wait_barrier: a try-lock, never a queue
-- behind an open transaction), then claims once more. Either the inserter's
-- probe saw the waiter row, and it notifies; or the row committed after the
-- probe's snapshot, hence after the inserter took its locks, which it holds
-- until it ends: the worker's barrier fails until then, and the claim after the
-- barrier sees the inserter's jobs. Every inserter takes the '*' lock, whatever
-- its queue, so a wildcard worker's barrier waits for inserters into queues it
-- has never heard of, and its claim (which looks for every queue with ready
-- jobs) sees their jobs. Outside READ COMMITTED a snapshot may predate a waiter
-- row however late the probe runs: those always notify.
--
-- The '*' lock and probe ride on what the named queues need (one more lock in
-- the same loop, one more key in the same index probe): no statement is added
-- to an insert. The locks are assignments (no executor, where PERFORM runs a
-- query); the probe is the one statement that must read a table, with a
-- snapshot taken after them; the NOTIFY statement runs only when the probe
-- found a waiter. jobs_after_insert runs this same body written out (below).
CREATE FUNCTION sluice.notify_ready(p_queues text[]) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_queue text;
    v_lock  text;
BEGIN
    IF cardinality(p_queues) = 0 THEN
        RETURN;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM pg_notify('sluice_jobs', q) FROM unnest(p_queues) q;
        RETURN;
    END IF;
    FOREACH v_queue IN ARRAY p_queues || '{*}'::text[] LOOP
        v_lock := pg_advisory_xact_lock_shared(sluice.waiter_key(v_queue))::text;
    END LOOP;
    IF EXISTS (SELECT 1 FROM sluice.queue_waiters w WHERE w.queue = ANY(p_queues || '{*}'::text[])) THEN
        PERFORM pg_notify('sluice_jobs', q)
           FROM unnest(p_queues) q
          WHERE EXISTS (SELECT 1 FROM sluice.queue_waiters w WHERE w.queue = ANY(ARRAY[q, '*']));
    END IF;
END
$$;

-- Wake idle workers: one NOTIFY per statement and queue, never one per row, so a
-- 10,000-row insert wakes each listener once; and only for queues a worker
-- waits on. The payload is the queue name.
--
-- sluice.notify_ready's body, written out: this runs after every INSERT
-- statement, and the call (a second PL/pgSQL frame) costs about 7 % of a
-- single-row INSERT's backend CPU (149 against 161 us, alternated runs). The
-- protocol, and why no wake-up is lost, is notify_ready's (above): the two
-- bodies are the same, keep them so.
CREATE FUNCTION sluice.jobs_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_queues text[];
    v_queue  text;
    v_lock   text;
BEGIN
    -- An aggregate (one plan node over the transition table) rather than
    -- ARRAY(SELECT DISTINCT ...) (three): 4,000 fewer instructions per statement.
    SELECT array_agg(DISTINCT n.queue) INTO v_queues FROM new_jobs n WHERE n.state = 'ready';
    IF v_queues IS NULL THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        PERFORM pg_notify('sluice_jobs', q) FROM unnest(v_queues) q;
        RETURN NULL;
    END IF;
    FOREACH v_queue IN ARRAY v_queues || '{*}'::text[] LOOP
        -- An assignment, not PERFORM (which always runs a query).
        v_lock := pg_advisory_xact_lock_shared(sluice.waiter_key(v_queue))::text;
    END LOOP;
    IF EXISTS (SELECT 1 FROM sluice.queue_waiters w WHERE w.queue = ANY(v_queues || '{*}'::text[])) THEN
        PERFORM pg_notify('sluice_jobs', q)
           FROM unnest(v_queues) q
          WHERE EXISTS (SELECT 1 FROM sluice.queue_waiters w WHERE w.queue = ANY(ARRAY[q, '*']));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_after_insert AFTER INSERT ON sluice.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.jobs_after_insert();

-- After any UPDATE statement, act on the state changes it made, set-based:
--   * jobs that finished move their DAG forward: children of succeeded jobs
--     are released, descendants of failed or cancelled ones cancelled (the
--     fast paths of plain DAGs), or, where trigger rules, skips or map
--     elements are involved, sluice.job_propagate decides every child by its
--     rule (docs/state-machine.md);
--   * queues that got ready jobs are notified once each;
--   * the workers of cancelled running jobs are told to stop them;
--   * runs whose nodes finished (or came back) are settled, once, after every
--     job lock (jobs before runs);
--   * terminal jobs with `notify` get their notification jobs (the outbox).
-- The engine's own cascades (the functions above) update sluice.jobs with
-- sluice.cascading on: this trigger then only notifies, stops and writes the
-- outbox for those rows; the function that cascades decides what follows and
-- settles the runs it touched.
CREATE FUNCTION sluice.jobs_after_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_succeeded bigint[];
    v_doomed    bigint[];
    v_skipped   bigint[];
    v_general   boolean;
    v_queues    text[];
    v_stopped   bigint[];
    v_runs      bigint[];
    v_notified  bigint[];
    v_plain     boolean;
BEGIN
    -- Lease renewals (and claims written by hand through sluice.jobs: the engine's
    -- own do not reach this trigger, above) change nothing this trigger acts on:
    -- when every row is running, skip the join below.
    IF NOT EXISTS (SELECT 1 FROM new_jobs n WHERE n.state <> 'running') THEN
        RETURN NULL;
    END IF;
    -- Completions of plain jobs (succeeded, none of them was succeeded before; no
    -- run, no outbox, no map element: the second hottest UPDATE) release
    -- children and nothing else: they skip the grouping below, two passes over
    -- the transition tables instead of a hash of both (the same decisions as
    -- below for such rows: only v_succeeded is set).
    SELECT bool_and(n.state = 'succeeded' AND n.run_id IS NULL AND n.notify IS NULL
                    AND n.group_id IS NULL),
           array_agg(n.id)
      INTO v_plain, v_succeeded
      FROM new_jobs n;
    IF v_plain AND NOT EXISTS (SELECT 1 FROM old_jobs o WHERE o.state = 'succeeded') THEN
        IF current_setting('sluice.cascading', true) IS DISTINCT FROM 'on' THEN
            v_runs := sluice.job_release_children(v_succeeded);
            IF cardinality(v_runs) > 0 THEN
                PERFORM sluice.dag_run_settle(v_runs);
            END IF;
        END IF;
        RETURN NULL;
    END IF;
    -- Each row's old and new state side by side. Grouped by id rather than joined:
    -- the planner has no statistics for transition tables, assumes one row each
    -- and picks a nested loop, which compares every new row with every old one
    -- (a DAG root releasing 10,000 children took nine seconds here). Grouping is
    -- one hash or sort pass whatever the size.
    SELECT array_agg(c.id) FILTER (WHERE c.state = 'succeeded'),
           array_agg(c.id) FILTER (WHERE c.state IN ('failed', 'cancelled')),
           array_agg(c.id) FILTER (WHERE c.state = 'skipped'),
           bool_or(c.element AND sluice.state_is_terminal(c.state)),
           array_agg(DISTINCT c.queue) FILTER (WHERE c.state = 'ready'),
           array_agg(c.id) FILTER (WHERE c.state = 'cancelled' AND c.old_state = 'running'),
           array_agg(DISTINCT c.run_id) FILTER (
               WHERE c.run_id IS NOT NULL
                 AND sluice.state_is_terminal(c.state) <> sluice.state_is_terminal(c.old_state)),
           array_agg(c.id) FILTER (WHERE c.has_notify AND sluice.state_is_terminal(c.state))
      INTO v_succeeded, v_doomed, v_skipped, v_general, v_queues, v_stopped, v_runs, v_notified
      FROM (SELECT u.id, max(u.state) AS state, max(u.old_state) AS old_state,
                   max(u.queue) AS queue, max(u.run_id) AS run_id, bool_or(u.has_notify) AS has_notify,
                   bool_or(u.element) AS element
              FROM (SELECT n.id, n.state, NULL::sluice.job_state AS old_state, n.queue::text AS queue,
                           n.run_id, n.notify IS NOT NULL AS has_notify, n.group_id IS NOT NULL AS element
                      FROM new_jobs n
                    UNION ALL
                    SELECT o.id, NULL, o.state, NULL, NULL, NULL, NULL
                      FROM old_jobs o) u
             GROUP BY u.id) c
     WHERE c.state <> c.old_state;

    IF current_setting('sluice.cascading', true) IS DISTINCT FROM 'on' THEN
        IF v_general OR v_skipped IS NOT NULL THEN
            -- Map elements release their mapped node; a skip is decided by each
            -- child's rule: neither has a fast path.
            v_runs := v_runs || sluice.job_propagate(
                coalesce(v_succeeded, '{}') || coalesce(v_doomed, '{}') || coalesce(v_skipped, '{}'));
        ELSE
            IF v_succeeded IS NOT NULL THEN
                v_runs := v_runs || sluice.job_release_children(v_succeeded);
            END IF;
            IF v_doomed IS NOT NULL THEN
                v_runs := v_runs || sluice.job_cancel_descendants(v_doomed);
            END IF;
        END IF;
    END IF;
    IF v_queues IS NOT NULL THEN
        PERFORM sluice.notify_ready(v_queues);
    END IF;
    IF v_stopped IS NOT NULL THEN
        -- NOTIFY payloads are limited to 8000 bytes: send the ids in chunks.
        PERFORM pg_notify('sluice_control', json_build_object('cancel', chunk)::text)
           FROM (SELECT array_agg(id) AS chunk
                   FROM unnest(v_stopped) WITH ORDINALITY AS s(id, n)
                  GROUP BY (n - 1) / 400) c;
    END IF;
    IF cardinality(v_runs) > 0 AND current_setting('sluice.cascading', true) IS DISTINCT FROM 'on' THEN
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

-- A deleted job takes its attempt log, edges, dead letters and idempotency key
-- with it (none of those tables has a foreign key to the partitioned
-- sluice.jobs: see 14_job_edges.sql). One statement per DELETE, not one per row.
--
-- Deleting a job that may still run would strand its children (their pending
-- count would never reach zero): cancel it first. Checked here, once per
-- statement, rather than by a BEFORE DELETE row trigger: a row that an UPDATE
-- moves out of the live partition (every completion) fires the partition's
-- DELETE row triggers, and would be refused; statement triggers on the parent
-- fire for DELETE statements only.
CREATE FUNCTION sluice.jobs_after_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_job record;
BEGIN
    SELECT o.id, o.state INTO v_job FROM old_jobs o WHERE NOT sluice.state_is_terminal(o.state) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'job % is %: cancel it before deleting it', v_job.id, v_job.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'jobs_delete_finished',
                  SCHEMA = 'sluice', TABLE = 'jobs';
    END IF;
    DELETE FROM sluice.job_attempt_log a USING old_jobs o WHERE a.job_id = o.id;
    DELETE FROM sluice.job_edges e USING old_jobs o WHERE e.parent_id = o.id;
    DELETE FROM sluice.job_edges e USING old_jobs o WHERE e.child_id = o.id;
    DELETE FROM sluice.dead_letters d USING old_jobs o WHERE d.job_id = o.id;
    DELETE FROM sluice.job_keys k USING old_jobs o
     WHERE o.idempotency_key IS NOT NULL AND k.tenant = o.tenant
       AND k.idempotency_key = o.idempotency_key AND k.job_id = o.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_after_delete AFTER DELETE ON sluice.jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION sluice.jobs_after_delete();
