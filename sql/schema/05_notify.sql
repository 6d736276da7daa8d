-- Shape of a `notify` value on a job or a run:
--   {"webhook": {"url": "https://...", "secret": "...", "on": ["failed", ...]},
--    "email":   {"to": ["ops@example.com"], "on": ["failed"]}}
-- "on" lists terminal outcomes (succeeded, failed, cancelled); it defaults to all three.
-- Checked by a constraint so a plain SQL insert gets the same answer as the API.
-- PL/pgSQL rather than SQL, and called behind a null guard (as flow_spec,
-- 00_schema.sql): a SQL function is inlined into the domain's check, and every
-- INSERT statement compiled the whole expression below for the null of each
-- job without a notify (about 5 % of a single-row INSERT's instructions).
CREATE FUNCTION sluice.notify_valid(notify jsonb) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN notify IS NULL OR (
        jsonb_typeof(notify) = 'object'
        AND notify - 'webhook' - 'email' = '{}'::jsonb
        AND (NOT notify ? 'webhook' OR (
            jsonb_typeof(notify -> 'webhook') = 'object'
            AND (notify -> 'webhook') - 'url' - 'secret' - 'on' = '{}'::jsonb
            AND coalesce(notify #>> '{webhook,url}', '') ~ '^https?://[^\s]+$'
            AND coalesce(jsonb_typeof(notify #> '{webhook,secret}'), 'string') = 'string'
            AND coalesce(notify #> '{webhook,on}', '[]') <@ '["succeeded", "failed", "cancelled"]'::jsonb
            AND coalesce(jsonb_typeof(notify #> '{webhook,on}'), 'array') = 'array'))
        AND (NOT notify ? 'email' OR (
            jsonb_typeof(notify -> 'email') = 'object'
            AND (notify -> 'email') - 'to' - 'on' = '{}'::jsonb
            AND jsonb_typeof(notify #> '{email,to}') = 'array'
            AND jsonb_array_length(notify #> '{email,to}') > 0
            AND jsonb_path_query_array(notify, '$.email.to[*] ? (@.type() != "string" || !(@ like_regex "^[^@\\s]+@[^@\\s]+$"))') = '[]'::jsonb
            AND coalesce(notify #> '{email,on}', '[]') <@ '["succeeded", "failed", "cancelled"]'::jsonb
            AND coalesce(jsonb_typeof(notify #> '{email,on}'), 'array') = 'array')));
END
$$;

CREATE DOMAIN sluice.notify_spec AS jsonb
    CONSTRAINT notify_spec_valid CHECK (VALUE IS NULL OR sluice.notify_valid(VALUE));
