-- Queries about the connection itself, not the engine: what app/core/db.py asks
-- to find out whether a pooler sits between Sluice and PostgreSQL.

-- The backend behind this connection, and a token that tells this statement's
-- result from another client's (a pooler that loses prepared statements can run
-- another client's statement under the same name). The token also marks the
-- server session (a session setting), so that another client can tell whether a
-- pooler handed it this session (connection_mark). `untranslated`: the server
-- holds this probe prepared under psycopg's own name (_pg3_N), so no pooler
-- translated the name; one that tracks prepared statements (PgBouncer >= 1.21)
-- prepares them on each server connection under names of its own.
-- name: connection_probe :one
SELECT pg_backend_pid() AS pid, set_config('sluice.probe', %(token)s::text, false) AS token,
       EXISTS (SELECT 1 FROM pg_prepared_statements p
                WHERE starts_with(p.name, '_pg3_') AND p.statement LIKE '%%sluice.probe%%')
           AS untranslated;

-- The mark connection_probe left on this server session, if any.
-- name: connection_mark :scalar
SELECT current_setting('sluice.probe', true);

-- A message on the control channel; workers ignore keys they do not know, so the
-- notification self-test can send {"self_test": token} to every listener.
-- name: notify_control :exec
SELECT pg_notify('sluice_control', %(payload)s);

