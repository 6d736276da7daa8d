-- The data language of DAG nodes: payload templates and `when` conditions.
-- Pure functions (no table is read), so the engine can render a child's
-- payload in the transaction that releases it, and the API can check a
-- definition with the very parser that will render it.
--
-- A template is `{{ ref }}` inside a string of a payload, where ref is
--     root accessor* [ | default(<JSON scalar>) ]
--     root     := params | nodes | item | index | run
--     accessor := .name | [<integer>] | ["key"] | ['key']      (name: letters, digits, _ : -)
-- and `nodes` is followed by a node id and `result` or `state`
-- (`nodes.extract.result.path`, `nodes["my.node"].result[0]`).
--
-- What a rendered template becomes (docs/dags.md says the same to users):
--   * a string that is exactly one template takes the JSON value itself
--     (`"{{ nodes.split.result.files }}"` is a list, `"{{ index }}"` a number);
--   * a template inside a longer string is written as text: a string as
--     itself, anything else as its JSON text (`42`, `true`, `null`,
--     `{"a": 1}`, as PostgreSQL prints jsonb);
--   * a path through a JSON null gives null (a skipped node's result is null,
--     so `nodes.b.result.rows` is null too), but a key that is absent, an
--     index past the end, or a key into a string or number is an error naming
--     the template, where it is, and what is missing; `| default(v)` gives v
--     instead of a missing or null value.
-- Only `{{` followed by one of the five roots starts a template: other text
-- in braces (a Mustache template for another system, a lone `{{`) is left as
-- it is, as Argo does. Values taken from the context are inserted as data and
-- never scanned for templates again. Object keys are never rendered.
--
-- Limits, so that hostile input costs bounded time: at most 256 templates per
-- payload, templates at most 64 levels deep in it, at most 64 accessors each.

-- One template body (`nodes.a.result[0] | default(1)`, without the braces and
-- the spaces around them) as {"src", "root", "path": text[] literal from the
-- root, "default"?} or {"src", "error"}.
CREATE FUNCTION sluice.template_parse_ref(p_body text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_src   text := '{{ ' || p_body || ' }}';
    v_root  text := substring(p_body FROM '^[a-z]+');
    v_rest  text := substr(p_body, length(v_root) + 1);
    v_path  text[] := ARRAY[v_root];
    v_m     text[];
    v_ref   jsonb;
    v_dflt  jsonb;
BEGIN
    IF p_body ~ '^[a-z]+(\.[A-Za-z0-9_:-]+){0,64}$' THEN
        -- The usual case, a plain dotted path: no accessor loop.
        v_path := string_to_array(p_body, '.');
        v_rest := '';
    END IF;
    WHILE v_rest <> '' LOOP
        IF cardinality(v_path) > 64 THEN
            RETURN jsonb_build_object('src', v_src, 'error', 'more than 64 accessors');
        END IF;
        v_m := regexp_match(v_rest, '^\.([A-Za-z0-9_:-]+)(.*)$');
        IF v_m IS NULL THEN
            v_m := regexp_match(v_rest, '^\[\s*(-?[0-9]{1,9})\s*\](.*)$');
        END IF;
        IF v_m IS NULL THEN
            v_m := regexp_match(v_rest, '^\[\s*''([^'']*)''\s*\](.*)$');
        END IF;
        IF v_m IS NULL THEN
            v_m := regexp_match(v_rest, '^\[\s*("(?:[^"\\]|\\.)*")\s*\](.*)$');
            IF v_m IS NOT NULL THEN
                BEGIN
                    v_m[1] := v_m[1]::jsonb #>> '{}';
                EXCEPTION WHEN invalid_text_representation THEN
                    RETURN jsonb_build_object('src', v_src, 'error',
                                              format('bad quoted key %s', v_m[1]));
                END;
            END IF;
        END IF;
        IF v_m IS NULL THEN
            EXIT;
        END IF;
        v_path := v_path || v_m[1];
        v_rest := v_m[2];
    END LOOP;

    IF v_rest <> '' THEN
        v_m := regexp_match(v_rest, '^\s*\|\s*default\s*\((.*)\)$');
        IF v_m IS NULL THEN
            RETURN jsonb_build_object('src', v_src, 'error', format(
                'cannot read %s (write a path such as nodes.ID.result.key[0], then optionally | default(value))',
                quote_literal(left(v_rest, 40))));
        END IF;
        BEGIN
            v_dflt := btrim(v_m[1])::jsonb;
        EXCEPTION WHEN invalid_text_representation THEN
            v_dflt := NULL;
        END;
        IF v_dflt IS NULL OR jsonb_typeof(v_dflt) IN ('object', 'array') THEN
            RETURN jsonb_build_object('src', v_src, 'error', format(
                'default(%s) needs one JSON value: a "string", a number, true, false or null',
                left(btrim(v_m[1]), 40)));
        END IF;
    END IF;

    IF v_root = 'nodes' AND (cardinality(v_path) < 3 OR v_path[3] NOT IN ('result', 'state')) THEN
        RETURN jsonb_build_object('src', v_src, 'error',
                                  'write nodes.ID.result or nodes.ID.state (then a path, if any)');
    END IF;
    IF v_root = 'index' AND cardinality(v_path) > 1 THEN
        RETURN jsonb_build_object('src', v_src, 'error', 'index is a number: it has no keys');
    END IF;
    v_ref := jsonb_build_object('src', v_src, 'root', v_root, 'path', v_path::text);
    IF v_dflt IS NOT NULL THEN
        v_ref := v_ref || jsonb_build_object('default', v_dflt);
    END IF;
    RETURN v_ref;
END
$$;

-- One string's templates: null when it holds none; else {"whole": true when the
-- string is exactly one template, "parts": [literal text | ref, ...] in order,
-- "errors": [{"src", "error"}, ...] when some template is malformed}.
--
-- The string is cut at each `{{` (string_to_array, one pass in C); a piece that
-- starts with a root word (`\M`: `{{ items }}` is not a template) is a template
-- up to the first `}}` in it, so a body never holds `{{` or `}}`. Any other
-- piece is text, `{{` included.
CREATE FUNCTION sluice.template_parse(p_text text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_pieces text[];
    v_piece  text;
    v_end    integer;
    v_head   text;     -- text after the last template (or the start)
    v_from   integer;  -- first piece of text after v_head
    v_text   text;
    v_parts  jsonb := '[]';
    v_errors jsonb := '[]';
    v_ref    jsonb;
    v_refs   integer := 0;
BEGIN
    IF p_text IS NULL OR strpos(p_text, '{{') = 0 THEN
        RETURN NULL;
    END IF;
    v_pieces := string_to_array(p_text, '{{');
    v_head := v_pieces[1];
    v_from := 2;
    FOR i IN 2 .. cardinality(v_pieces) LOOP
        v_piece := v_pieces[i];
        CONTINUE WHEN v_piece !~ '^\s*(params|nodes|item|index|run)\M';
        v_end := strpos(v_piece, '}}');
        IF v_end = 0 THEN
            -- Kept as text; the first few are reported.
            IF jsonb_array_length(v_errors) < 8 THEN
                v_errors := v_errors || jsonb_build_object(
                    'src', '{{' || left(v_piece, 40), 'error', 'not closed (no }} after it)');
            END IF;
            CONTINUE;
        END IF;
        IF v_refs = 256 THEN
            RETURN jsonb_build_object('whole', false, 'parts', '[]'::jsonb, 'errors', jsonb_build_array(
                jsonb_build_object('error', 'more than 256 templates in one payload')));
        END IF;
        -- The text before this template, joined in one call rather than piece
        -- by piece (which would copy a string of many `{{` once per piece).
        v_text := v_head || CASE WHEN i > v_from THEN '{{' || array_to_string(v_pieces[v_from:i - 1], '{{')
                                 ELSE '' END;
        IF v_text <> '' THEN
            v_parts := v_parts || to_jsonb(v_text);
        END IF;
        v_ref := sluice.template_parse_ref(btrim(left(v_piece, v_end - 1), E' \t\r\n'));
        IF v_ref ? 'error' AND jsonb_array_length(v_errors) < 8 THEN
            v_errors := v_errors || v_ref;
        END IF;
        v_parts := v_parts || jsonb_build_array(v_ref);
        v_refs := v_refs + 1;
        v_head := substr(v_piece, v_end + 2);
        v_from := i + 1;
    END LOOP;
    IF v_refs = 0 AND v_errors = '[]' THEN
        RETURN NULL;
    END IF;
    v_text := v_head || CASE WHEN cardinality(v_pieces) >= v_from
                             THEN '{{' || array_to_string(v_pieces[v_from:], '{{') ELSE '' END;
    IF v_text <> '' THEN
        v_parts := v_parts || to_jsonb(v_text);
    END IF;
    RETURN jsonb_build_object('whole', v_refs = 1 AND jsonb_array_length(v_parts) = 1, 'parts', v_parts)
           || CASE WHEN v_errors = '[]' THEN '{}'::jsonb ELSE jsonb_build_object('errors', v_errors) END;
END
$$;

-- Compile a payload once (when a run is created) so that rendering it, perhaps
-- 10,000 times for a map, never walks it again: the list of its strings that
-- hold templates, each {"at": text[] literal for jsonb_set, "where":
-- "payload.a[0]" for messages, "whole", "parts", "errors"?}, or null when the
-- payload holds no template. p_where names the payload in messages.
--
-- The walk is a loop over a work list, not a recursive function, so a payload
-- nested thousands of levels deep cannot exhaust the stack; it only enters
-- objects and lists whose text holds `{{`, and stops at depth 64 (a template
-- below that is reported rather than silently left alone) and past 256
-- templates.
CREATE FUNCTION sluice.template_compile(p_payload jsonb, p_where text DEFAULT 'payload')
    RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_ats    text[] := ARRAY['{}'];
    v_locs   text[] := ARRAY[p_where];
    v_vals   jsonb[] := ARRAY[p_payload];
    v_depths integer[] := ARRAY[0];
    v_next   integer := 1;
    v_child  record;
    v_at     text[];
    v_parsed jsonb;
    v_sites  jsonb := '[]';
    v_count  integer := 0;
BEGIN
    -- Most payloads hold no template at all: one scan of the text decides.
    IF p_payload IS NULL OR strpos(p_payload::text, '{{') = 0 THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_payload) = 'string' THEN
        v_parsed := sluice.template_parse(p_payload #>> '{}');
        RETURN CASE WHEN v_parsed IS NOT NULL
                    THEN jsonb_build_array(jsonb_build_object('at', '{}', 'where', p_where) || v_parsed) END;
    END IF;
    WHILE v_next <= cardinality(v_vals) LOOP
        v_at := v_ats[v_next]::text[];
        FOR v_child IN
            SELECT e.key AS k,
                   CASE WHEN e.key ~ '^[A-Za-z0-9_:-]+$' THEN '.' || e.key
                        ELSE '[' || to_jsonb(e.key)::text || ']' END AS step,
                   e.value AS v, jsonb_typeof(e.value) AS t
              FROM jsonb_each(CASE WHEN jsonb_typeof(v_vals[v_next]) = 'object' THEN v_vals[v_next] END) AS e
            UNION ALL
            SELECT (a.n - 1)::text, '[' || (a.n - 1) || ']', a.v, jsonb_typeof(a.v)
              FROM jsonb_array_elements(CASE WHEN jsonb_typeof(v_vals[v_next]) = 'array' THEN v_vals[v_next] END)
                   WITH ORDINALITY AS a(v, n)
        LOOP
            IF v_child.t = 'string' THEN
                v_parsed := sluice.template_parse(v_child.v #>> '{}');
                IF v_parsed IS NOT NULL THEN
                    v_sites := v_sites || jsonb_build_array(
                        jsonb_build_object('at', (v_at || v_child.k)::text,
                                           'where', v_locs[v_next] || v_child.step) || v_parsed);
                    v_count := v_count + jsonb_array_length(jsonb_path_query_array(
                        v_parsed, '$.parts[*] ? (@.type() == "object")'));
                END IF;
            ELSIF v_child.t IN ('object', 'array') AND strpos(v_child.v::text, '{{') > 0 THEN
                IF v_depths[v_next] + 1 < 64 THEN
                    v_ats := v_ats || (v_at || v_child.k)::text;
                    v_locs := v_locs || (v_locs[v_next] || v_child.step);
                    v_vals := v_vals || v_child.v;
                    v_depths := v_depths || (v_depths[v_next] + 1);
                ELSIF v_child.v::text ~ '\{\{\s*(params|nodes|item|index|run)\M' THEN
                    v_sites := v_sites || jsonb_build_array(jsonb_build_object(
                        'at', (v_at || v_child.k)::text, 'where', v_locs[v_next] || v_child.step,
                        'whole', false, 'parts', '[]'::jsonb,
                        'errors', jsonb_build_array(jsonb_build_object(
                            'error', 'templates deeper than 64 levels are not rendered'))));
                END IF;
            END IF;
            IF v_count > 256 THEN
                RETURN jsonb_build_array(jsonb_build_object(
                    'at', '{}', 'where', p_where, 'whole', false, 'parts', '[]'::jsonb,
                    'errors', jsonb_build_array(jsonb_build_object(
                        'error', 'more than 256 templates in one payload'))));
            END IF;
        END LOOP;
        -- Drop what was walked: the list holds only what is still to visit.
        v_vals[v_next] := NULL;
        v_next := v_next + 1;
    END LOOP;
    RETURN nullif(v_sites, '[]');
END
$$;

-- Why a reference found nothing: null when the path went through a JSON null
-- (the value is then null), else a message naming what is missing, with the
-- path written as the user would (`nodes.split.result.files`).
CREATE FUNCTION sluice.template_missing(p_base jsonb, p_path text[], p_label text)
    RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_cur   jsonb := p_base;
    v_next  jsonb;
    v_label text := p_label;
    v_key   text;
BEGIN
    IF v_cur IS NULL THEN
        RETURN CASE WHEN p_label IN ('item', 'index') THEN format('%s is only defined in a node with map', p_label)
                    ELSE format('the context has no %s', p_label) END;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_path), 0) LOOP
        v_key := p_path[i];
        IF jsonb_typeof(v_cur) = 'null' THEN
            RETURN NULL;
        END IF;
        v_next := v_cur -> v_key;
        IF v_next IS NULL AND jsonb_typeof(v_cur) = 'array' AND v_key ~ '^-?[0-9]{1,9}$' THEN
            v_next := v_cur -> v_key::integer;
        END IF;
        IF v_next IS NULL THEN
            RETURN CASE jsonb_typeof(v_cur)
                WHEN 'object' THEN
                    CASE WHEN v_label = 'nodes'
                         THEN format('no node %s comes before this one', to_jsonb(v_key))
                         ELSE format('%s has no key %s', v_label, to_jsonb(v_key)) END
                WHEN 'array' THEN
                    CASE WHEN v_key ~ '^-?[0-9]{1,9}$'
                         THEN format('%s has no element [%s] (it has %s)', v_label, v_key,
                                     jsonb_array_length(v_cur))
                         ELSE format('%s is a list: it has no key %s', v_label, to_jsonb(v_key)) END
                ELSE format('%s is a %s: it has no key %s', v_label, jsonb_typeof(v_cur), to_jsonb(v_key))
            END;
        END IF;
        v_label := v_label || CASE WHEN jsonb_typeof(v_cur) = 'array' THEN '[' || v_key || ']'
                                   WHEN v_key ~ '^[A-Za-z0-9_:-]+$' THEN '.' || v_key
                                   ELSE '[' || to_jsonb(v_key)::text || ']' END;
        v_cur := v_next;
    END LOOP;
    RETURN NULL;
END
$$;

-- The value of one template (a ref from template_parse) in a context, or the
-- reason it has none. The context is {"params": {...}, "nodes": {id: {"state",
-- "result"}}, "run": {...}}; item and index, for one element of a map, are
-- separate arguments (or "item" and "index" in the context).
CREATE FUNCTION sluice.template_resolve(
    p_ref jsonb, p_context jsonb, p_item jsonb, p_index integer, OUT value jsonb, OUT error text
)
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_path text[] := (p_ref ->> 'path')::text[];
    v_base jsonb;
BEGIN
    v_base := CASE v_path[1]
                  WHEN 'item' THEN coalesce(p_item, p_context -> 'item')
                  WHEN 'index' THEN coalesce(to_jsonb(p_index), p_context -> 'index')
                  ELSE p_context -> v_path[1] END;
    value := v_base #> v_path[2:];
    IF value IS NULL THEN
        -- Missing, or reached through a null (which gives null)?
        error := sluice.template_missing(v_base, v_path[2:], v_path[1]);
        value := 'null';
    END IF;
    IF p_ref ? 'default' AND jsonb_typeof(value) = 'null' THEN
        value := p_ref -> 'default';
        error := NULL;
    END IF;
END
$$;

-- Render compiled sites (template_compile) into p_payload: the rendered
-- payload, or a null payload and the error (naming the template and where it
-- is). Never raises for bad data, so a set-based release can fail one child
-- and carry on with the others. The lookup of a value is written out here as
-- well as in template_resolve, which is only called when the lookup finds
-- nothing or a default is given: a call per template would double the cost of
-- a 10,000-way map.
CREATE FUNCTION sluice.template_apply(
    p_payload jsonb, p_sites jsonb, p_context jsonb, p_item jsonb DEFAULT NULL,
    p_index integer DEFAULT NULL, OUT payload jsonb, OUT error text
)
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_site  jsonb;
    v_parts jsonb;
    v_part  jsonb;
    v_path  text[];
    v_val   jsonb;
    v_text  text;
    v_whole boolean;
BEGIN
    payload := p_payload;
    FOR i IN 0 .. coalesce(jsonb_array_length(p_sites), 0) - 1 LOOP
        v_site := p_sites -> i;
        IF v_site ? 'errors' THEN
            error := coalesce('template ' || (v_site #>> '{errors,0,src}') || ' at ', 'at ')
                     || format('%s: %s', v_site ->> 'where', v_site #>> '{errors,0,error}');
            payload := NULL;
            RETURN;
        END IF;
        v_parts := v_site -> 'parts';
        v_whole := (v_site -> 'whole')::boolean;
        v_text := '';
        FOR k IN 0 .. jsonb_array_length(v_parts) - 1 LOOP
            v_part := v_parts -> k;
            IF jsonb_typeof(v_part) = 'string' THEN
                v_text := v_text || (v_part #>> '{}');
                CONTINUE;
            END IF;
            v_path := (v_part ->> 'path')::text[];
            v_val := CASE v_path[1]
                         WHEN 'item' THEN coalesce(p_item, p_context -> 'item')
                         WHEN 'index' THEN coalesce(to_jsonb(p_index), p_context -> 'index')
                         ELSE p_context -> v_path[1] END #> v_path[2:];
            IF v_val IS NULL OR v_part ? 'default' THEN
                SELECT r.value, r.error INTO v_val, error
                  FROM sluice.template_resolve(v_part, p_context, p_item, p_index) AS r;
                EXIT WHEN error IS NOT NULL;
            END IF;
            IF NOT v_whole THEN
                v_text := v_text || CASE WHEN jsonb_typeof(v_val) = 'string' THEN v_val #>> '{}'
                                         ELSE v_val::text END;
            END IF;
        END LOOP;
        IF NOT v_whole THEN
            v_val := to_jsonb(v_text);
        END IF;
        IF error IS NOT NULL THEN
            error := format('template %s at %s: %s', v_part ->> 'src', v_site ->> 'where', error);
            payload := NULL;
            RETURN;
        END IF;
        IF v_site ->> 'at' = '{}' THEN
            payload := v_val;
        ELSE
            payload := jsonb_set(payload, (v_site ->> 'at')::text[], v_val);
        END IF;
    END LOOP;
END
$$;

-- Render what a map's elements share, once: every template that does not use
-- item or index. The sites left (with the shared templates inside them turned
-- into text) are rendered per element by template_apply, which then needs no
-- context. A mistake in a shared template is reported once, for the node,
-- instead of once per element.
CREATE FUNCTION sluice.template_bind(
    p_payload jsonb, p_sites jsonb, p_context jsonb, OUT payload jsonb, OUT sites jsonb, OUT error text
)
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_site  jsonb;
    v_parts jsonb;
    v_part  jsonb;
    v_kept  jsonb;
    v_text  text;
    v_val   jsonb;
BEGIN
    payload := p_payload;
    sites := '[]';
    FOR i IN 0 .. coalesce(jsonb_array_length(p_sites), 0) - 1 LOOP
        v_site := p_sites -> i;
        IF v_site ? 'errors' OR NOT jsonb_path_exists(v_site, '$.parts[*] ? (@.root == "item" || @.root == "index")') THEN
            SELECT r.payload, r.error INTO payload, error
              FROM sluice.template_apply(payload, jsonb_build_array(v_site), p_context) AS r;
            IF error IS NOT NULL THEN
                sites := NULL;
                RETURN;
            END IF;
            CONTINUE;
        END IF;
        -- Shared templates inside an element's string become literal text.
        v_parts := v_site -> 'parts';
        v_kept := '[]';
        v_text := NULL;
        FOR k IN 0 .. jsonb_array_length(v_parts) - 1 LOOP
            v_part := v_parts -> k;
            IF jsonb_typeof(v_part) = 'object' AND v_part ->> 'root' NOT IN ('item', 'index') THEN
                SELECT r.value, r.error INTO v_val, error
                  FROM sluice.template_resolve(v_part, p_context, NULL, NULL) AS r;
                IF error IS NOT NULL THEN
                    error := format('template %s at %s: %s', v_part ->> 'src', v_site ->> 'where', error);
                    payload := NULL;
                    sites := NULL;
                    RETURN;
                END IF;
                v_part := to_jsonb(CASE WHEN jsonb_typeof(v_val) = 'string' THEN v_val #>> '{}'
                                        ELSE v_val::text END);
            END IF;
            IF jsonb_typeof(v_part) = 'string' THEN
                v_text := coalesce(v_text, '') || (v_part #>> '{}');
            ELSE
                IF v_text IS NOT NULL THEN
                    v_kept := v_kept || to_jsonb(v_text);
                    v_text := NULL;
                END IF;
                v_kept := v_kept || jsonb_build_array(v_part);
            END IF;
        END LOOP;
        IF v_text IS NOT NULL THEN
            v_kept := v_kept || to_jsonb(v_text);
        END IF;
        sites := sites || jsonb_build_array(jsonb_set(v_site, '{parts}', v_kept));
    END LOOP;
    IF sites = '[]' THEN
        sites := NULL;
    END IF;
END
$$;

-- Render a payload's templates against a context in one call, raising a clear
-- error (naming p_node when given) for a template that cannot be rendered. For
-- psql, tests and one-off renders; the engine compiles once and applies many.
CREATE FUNCTION sluice.template_render(p_payload jsonb, p_context jsonb, p_node text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_payload jsonb;
    v_error   text;
BEGIN
    SELECT r.payload, r.error INTO v_payload, v_error
      FROM sluice.template_apply(p_payload, sluice.template_compile(p_payload), p_context) AS r;
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION '%', CASE WHEN p_node IS NULL THEN v_error
                                  ELSE format('node %s: %s', p_node, v_error) END
            USING ERRCODE = 'invalid_parameter_value', CONSTRAINT = 'template_renders',
                  SCHEMA = 'sluice';
    END IF;
    RETURN v_payload;
END
$$;

-- Every template of a payload, for validation: where it is, its text, what it
-- refers to (root, and node id for nodes.*), and its problem if malformed.
CREATE FUNCTION sluice.template_refs(p_payload jsonb, p_where text DEFAULT 'payload')
    RETURNS TABLE (at text, template text, root text, node text, path text[], problem text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT s.site ->> 'where', p.part ->> 'src', p.part ->> 'root',
           CASE WHEN p.part ->> 'root' = 'nodes' THEN ((p.part ->> 'path')::text[])[2] END,
           (p.part ->> 'path')::text[], p.part ->> 'error'
      FROM jsonb_array_elements(sluice.template_compile(p_payload, p_where)) AS s(site)
     CROSS JOIN LATERAL (
            SELECT x.part FROM jsonb_array_elements(s.site -> 'parts') AS x(part)
             WHERE jsonb_typeof(x.part) = 'object' AND NOT x.part ? 'error'
            UNION ALL
            SELECT e.part FROM jsonb_array_elements(coalesce(s.site -> 'errors', '[]')) AS e(part)) p;
$$;


-- `when` conditions: SQL/JSON path predicates evaluated with jsonb_path_match
-- over {"nodes": {id: {"state", "result"}}, "params": {...}, "run": {...}}.

-- What is wrong with a condition, or null when it is fine. It must parse as a
-- jsonpath, use no $variables (none are passed), and not be a constant or a
-- method that can never be true or false (`1`, `$.type()`). A path to a value
-- that may be boolean at run time (`$.params.deploy`) is accepted.
CREATE FUNCTION sluice.when_problem(p_when text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_path   jsonpath;
    v_probe  jsonb;
BEGIN
    IF p_when IS NULL OR btrim(p_when) = '' THEN
        RETURN 'is empty';
    END IF;
    IF length(p_when) > 4000 THEN
        RETURN 'is longer than 4000 characters';
    END IF;
    -- PostgreSQL 16 has pg_input_is_valid; the cast in a sub-block works on 15
    -- too, and its message is the parser's own.
    BEGIN
        v_path := p_when::jsonpath;
    EXCEPTION WHEN OTHERS THEN
        RETURN format('does not parse as a SQL/JSON path: %s', SQLERRM);
    END;
    -- Evaluated on an empty object, a predicate yields one true, false or null;
    -- a path yields nothing; a constant or a method yields what can never be a
    -- condition. A $variable fails even in silent mode.
    BEGIN
        v_probe := jsonb_path_query_array('{}', v_path, '{}', true);
    EXCEPTION WHEN undefined_object THEN
        RETURN 'uses a $variable: refer to values through $.params, $.nodes or $.run';
    WHEN OTHERS THEN
        RETURN format('cannot be evaluated: %s', SQLERRM);
    END;
    IF jsonb_array_length(v_probe) > 1
       OR coalesce(jsonb_typeof(v_probe -> 0), 'boolean') NOT IN ('boolean', 'null') THEN
        RETURN format('is not a condition: it gives %s, not true or false (compare something, as in $.nodes.ID.result.rows > 0)',
                      left(v_probe::text, 60));
    END IF;
    RETURN NULL;
END
$$;

-- A condition in PostgreSQL's normalised form (`$."nodes"."a"."result" > 0`),
-- or null when it does not parse: what the checks below read.
CREATE FUNCTION sluice.when_normal(p_when text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN p_when::jsonpath::text;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- The node ids a condition refers to as $.nodes.ID (or $.nodes."ID"), read from
-- the normalised text, so spacing and quoting do not matter. Wildcards
-- ($.nodes.*) name no node; a condition that does not parse names none.
CREATE FUNCTION sluice.when_nodes(p_when text) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT ('"' || m[1] || '"')::jsonb #>> '{}'), '{}')
      FROM regexp_matches(sluice.when_normal(p_when), '\$\."nodes"\."((?:[^"\\]|\\.)*)"', 'g') AS m;
$$;

-- Whether a node's condition holds: true, false, or null when it is unknown
-- (values of different types compared, a strict-mode path that does not exist,
-- a result that is not one boolean). Errors are silenced as the @@ operator
-- silences them; the engine fails the node on null rather than guess.
CREATE FUNCTION sluice.when_eval(p_when text, p_context jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_path_match(p_context, p_when::jsonpath, '{}', true);


-- Every data-flow problem of a definition's nodes at once, with its place:
-- malformed templates, templates or conditions naming an unknown node or one
-- that is not an ancestor, item/index outside a mapped node, a map that is not
-- a list (or one template giving one), a map inside a map, a condition that
-- does not parse. p_nodes is a list of {"id", "depends_on", "payload", "map",
-- "when", "at"}; "at" (default nodes[i]) prefixes each place, so the API can
-- report the places of the document the user wrote.
--
-- Linear in nodes plus references (a 10,000-node chain whose every node names
-- its grandparent: 0.85 s of CPU). JIT is off for it: compiling this statement
-- cost 1.8 s, for DAGs of any size.
CREATE FUNCTION sluice.dag_dataflow_problems(p_nodes jsonb)
    RETURNS TABLE (at text, problem text)
    LANGUAGE sql STABLE
    SET jit = off
    AS $$
    WITH RECURSIVE nodes AS (
        SELECT n.ord, n.node ->> 'id' AS id,
               coalesce(n.node ->> 'at', format('nodes[%s]', n.ord - 1)) AS at,
               n.node
          FROM jsonb_array_elements(p_nodes) WITH ORDINALITY AS n(node, ord)
    ), edges AS (
        SELECT n.id AS child, d.parent
          FROM nodes n
         CROSS JOIN LATERAL jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(n.node -> 'depends_on') = 'array' THEN n.node -> 'depends_on' END) AS d(parent)
    ), refs AS (
        SELECT n.ord, n.id AS child, n.node ? 'map' AS mapped, 'payload' AS kind, r.*
          FROM nodes n
         CROSS JOIN LATERAL sluice.template_refs(n.node -> 'payload', n.at || '.payload') r
        UNION ALL
        SELECT n.ord, n.id, true, 'map', r.*
          FROM nodes n
         CROSS JOIN LATERAL sluice.template_refs(n.node -> 'map', n.at || '.map') r
         WHERE jsonb_typeof(n.node -> 'map') = 'string'
        UNION ALL
        SELECT n.ord, n.id, n.node ? 'map', 'when', n.at || '.when', NULL, 'nodes', w.node, NULL, NULL
          FROM nodes n
         CROSS JOIN LATERAL unnest(sluice.when_nodes(n.node ->> 'when')) AS w(node)
         WHERE jsonb_typeof(n.node -> 'when') = 'string' AND sluice.when_problem(n.node ->> 'when') IS NULL
    ), far AS (
        -- References to nodes that are not direct parents: search upwards from
        -- the referring node, stopping a branch at the node looked for.
        SELECT DISTINCT r.child, r.node AS target
          FROM refs r
         WHERE r.node IS NOT NULL
           AND EXISTS (SELECT 1 FROM nodes n WHERE n.id = r.node)
           AND NOT EXISTS (SELECT 1 FROM edges e WHERE e.child = r.child AND e.parent = r.node)
    ), up(child, target, node) AS (
        SELECT f.child, f.target, e.parent FROM far f JOIN edges e ON e.child = f.child
        UNION
        SELECT u.child, u.target, e.parent
          FROM up u JOIN edges e ON e.child = u.node
         WHERE u.node <> u.target
    ), reached AS (
        -- Grouped so that the planner's guess of its size is small: a hash of
        -- `up` itself, whose size it cannot guess, was split into 262,144 batches
        -- (a 1,000-node DAG took 0.6 s instead of 0.01 s).
        SELECT u.child, u.target FROM up u WHERE u.node = u.target GROUP BY u.child, u.target
    ), problems AS (
        SELECT r.ord, r.at, coalesce('template ' || r.template || ': ', '') || r.problem AS problem, 1 AS rank
          FROM refs r
         WHERE r.problem IS NOT NULL
        UNION ALL
        SELECT r.ord, r.at, CASE WHEN r.kind = 'when'
                          THEN format('names unknown node %s', to_jsonb(r.node))
                          ELSE format('template %s names unknown node %s', r.template, to_jsonb(r.node)) END, 2
          FROM refs r
         WHERE r.node IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = r.node)
        UNION ALL
        SELECT r.ord, r.at, CASE WHEN r.kind = 'when' THEN '' ELSE 'template ' || r.template || ': ' END
                     || CASE WHEN r.node = r.child THEN 'a node cannot use its own result or state'
                             ELSE format('node %s is not an ancestor of %s (add it to depends_on, directly or through a parent)',
                                         to_jsonb(r.node), to_jsonb(r.child)) END, 3
          FROM refs r
          JOIN far f ON f.child = r.child AND f.target = r.node
         WHERE NOT EXISTS (SELECT 1 FROM reached x WHERE x.child = f.child AND x.target = f.target)
        UNION ALL
        SELECT r.ord, r.at, format('template %s: %s is only defined in a node with map', r.template, r.root), 4
          FROM refs r
         WHERE r.root IN ('item', 'index') AND r.kind = 'payload' AND NOT r.mapped
        UNION ALL
        SELECT r.ord, r.at, format('template %s: a map inside a map is not supported (map over a list from a parent or from params)',
                            r.template), 5
          FROM refs r
         WHERE r.root IN ('item', 'index') AND r.kind = 'map'
        UNION ALL
        SELECT r.ord, r.at, format('template %s: a node state is a string, not a list', r.template), 6
          FROM refs r
         WHERE r.kind = 'map' AND r.root = 'nodes' AND r.path[3] = 'state' AND cardinality(r.path) = 3
        UNION ALL
        SELECT n.ord, n.at || '.map', 'must be a list, or one template that gives a list (such as "{{ nodes.ID.result.items }}")', 7
          FROM nodes n
         WHERE n.node ? 'map'
           AND (jsonb_typeof(n.node -> 'map') NOT IN ('array', 'string')
                OR (jsonb_typeof(n.node -> 'map') = 'string'
                    AND coalesce((sluice.template_parse(n.node ->> 'map') ->> 'whole')::boolean, false) IS NOT TRUE))
        UNION ALL
        SELECT n.ord, n.at || '.when', sluice.when_problem(n.node ->> 'when'), 8
          FROM nodes n
         WHERE n.node ? 'when'
           AND (jsonb_typeof(n.node -> 'when') <> 'string' OR sluice.when_problem(n.node ->> 'when') IS NOT NULL)
        UNION ALL
        SELECT n.ord, n.at || '.when', 'a condition cannot use $.item or $.index: it is evaluated once per node, before any map', 9
          FROM nodes n
         WHERE jsonb_typeof(n.node -> 'when') = 'string' AND sluice.when_problem(n.node ->> 'when') IS NULL
           AND sluice.when_normal(n.node ->> 'when') ~ '\$\."(item|index)"'
    )
    SELECT p.at, coalesce(p.problem, 'must be a SQL/JSON path predicate (a string)')
      FROM problems p
     ORDER BY p.ord, p.at, p.rank, p.problem;
$$;
