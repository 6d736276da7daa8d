-- name: schema_revision :scalar
SELECT version_num FROM sluice.alembic_version;
