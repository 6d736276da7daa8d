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
    # A blocked job waits for exactly its parents that have not succeeded.
    "pending_parents counts the parents not succeeded": """
        SELECT j.id, j.pending_parents,
               (SELECT count(*) FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                 WHERE e.child_id = j.id AND p.state <> 'succeeded') AS not_succeeded
          FROM sluice.jobs j
         WHERE j.state = 'blocked'
           AND j.pending_parents <> (
               SELECT count(*) FROM sluice.job_edges e JOIN sluice.jobs p ON p.id = e.parent_id
                WHERE e.child_id = j.id AND p.state <> 'succeeded')
    """,
    # A job that may still run has no parent that will never succeed.
    "no pending job under a failed or cancelled parent": """
        SELECT c.id, c.state::text, p.id AS parent, p.state::text AS parent_state
          FROM sluice.jobs c
          JOIN sluice.job_edges e ON e.child_id = c.id
          JOIN sluice.jobs p ON p.id = e.parent_id
         WHERE c.state IN ('blocked', 'scheduled', 'ready', 'running')
           AND p.state IN ('failed', 'cancelled')
    """,
    # Only a blocked job has parents left to wait for.
    "a job that is not blocked has every parent succeeded": """
        SELECT c.id, c.state::text, p.id AS parent, p.state::text AS parent_state
          FROM sluice.jobs c
          JOIN sluice.job_edges e ON e.child_id = c.id
          JOIN sluice.jobs p ON p.id = e.parent_id
         WHERE c.state IN ('scheduled', 'ready', 'running', 'succeeded')
           AND p.state <> 'succeeded'
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
