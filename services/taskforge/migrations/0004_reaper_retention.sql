-- The reaper's retention: finished jobs by status and age, oldest first, without scanning
-- the live rows. updated_at of a terminal row is when it became terminal.
CREATE INDEX jobs_finished_age ON jobs (status, updated_at)
    WHERE status IN ('completed', 'cancelled', 'dead');
