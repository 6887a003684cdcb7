-- Fewer writes per transition. Status is indexed, so no update of a job row is HOT: each of
-- the three transitions a job makes after its insert (queued, running, finished) adds an entry
-- to every index of jobs, and each job_events insert checked its foreign key with a row lock
-- on the job. Measured on 40k no-op jobs (dispatcher + one worker, 2 cores): PostgreSQL CPU
-- 5.0 s → 3.1 s, drain 4,500 → 7,300 jobs/s.
--
-- * job_events keeps job_id without a foreign key: history rows are written only by the
--   lifecycle's transitions, in the same statement as the job row they describe, and the
--   reaper's retention deletes a job's history together with the job.
-- * jobs_type_created and jobs_queue_status go: listing by type walks jobs_created with a
--   filter, and the per-queue counts read the active rows through jobs_status_created.
-- * job_events is keyed (job_id, id): the one index serves "history of a job, in order".
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;
DROP INDEX jobs_type_created;
DROP INDEX jobs_queue_status;
ALTER TABLE job_events DROP CONSTRAINT job_events_pkey;
DROP INDEX job_events_job;
ALTER TABLE job_events ADD PRIMARY KEY (job_id, id);
