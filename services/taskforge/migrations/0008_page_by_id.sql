-- Listings page by the time-ordered UUIDv7 id instead of (created_at, id): the primary key
-- already orders jobs newest first, so jobs_created goes, and the status index keys on
-- (status, id). No update of a job row is HOT (status is indexed), so each of a job's four
-- writes added an entry to jobs_created as well: measured on 20k no-op jobs, see the commit.
-- On a large existing table these CREATE INDEX statements hold a write lock while they
-- build; run the migration in a quiet moment (or build jobs_status_id CONCURRENTLY first).
DROP INDEX IF EXISTS jobs_created;
CREATE INDEX jobs_status_id ON jobs (status, id);
DROP INDEX IF EXISTS jobs_status_created;
