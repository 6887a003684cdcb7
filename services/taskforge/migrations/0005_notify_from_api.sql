-- The per-statement NOTIFY trigger serialized committing inserts (a NOTIFY takes a
-- database-wide lock at commit). Producers now wake the dispatcher themselves, coalesced:
-- the api through one notifier connection, taskforge.client.enqueue inside its transaction.
DROP TRIGGER IF EXISTS jobs_inserted ON jobs;
DROP FUNCTION IF EXISTS taskforge_notify_jobs();
