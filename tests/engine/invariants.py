"""The job state machine's invariants, as queries that list every violation.

Shared by the race tests and the stateful property test: each query answers
nothing when the invariant holds, and the offending rows when it does not.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from tests.factories import rows

INVARIANTS = {
    # A path of edges from a job back to itself.
    "no cycle": """
        WITH RECURSIVE walk(start, id, path) AS (
            SELECT e.parent_id, e.child_id, ARRAY[e.parent_id, e.child_id]
              FROM sluice.job_edges e
            UNION ALL
            SELECT w.start, e.child_id, w.path || e.child_id
              FROM walk w JOIN sluice.job_edges e ON e.parent_id = w.id
             WHERE e.child_id <> ALL (w.path[2:])
        )
        SELECT start, path FROM walk WHERE id = start LIMIT 5
    """,
    # A blocked job waits for exactly its parents that have not finished (with
    # the default rule: that have not succeeded, since a failed or skipped
    # parent decides the child at once).
    "pending_parents counts the parents not finished": """
        SELECT j.id, j.pending_parents,
               (SELECT count(*) FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                 WHERE e.child_id = j.id AND NOT sluice.state_is_terminal(p.state)) AS unfinished
          FROM sluice.jobs j
         WHERE j.state = 'blocked'
           AND j.pending_parents <> (
               SELECT count(*) FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                WHERE e.child_id = j.id AND NOT sluice.state_is_terminal(p.state))
    """,
    # A blocked job is one its trigger rule has not decided yet.
    "a blocked job is undecided by its rule": """
        SELECT c.id, coalesce(c.flow ->> 'trigger', 'all_success') AS rule,
               array_agg(p.state::text ORDER BY p.id) AS parents
          FROM sluice.jobs c
          JOIN sluice.job_edges e ON e.child_id = c.id
          JOIN sluice.jobs p ON p.id = e.parent_id
         WHERE c.state = 'blocked'
         GROUP BY c.id, c.flow
        HAVING CASE coalesce(c.flow ->> 'trigger', 'all_success')
                   WHEN 'all_success' THEN bool_or(p.state IN ('failed', 'cancelled', 'skipped'))
                   WHEN 'none_failed' THEN bool_or(p.state IN ('failed', 'cancelled'))
                   WHEN 'one_success' THEN bool_or(p.state = 'succeeded')
                   WHEN 'one_failed' THEN bool_or(p.state IN ('failed', 'cancelled'))
                   ELSE false END
            OR bool_and(sluice.state_is_terminal(p.state))
    """,
    # A job about to run, or that ran, under the default rule (or none_failed)
    # had its parents all succeeded (or skipped): a parent that fails or is
    # skipped afterwards is impossible, since it had finished. (Under the
    # other rules a decision stays made: a job started by one_success keeps
    # running when a co-parent fails.)
    "a job that is not blocked satisfies all_success and none_failed": """
        SELECT c.id, c.state::text, coalesce(c.flow ->> 'trigger', 'all_success') AS rule,
               p.id AS parent, p.state::text AS parent_state
          FROM sluice.jobs c
          JOIN sluice.job_edges e ON e.child_id = c.id
          JOIN sluice.jobs p ON p.id = e.parent_id
         WHERE c.state IN ('scheduled', 'ready', 'running', 'waiting', 'succeeded')
           AND CASE coalesce(c.flow ->> 'trigger', 'all_success')
                   WHEN 'all_success' THEN p.state <> 'succeeded'
                   WHEN 'none_failed' THEN p.state NOT IN ('succeeded', 'skipped')
                   ELSE false END
    """,
    # A mapped node waiting for its elements counts the unfinished ones, and
    # the failed or cancelled ones; one that succeeded has every element's result.
    "a mapped node counts its elements": """
        SELECT g.id, g.state::text, g.pending_parents, g.parents_failed,
               count(*) FILTER (WHERE NOT sluice.state_is_terminal(e.state)) AS unfinished,
               count(*) FILTER (WHERE e.state IN ('failed', 'cancelled')) AS failed
          FROM sluice.jobs g
          JOIN sluice.jobs e ON e.group_id = g.id
         GROUP BY g.id, g.state, g.pending_parents, g.parents_failed, g.result
        HAVING (g.state = 'waiting'
                AND (g.pending_parents
                         <> count(*) FILTER (WHERE NOT sluice.state_is_terminal(e.state))
                     OR coalesce(g.parents_failed, 0)
                         <> count(*) FILTER (WHERE e.state IN ('failed', 'cancelled'))))
            OR (g.state = 'succeeded'
                AND (bool_or(e.state <> 'succeeded') OR jsonb_array_length(g.result) <> count(*)))
            OR g.state IN ('blocked', 'scheduled', 'ready', 'running')
    """,
    # A run is running exactly while it has a node left to run.
    "a run follows its nodes": """
        SELECT r.id, r.state::text
          FROM sluice.dag_runs r
         WHERE r.state <> 'queued'
           AND (r.state = 'running') <> EXISTS (
               SELECT 1 FROM sluice.jobs j
                WHERE j.run_id = r.id
                  AND j.state IN ('blocked', 'scheduled', 'ready', 'running', 'waiting'))
    """,
    # The running attempt is the job's newest and has not been logged as ended.
    "at most one live attempt per job": """
        SELECT j.id, j.attempt, a.attempt AS logged
          FROM sluice.jobs j
          JOIN sluice.job_attempts a ON a.job_id = j.id
         WHERE a.attempt > j.attempt
            OR (j.state = 'running' AND a.attempt = j.attempt)
    """,
    "a running job has a lease": """
        SELECT j.id FROM sluice.jobs j
         WHERE j.state = 'running' AND (j.worker_id IS NULL OR j.lease_expires_at IS NULL)
    """,
}


async def violations(conn: AsyncConnection) -> dict[str, list[dict]]:
    """Every invariant that does not hold, with (some of) its offending rows."""
    found = {}
    for name, sql in INVARIANTS.items():
        bad = await rows(conn, sql)
        if bad:
            found[name] = bad
    return found


async def assert_invariants(conn: AsyncConnection) -> None:
    found = await violations(conn)
    assert not found, found
