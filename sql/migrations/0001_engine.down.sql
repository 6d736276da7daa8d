-- Remove everything the engine created in the sluice schema, keeping only
-- Alembic's version table (Alembic updates it after this runs). Tables go with
-- their indexes, triggers and the views on them; then functions; then types
-- and domains.
-- Names are collected before anything is dropped: a CASCADE may take later ones.
DO $$
DECLARE
    v_object text;
BEGIN
    FOREACH v_object IN ARRAY ARRAY(
        SELECT format('%I.%I', n.nspname, c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'sluice' AND c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version')
    LOOP
        EXECUTE 'DROP TABLE IF EXISTS ' || v_object || ' CASCADE';
    END LOOP;
    FOREACH v_object IN ARRAY ARRAY(
        SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'sluice'::regnamespace)
    LOOP
        EXECUTE 'DROP FUNCTION IF EXISTS ' || v_object || ' CASCADE';
    END LOOP;
    FOREACH v_object IN ARRAY ARRAY(
        SELECT format('%I.%I', n.nspname, t.typname)
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'sluice' AND t.typtype IN ('e', 'd'))
    LOOP
        EXECUTE 'DROP TYPE IF EXISTS ' || v_object || ' CASCADE';
    END LOOP;
END
$$;
