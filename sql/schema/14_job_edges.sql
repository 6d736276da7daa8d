-- DAG edges: the child may start only after every parent has succeeded.
-- Edges are rows, so a DAG can be built in plain SQL in one transaction; the
-- triggers in 31_job_edges_triggers.sql keep jobs.pending_parents in step.
CREATE TABLE sluice.job_edges (
    parent_id bigint NOT NULL REFERENCES sluice.jobs (id) ON DELETE CASCADE,
    child_id  bigint NOT NULL REFERENCES sluice.jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id),
    CONSTRAINT job_edges_no_self_loop CHECK (parent_id <> child_id)
);
-- The primary key finds a parent's children (release); this finds a child's parents.
CREATE INDEX job_edges_child ON sluice.job_edges (child_id);
