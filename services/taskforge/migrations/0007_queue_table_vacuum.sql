-- A queue table churns: every job's row is updated three times and later deleted, and the
-- dispatcher's partial index (jobs_due) collects a dead entry per update until VACUUM clears
-- it. With the default 20% threshold a large jobs table waits long for autovacuum while the
-- dispatcher's queries wade through dead entries. Vacuum this table early and without cost
-- throttling; job_events is append-mostly and only needs its visibility map kept current.
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE job_events SET (autovacuum_vacuum_insert_scale_factor = 0.05);
