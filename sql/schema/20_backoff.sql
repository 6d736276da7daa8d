-- Retry policy, a pure function: the delay before attempt `attempt` + 1 after
-- attempt `attempt` failed. `jitter` is a number in [0, 1) supplied by the caller
-- (random() in production, fixed in tests): it spreads the delay over ±20% so jobs
-- that failed together do not all retry in the same instant. Computed in float
-- seconds so a large exponent saturates at `cap` instead of overflowing interval.
-- A null kind, base or cap is the default: exponential, 1 second, 1 hour (a job
-- row stores null for them: 13_jobs.sql).
CREATE FUNCTION sluice.backoff_delay(
    kind text, base interval, cap interval, attempt integer, jitter double precision
) RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN make_interval(secs => least(
    extract(epoch FROM coalesce(cap, '1 hour'))::double precision,
    extract(epoch FROM coalesce(base, '1 second'))::double precision
        * CASE coalesce(kind, 'exponential')
              WHEN 'exponential' THEN power(2::double precision, least(greatest(attempt, 1) - 1, 60))
              WHEN 'linear' THEN greatest(attempt, 1)
              ELSE 1
          END
        * (0.8 + 0.4 * jitter)));
