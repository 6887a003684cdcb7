-- The worker's claim as one round trip that cannot miss a row still being dispatched.
--
-- The scheduler XADDs while it holds the rows locked and marks them queued just before it
-- commits, so a fast worker can read an entry whose row is, in its snapshot, still pending.
-- A plain UPDATE ... WHERE status = 'queued' would skip that row (the qual fails on the
-- visible version) and the worker would drop a good entry as stale. Locking the rows first
-- waits for the dispatcher's commit; the UPDATE, a new statement in a VOLATILE function,
-- then takes a fresh snapshot and sees the row queued with this stream id.
CREATE FUNCTION taskforge_claim(p_ids uuid[], p_stream_ids text[], p_worker text, p_lease float8)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM jobs WHERE id = ANY (p_ids) ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH claimed AS (
        UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, worker = p_worker,
            lease_expires_at = now() + make_interval(secs => p_lease),
            started_at = now(), updated_at = now()
        FROM unnest(p_ids, p_stream_ids) AS m(id, stream_id)
        WHERE j.id = m.id AND j.status = 'queued' AND j.stream_id = m.stream_id
        RETURNING j.*
    ), ev AS (
        INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
        SELECT c.id, 'queued', 'running', c.attempts, p_worker, NULL FROM claimed c
    )
    SELECT * FROM claimed;
END $$;
