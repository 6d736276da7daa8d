-- The day partitions of sluice.jobs_history and their retirement (docs/sql.md,
-- "History and retention"). A job that ends (succeeded, cancelled, skipped; a
-- failed one once its dead letter is discarded) gets archived_at = now() in the
-- UPDATE that ends it and moves into the partition of that day (UTC). Retention
-- drops whole partitions: no row is deleted one by one, no dead row is left for
-- vacuum, and the live partition, where claims run, holds live jobs only.

-- The history partitions, with their bounds (from the catalog: one declaration).
CREATE VIEW sluice.history_partitions AS
SELECT c.oid::regclass AS partition, c.relname::text AS name,
       substring(b.bound FROM 'FROM \(''([^'']*)''\)')::timestamptz AS lower_bound,
       -- null: the overflow partition, unbounded above
       substring(b.bound FROM 'TO \(''([^'']*)''\)')::timestamptz AS upper_bound
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
 CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
 WHERE i.inhparent = 'sluice.jobs_history'::regclass;

-- Every partition of sluice.jobs, the live one first (for statistics: a
-- partitioned table keeps none of its own).
CREATE FUNCTION sluice.jobs_partitions() RETURNS SETOF regclass
    LANGUAGE sql STABLE AS $$
    SELECT 'sluice.jobs_live'::regclass
    UNION ALL
    (SELECT p.partition FROM sluice.history_partitions p ORDER BY p.lower_bound);
$$;

-- Make the history partition sluice.<p_name> for [p_from, p_to) (p_to null:
-- unbounded above, the overflow; its bounds CHECK stops short of 'infinity',
-- which a row never has: a user's archived_at of 'infinity' finds no
-- partition). A plain table first, then attached: ATTACH PARTITION takes SHARE
-- UPDATE EXCLUSIVE on sluice.jobs_history (CREATE TABLE ... PARTITION OF would
-- take ACCESS EXCLUSIVE), which conflicts with no reader or writer of jobs, and
-- the bounds CHECK spares it a scan of the new table. Nothing of the live
-- partition is locked: claims and inserts never wait for it. Its rows are
-- finished jobs (jobs_history_finished): a revival moves a row back to the
-- live partition by setting archived_at to null, and an UPDATE that makes a
-- row pending without doing so is refused.
CREATE FUNCTION sluice.history_partition_create(p_name text, p_from timestamptz, p_to timestamptz)
    RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE sluice.%I (LIKE sluice.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                   ' WITH (fillfactor = 100, autovacuum_vacuum_insert_scale_factor = 0.2)', p_name);
    EXECUTE format('ALTER TABLE sluice.%I ADD CONSTRAINT jobs_history_bounds'
                   ' CHECK (archived_at >= %L AND archived_at < %L)', p_name, p_from, coalesce(p_to, 'infinity'));
    EXECUTE format('ALTER TABLE sluice.%I ADD CONSTRAINT jobs_history_finished'
                   ' CHECK (state IN (''succeeded'', ''failed'', ''cancelled'', ''skipped''))', p_name);
    EXECUTE format('CREATE UNIQUE INDEX %I ON sluice.%I (id)', p_name || '_id', p_name);
    -- Finished jobs by time (13_jobs.sql, jobs_finished): rows come in
    -- finished_at order, so a BRIN (min and max per range of pages) answers a
    -- time range and logs next to nothing per job: an insert into a range not
    -- yet summarized writes nothing to it. autosummarize: autovacuum summarizes
    -- each range once it fills (until then a scan reads it whole, and only the
    -- newest pages are such); a vacuum of the partition catches up on any it
    -- missed. 128 pages a range (the default, about 5,700 no-op jobs): finer
    -- ranges would ask for more summaries than autovacuum's queue keeps (256
    -- requests, served when it visits the database, once a minute by default)
    -- at tens of thousands of jobs a second.
    EXECUTE format('CREATE INDEX %I ON sluice.%I USING brin (finished_at)'
                   ' WITH (pages_per_range = 128, autosummarize = on)', p_name || '_finished', p_name);
    EXECUTE format('ALTER TABLE sluice.jobs_history ATTACH PARTITION sluice.%I FOR VALUES FROM (%L) TO (%s)',
                   p_name, p_from, coalesce(quote_literal(p_to), 'MAXVALUE'));
END
$$;

-- Make the day partitions from today up to today + p_ahead (UTC days), and the
-- overflow partition `jobs_hlater` from the last of them up (MAXVALUE), so
-- that archiving a job never fails for want of a partition, however long
-- maintenance is away (a job archived past the days made lands in the
-- overflow). The overflow is cut again further ahead only while it is empty.
-- Returns how many partitions it made. The migration calls it, so every new
-- database has its partitions; maintenance calls it on every pruning pass.
--
-- lock_timeout: dropping the overflow takes ACCESS EXCLUSIVE on
-- sluice.jobs_history for an instant, but waits for every open statement that
-- read or wrote history first, and every new one (a completion moving its row
-- there) would queue behind them: better to give up and try again on the next
-- pass. Statements on live jobs alone never touch jobs_history.
CREATE FUNCTION sluice.history_prepare(p_ahead integer DEFAULT 7) RETURNS integer
    LANGUAGE plpgsql SET lock_timeout = '100ms' AS $$
DECLARE
    v_day     date := (now() AT TIME ZONE 'UTC')::date;
    v_last    date := v_day + greatest(p_ahead, 0);
    v_later   record;
    v_empty   boolean;
    v_made    integer := 0;
    v_from    timestamptz;
    v_upper   timestamptz;
BEGIN
    SELECT * INTO v_later FROM sluice.history_partitions p WHERE p.name = 'jobs_hlater';
    IF FOUND AND v_later.lower_bound <= (v_last::text || ' 00:00:00+00')::timestamptz THEN
        EXECUTE 'SELECT NOT EXISTS (SELECT 1 FROM sluice.jobs_hlater)' INTO STRICT v_empty;
        IF v_empty THEN
            DROP TABLE sluice.jobs_hlater;
        END IF;
    END IF;
    FOR v_day IN SELECT d::date FROM generate_series(v_day, v_last, interval '1 day') d LOOP
        v_from := (v_day::text || ' 00:00:00+00')::timestamptz;
        CONTINUE WHEN EXISTS (SELECT 1 FROM sluice.history_partitions p
                               WHERE p.lower_bound < v_from + interval '1 day'
                                 AND coalesce(p.upper_bound, 'infinity') > v_from);
        PERFORM sluice.history_partition_create('jobs_h' || to_char(v_day, 'YYYYMMDD'),
                                                v_from, v_from + interval '1 day');
        v_made := v_made + 1;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM sluice.history_partitions p WHERE p.upper_bound IS NULL) THEN
        SELECT max(p.upper_bound) INTO v_upper FROM sluice.history_partitions p;
        PERFORM sluice.history_partition_create('jobs_hlater', v_upper, NULL);
        v_made := v_made + 1;
    END IF;
    RETURN v_made;
END
$$;

-- Retire the history partitions wholly older than the retention, oldest first,
-- at most p_limit (one per transaction keeps its lock on sluice.jobs_history short:
-- call again while it answers p_limit); returns how many. For each:
--   1. jobs of DAG runs that are not finished, or finished after the cutoff,
--      are moved to today's partition (archived_at = now(); finished_at stays):
--      a run's nodes stay together while its children and reruns may read them;
--   2. the attempt log, edges, dead letters and idempotency keys of its jobs
--      are deleted (its jobs are finished: nothing adds to those but an edge
--      from a succeeded parent, which a new job may still name);
--   3. it is detached and dropped: ACCESS EXCLUSIVE on sluice.jobs_history
--      from there to the caller's commit, an instant, during which completions
--      wait to move their rows there (claims and inserts go on); as in
--      history_prepare, it gives up after 100 ms of waiting for the lock, and
--      the next pass tries again;
--   4. the finished runs older than the cutoff that have no job left go.
-- Jobs in the dead-letter queue are live and never in a history partition.
CREATE FUNCTION sluice.history_retire(p_retention interval, p_limit integer DEFAULT 1) RETURNS integer
    LANGUAGE plpgsql SET lock_timeout = '100ms' AS $$
DECLARE
    v_cutoff  timestamptz := sluice.history_cutoff(p_retention);
    v_part    record;
    v_retired integer := 0;
BEGIN
    FOR v_part IN
        SELECT p.* FROM sluice.history_partitions p
         WHERE p.upper_bound <= v_cutoff
         ORDER BY p.lower_bound
         LIMIT p_limit
    LOOP
        UPDATE sluice.jobs j
           SET archived_at = now()
         WHERE j.archived_at >= v_part.lower_bound AND j.archived_at < v_part.upper_bound
           AND j.run_id IN (SELECT r.id FROM sluice.dag_runs r
                             WHERE r.state IN ('queued', 'running') OR r.finished_at >= v_cutoff);
        EXECUTE format('DELETE FROM sluice.job_attempt_log a USING %s o WHERE a.job_id = o.id', v_part.partition);
        EXECUTE format('DELETE FROM sluice.job_edges e USING %s o WHERE e.parent_id = o.id', v_part.partition);
        EXECUTE format('DELETE FROM sluice.job_edges e USING %s o WHERE e.child_id = o.id', v_part.partition);
        EXECUTE format('DELETE FROM sluice.dead_letters d USING %s o WHERE d.job_id = o.id', v_part.partition);
        EXECUTE format('DELETE FROM sluice.job_keys k USING %s o WHERE k.job_id = o.id', v_part.partition);
        -- Last: from here to the caller's commit, nobody uses sluice.jobs.
        EXECUTE format('ALTER TABLE sluice.jobs_history DETACH PARTITION %s', v_part.partition);
        EXECUTE format('DROP TABLE %s', v_part.partition);
        v_retired := v_retired + 1;
    END LOOP;
    IF v_retired > 0 THEN
        DELETE FROM sluice.dag_runs r
         WHERE r.state NOT IN ('queued', 'running') AND r.finished_at < v_cutoff
           AND NOT EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.run_id = r.id);
    END IF;
    RETURN v_retired;
END
$$;

-- Every database starts with its partitions (maintenance keeps them ahead).
SELECT sluice.history_prepare();
