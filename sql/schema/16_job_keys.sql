-- Idempotency keys: unique per tenant for as long as their job is kept.
-- sluice.jobs is partitioned (13_jobs.sql) and cannot carry a unique index on
-- (tenant, idempotency_key) across its partitions, so the keys have a table of
-- their own, written by the live partition's BEFORE INSERT trigger
-- (jobs_claim_key, 30_jobs_triggers.sql) for every job inserted with a key,
-- whoever inserts it. The primary key's name is the one the unique index on
-- sluice.jobs had: a duplicate reports the same constraint. A key goes with its
-- job (jobs_after_delete, history retirement).
CREATE TABLE sluice.job_keys (
    tenant          sluice.tenant_name NOT NULL,
    idempotency_key text NOT NULL,
    job_id          bigint NOT NULL,
    CONSTRAINT jobs_idempotency_key PRIMARY KEY (tenant, idempotency_key)
);
-- Retirement and deletes find a job's key by its id.
CREATE INDEX job_keys_job ON sluice.job_keys (job_id);
