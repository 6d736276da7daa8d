-- Counts of the closed history partitions, so that sluice.queue_stats reads
-- the live partition and today's history, never the days kept before
-- (docs/sql.md, "History and retention"). Exact, and the same answer as a
-- count over sluice.jobs.
--
-- Why this shape. A counter updated by every completion would add WAL to each
-- job's life (and make every completion of a queue wait on one counter row);
-- counting every partition at each read costs a second per 10 million jobs
-- kept. A history partition, though, stops changing once its day is over: only
-- a revival (job_retry, a DAG rerun), history_retire moving a run's jobs to
-- today, job_prune's row deletions, or a transaction begun before midnight that
-- archives after it still touch it, all rare. So each past partition is counted
-- once, and from then on a row trigger on that partition alone records each of
-- those rare changes as a delta row. The hot path never writes to a past
-- partition, so it never fires these triggers and writes nothing more.
--
-- Deltas are appended, never applied to a counter in place: two revivals of the
-- same queue never wait on each other's row lock or deadlock in opposite
-- orders, and the maintenance pass folds them (history_rollup).
--
-- A partition goes through three stages:
--   open     no trigger; queue_stats counts its rows directly;
--   watched  the trigger records every change (history_rollup_watch), but
--            queue_stats still counts it directly and ignores its deltas;
--   closed   it has a row in history_closed and its counts in history_counts
--            (history_rollup); queue_stats reads those and skips its rows.
-- Watching and counting are two transactions: CREATE TRIGGER needs a lock that
-- stops every write to the partition, held to commit, while the count is a
-- scan; together, a revival would wait for the whole scan.
--
-- Why the count is exact, whatever runs meanwhile. Every change to a partition's
-- rows is (a) committed before its trigger existed: the watch's SHARE ROW
-- EXCLUSIVE lock waited for it, so it is in the count (taken later), and has no
-- delta; or (b) made after: it has a delta. history_rollup counts the rows and
-- deletes the deltas in ONE statement, so with one snapshot: the changes that
-- snapshot sees are in the count and their deltas are deleted; the ones it does
-- not see (committed later, or never) keep their delta, which the count lacks.
-- Each change is counted once. A reader sees the marker row and the counts of a
-- partition appear in the same commit, in its one snapshot along with the rows
-- it counts directly (the view is one statement): a revival moving a row from
-- a closed partition to the live one is seen whole (delta and live row) or not.
--
-- Who may write a partition's rows here, and under which lock on the partition:
--   the trigger (ROW EXCLUSIVE, the write's), appending;
--   history_rollup_watch (SHARE ROW EXCLUSIVE): none, it creates the trigger;
--   history_rollup, counting or folding (ACCESS SHARE, taken first);
--   history_counts_truncated, the TRUNCATE trigger, and history_retire, which
--   drops the partition (ACCESS EXCLUSIVE).
-- Folding replaces rows by their sum (DELETE ... RETURNING, then INSERT in one
-- statement): a delta appended meanwhile is not among the rows it deleted and
-- stays; two maintenance leaders folding at once delete each row once (the
-- second waits for the first's row lock, then skips the row gone), so the sum
-- is kept. Folding against TRUNCATE would not be (a sum re-inserted after the
-- truncation deleted the rows it saw), hence ACCESS SHARE on the partition,
-- which TRUNCATE's lock waits for. Retirement against counting: the count
-- holds ACCESS SHARE on the partition from before its marker is written, so
-- the drop waits for its commit and then deletes what it wrote; a count that
-- comes after the drop finds no table and skips it. Two leaders counting the
-- same partition: the marker's primary key makes the second wait, then find it
-- closed and skip it. Deadlocks: watching and counting lock partitions in
-- their bounds' order, as a statement over sluice.jobs does, and wait at most
-- 100 ms for any lock (lock_timeout, well below deadlock_timeout): in a wait
-- cycle they are the ones to give up, and the next pass tries again; nothing
-- waits on them longer than that plus a day's count (retirement, TRUNCATE).
--
-- How queue_stats puts the two together: queue_state_counts, at the end.

CREATE TABLE sluice.history_closed (
    partition  regclass PRIMARY KEY,
    closed_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per (partition, queue, state) once folded; deltas (n = ±1) between
-- folds. No key: appending never waits on another writer.
CREATE TABLE sluice.history_counts (
    partition  regclass NOT NULL,
    queue      sluice.queue_name NOT NULL,
    state      sluice.job_state NOT NULL,
    n          bigint NOT NULL
);
CREATE INDEX history_counts_partition ON sluice.history_counts (partition);

-- Records one change of a watched partition's rows. A row moving to another
-- partition (a revival, history_retire) fires AFTER DELETE here, not UPDATE.
CREATE FUNCTION sluice.history_counts_track() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO sluice.history_counts (partition, queue, state, n)
        VALUES (TG_RELID, OLD.queue, OLD.state, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO sluice.history_counts (partition, queue, state, n)
        VALUES (TG_RELID, NEW.queue, NEW.state, 1);
    END IF;
    RETURN NULL;
END
$$;

-- A truncated partition has no rows left: neither counts nor deltas.
CREATE FUNCTION sluice.history_counts_truncated() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sluice.history_counts h WHERE h.partition = TG_RELID;
    RETURN NULL;
END
$$;

-- Watch the history partitions whose day is over (upper bound <= now()), oldest
-- first: put the counting triggers on them. Each CREATE TRIGGER waits for the
-- transactions writing to that partition (a completion begun before midnight)
-- and holds writes to it off to commit, an instant: lock_timeout gives up after
-- 100 ms rather than queue revivals behind it, and the next pass tries again.
-- Returns how many it watched.
CREATE FUNCTION sluice.history_rollup_watch() RETURNS integer
    LANGUAGE plpgsql SET lock_timeout = '100ms' AS $$
DECLARE
    v_name    text;
    v_part    regclass;
    v_watched integer := 0;
BEGIN
    FOR v_name IN
        SELECT p.name FROM sluice.history_partitions p
         WHERE p.upper_bound <= now()
           AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                            WHERE t.tgrelid = p.partition AND t.tgname = 'history_counts_track')
         ORDER BY p.lower_bound
    LOOP
        BEGIN
            EXECUTE format('LOCK TABLE sluice.%I IN SHARE ROW EXCLUSIVE MODE', v_name);
        EXCEPTION WHEN undefined_table THEN
            CONTINUE;  -- retired meanwhile
        END;
        v_part := format('sluice.%I', v_name)::regclass;
        -- Another leader may have watched it while this one waited.
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_trigger t
                               WHERE t.tgrelid = v_part AND t.tgname = 'history_counts_track');
        EXECUTE format('CREATE TRIGGER history_counts_track AFTER INSERT OR DELETE ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION sluice.history_counts_track()', v_part);
        EXECUTE format('CREATE TRIGGER history_counts_change AFTER UPDATE OF queue, state ON %s'
                       ' FOR EACH ROW WHEN (OLD.queue IS DISTINCT FROM NEW.queue'
                       ' OR OLD.state IS DISTINCT FROM NEW.state)'
                       ' EXECUTE FUNCTION sluice.history_counts_track()', v_part);
        EXECUTE format('CREATE TRIGGER history_counts_truncated AFTER TRUNCATE ON %s'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION sluice.history_counts_truncated()', v_part);
        v_watched := v_watched + 1;
    END LOOP;
    RETURN v_watched;
END
$$;

-- The rollup's maintenance pass: forget partitions no longer attached (a
-- partition detached or dropped by hand), fold the deltas of the closed ones,
-- then close at most p_limit watched partitions, oldest first (each is a scan
-- of one day's history: call again while it answers p_limit). Returns how many
-- it closed. lock_timeout: a partition being retired or truncated is left to
-- the next pass.
CREATE FUNCTION sluice.history_rollup(p_limit integer DEFAULT 1) RETURNS integer
    LANGUAGE plpgsql SET lock_timeout = '100ms' AS $$
DECLARE
    v_part   record;
    v_closed integer := 0;
BEGIN
    DELETE FROM sluice.history_counts h
     WHERE NOT EXISTS (SELECT 1 FROM sluice.history_partitions p WHERE p.partition = h.partition);
    DELETE FROM sluice.history_closed c
     WHERE NOT EXISTS (SELECT 1 FROM sluice.history_partitions p WHERE p.partition = c.partition);

    FOR v_part IN
        SELECT p.partition, p.name FROM sluice.history_partitions p
         WHERE p.partition IN (SELECT c.partition FROM sluice.history_closed c)
           AND (SELECT count(*) > count(DISTINCT (h.queue, h.state))
                  FROM sluice.history_counts h WHERE h.partition = p.partition)
         ORDER BY p.lower_bound
    LOOP
        BEGIN
            EXECUTE format('LOCK TABLE sluice.%I IN ACCESS SHARE MODE', v_part.name);
        EXCEPTION WHEN undefined_table THEN
            CONTINUE;
        END;
        WITH gone AS (
            DELETE FROM sluice.history_counts h WHERE h.partition = v_part.partition
            RETURNING h.queue, h.state, h.n
        )
        INSERT INTO sluice.history_counts (partition, queue, state, n)
        SELECT v_part.partition, g.queue, g.state, sum(g.n)
          FROM gone g
         GROUP BY g.queue, g.state
        HAVING sum(g.n) <> 0;
    END LOOP;

    FOR v_part IN
        SELECT p.partition, p.name FROM sluice.history_partitions p
         WHERE EXISTS (SELECT 1 FROM pg_trigger t
                        WHERE t.tgrelid = p.partition AND t.tgname = 'history_counts_track')
           AND NOT EXISTS (SELECT 1 FROM sluice.history_closed c WHERE c.partition = p.partition)
         ORDER BY p.lower_bound
         LIMIT p_limit
    LOOP
        BEGIN
            EXECUTE format('LOCK TABLE sluice.%I IN ACCESS SHARE MODE', v_part.name);
        EXCEPTION WHEN undefined_table THEN
            CONTINUE;  -- retired meanwhile
        END;
        INSERT INTO sluice.history_closed (partition) VALUES (v_part.partition)
        ON CONFLICT (partition) DO NOTHING;
        CONTINUE WHEN NOT FOUND;  -- another leader closed it
        -- One statement, one snapshot: the deltas it deletes are those of the
        -- changes its count sees.
        EXECUTE format(
            'WITH seen AS (DELETE FROM sluice.history_counts h WHERE h.partition = $1),'
            ' counted AS (SELECT j.queue, j.state, count(*) AS n FROM sluice.%I j GROUP BY j.queue, j.state)'
            ' INSERT INTO sluice.history_counts (partition, queue, state, n)'
            ' SELECT $1, c.queue, c.state, c.n FROM counted c', v_part.name)
            USING v_part.partition;
        v_closed := v_closed + 1;
    END LOOP;
    RETURN v_closed;
END
$$;

-- What sluice.queue_stats counts: jobs per queue and state (and the oldest
-- ready job's run_at), every partition included. The boundary, `v_from`, is
-- the lower bound of the oldest attached history partition not closed: rows
-- from there on (and the live ones) are counted, the closed partitions below it
-- are read from their counts. Partitions do not overlap, so each is counted
-- once, whatever order they were closed or made in.
--
-- A function, not a view: the bound is passed to the count as a value known
-- when it is planned, so PostgreSQL leaves every partition below it out of the
-- plan. In a view (`archived_at >= (SELECT ...)`) they were pruned at run time
-- only: never scanned, but the planner costed them all, and above a few
-- million kept rows chose a parallel plan and JIT-compiled it, 0.1 to 2
-- seconds per read (measured, 10 million kept). jit = off for the same reason.
-- STABLE: every statement here reads the calling query's snapshot, so the
-- rows counted and the counts read are one consistent picture (a row revived
-- out of a closed partition is seen either as its delta and its live row, or
-- as neither).
CREATE FUNCTION sluice.queue_state_counts()
    RETURNS TABLE (queue sluice.queue_name, state sluice.job_state, n bigint,
                   oldest_ready_at timestamptz)
    LANGUAGE plpgsql STABLE SET jit = off AS $$
DECLARE
    v_from timestamptz;
BEGIN
    SELECT coalesce(min(p.lower_bound), 'infinity') INTO v_from
      FROM sluice.history_partitions p
     WHERE NOT EXISTS (SELECT 1 FROM sluice.history_closed c WHERE c.partition = p.partition);
    RETURN QUERY EXECUTE
        'SELECT j.queue, j.state, count(*), min(j.run_at) FILTER (WHERE j.state = ''ready'')'
        '  FROM sluice.jobs j WHERE j.archived_at IS NULL OR j.archived_at >= $1'
        ' GROUP BY j.queue, j.state'
        USING v_from;
    RETURN QUERY
    SELECT h.queue, h.state, sum(h.n)::bigint, NULL::timestamptz
      FROM sluice.history_counts h
      JOIN sluice.history_closed c ON c.partition = h.partition
      JOIN sluice.history_partitions p ON p.partition = c.partition
     WHERE p.upper_bound <= v_from
     GROUP BY h.queue, h.state;
END
$$;
