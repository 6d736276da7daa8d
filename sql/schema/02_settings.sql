-- Limits of DAG data flow, set once for every client with
--   ALTER DATABASE ... SET sluice.map_limit = 50000;
-- (or per role, per session). Each is read through one function, so SQL, the
-- worker and the API agree; a value that is not a positive whole number reads
-- as the default rather than failing whatever transaction reads it.
-- One expression, without FROM: the planner inlines it into its callers. A SQL
-- function it cannot inline is planned again at each statement that calls it
-- (about 70 us each, at every claim of a DAG node).
CREATE FUNCTION sluice.setting_integer(p_name text, p_default bigint) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN current_setting('sluice.' || p_name, true) ~ '^\s*[0-9]{1,15}\s*$'
                 AND current_setting('sluice.' || p_name, true)::bigint > 0
            THEN current_setting('sluice.' || p_name, true)::bigint
            ELSE p_default END;

-- Most elements one `map` may create (Airflow's max_map_length).
CREATE FUNCTION sluice.map_limit() RETURNS integer
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN least(sluice.setting_integer('map_limit', 10000), 2147483647);

-- Largest result a job may store, in bytes of its stored (jsonb) form: a
-- larger one fails the job, never silently cut (also a signal's payload).
CREATE FUNCTION sluice.max_result_bytes() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN sluice.setting_integer('max_result_bytes', 1048576);

-- Largest list of element results a mapped node gathers for its children.
CREATE FUNCTION sluice.max_map_result_bytes() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN sluice.setting_integer('max_map_result_bytes', 67108864);

-- Parents' results larger than this together are not sent with a claim: the
-- claim's `parents` is then {"_omitted": true} and the worker reads them with
-- sluice.job_parent_results (one query per claim batch).
CREATE FUNCTION sluice.inline_parents_bytes() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
RETURN sluice.setting_integer('inline_parents_bytes', 1048576);

-- The wake-up time of a wait that waits for ever (a signal without timeout):
-- the latest run_at the column takes (domain sluice.job_run_at).
CREATE FUNCTION sluice.never() RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN timestamptz '8999-12-31 00:00:00+00';
