-- DAG edges: the child may start only after every parent has succeeded.
-- Edges are rows, so a DAG can be built in plain SQL in one transaction; the
-- triggers in 31_dag.sql keep jobs.pending_parents in step.
--
-- No foreign keys: sluice.jobs is partitioned (13_jobs.sql) and has no unique
-- key on id alone. job_edges_after_insert locks every job an edge names and
-- refuses an edge to a job that does not exist with the SQLSTATE and the
-- constraint names the foreign keys had (job_edges_parent_id_fkey,
-- job_edges_child_id_fkey); jobs_after_delete and history retirement delete
-- the edges of deleted jobs.
CREATE TABLE sluice.job_edges (
    parent_id bigint NOT NULL,
    child_id  bigint NOT NULL,
    PRIMARY KEY (parent_id, child_id),
    CONSTRAINT job_edges_no_self_loop CHECK (parent_id <> child_id)
);
-- The primary key finds a parent's children (release); this finds a child's parents.
CREATE INDEX job_edges_child ON sluice.job_edges (child_id);

-- One row: the turn that edge inserts between existing jobs take, one
-- transaction at a time. Two such inserts that together close a cycle (a->b
-- while c->d, with b->c and d->a already there) lock disjoint jobs, and each
-- would find no cycle in its own snapshot; updating this row serialises them,
-- and the second one's cycle check (a later statement) sees the first's edges.
-- Updated rather than only locked so that a REPEATABLE READ or SERIALIZABLE
-- caller, whose snapshot cannot see edges committed after it was taken, gets
-- a serialization failure (retry the transaction) instead of a stale check.
-- Edges whose children, and everything below them, were created (or already
-- locked) by the inserting transaction skip the turn: see job_edges_after_insert.
CREATE TABLE sluice.job_edges_turn (
    one   boolean PRIMARY KEY DEFAULT true CONSTRAINT job_edges_turn_one_row CHECK (one),
    turns bigint NOT NULL DEFAULT 0
);
INSERT INTO sluice.job_edges_turn DEFAULT VALUES;
