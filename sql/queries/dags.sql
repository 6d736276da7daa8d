-- Runtime queries on DAG definitions for the API. A DAG is one row per version;
-- "the DAG" is its newest version.

-- name: dag_save :one
SELECT * FROM sluice.dag_save(%(tenant)s, %(name)s, %(definition)s, %(created_by)s);

-- The newest version of each DAG, by name, keyset-paginated on (name, tenant):
-- an admin's list holds the same name once per tenant, and a page may end
-- between them.
-- name: dag_list :many
SELECT DISTINCT ON (d.name, d.tenant)
       d.tenant, d.name, d.version, d.definition, d.created_at, d.created_by
  FROM sluice.dags d
 WHERE (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)
   AND (%(after_name)s::text IS NULL
        OR (d.name, d.tenant) > (%(after_name)s::text, %(after_tenant)s::text))
 ORDER BY d.name, d.tenant, d.version DESC
 LIMIT %(limit)s;

-- One version (null: the newest) of a DAG, with the list of its versions.
-- name: dag_get :one
SELECT d.tenant, d.name, d.version, d.definition, d.created_at, d.created_by,
       (SELECT array_agg(v.version ORDER BY v.version)
          FROM sluice.dags v WHERE v.tenant = d.tenant AND v.name = d.name) AS versions
  FROM sluice.dags d
 WHERE d.tenant = %(tenant)s AND d.name = %(name)s
   AND (%(version)s::integer IS NULL OR d.version = %(version)s)
 ORDER BY d.version DESC
 LIMIT 1;

-- Every version goes; runs keep the name and version they ran.
-- name: dag_delete :rows
DELETE FROM sluice.dags WHERE tenant = %(tenant)s AND name = %(name)s;

-- Every data-flow problem of a definition's normalised nodes (templates,
-- conditions, maps: sluice.dag_dataflow_problems) and of its concurrency key,
-- which may read only params and run. Each problem at its place.
-- name: dag_dataflow_problems :many
SELECT p.at, p.problem FROM sluice.dag_dataflow_problems(%(nodes)s) p
UNION ALL
SELECT r.at, coalesce('template ' || r.template || ': ', '')
             || coalesce(r.problem, 'a concurrency key may only use params and run')
  FROM sluice.template_refs(%(concurrency_key)s, %(key_at)s) r
 WHERE r.problem IS NOT NULL OR r.root NOT IN ('params', 'run');
