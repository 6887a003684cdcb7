-- A leaner claim: one write per claimed row instead of two, and only the columns a worker
-- runs a job with.
--
-- * The lock pass of 0002 (which waits for a dispatcher still committing the rows) runs only
--   when the UPDATE missed some entries. Under load the entries are read well after their
--   dispatch committed and every row matches at once; a row lock is a heap write and a WAL
--   record of its own, so locking every row first doubled the claim's writes. A missed entry
--   (dispatch still committing, or a stale entry) gets the lock pass and a second UPDATE in
--   a new snapshot, as before.
-- * The result, last_error, idempotency key, request hash and five timestamps a worker never
--   reads are no longer formed, sent and decoded per job. The columns keep the names of
--   jobs, so a worker of the previous release (SELECT * and by-name reads) keeps working
--   during a rolling upgrade.
DROP FUNCTION IF EXISTS taskforge_claim(uuid[], text[], text, float8);
CREATE FUNCTION taskforge_claim(p_ids uuid[], p_stream_ids text[], p_worker text, p_lease float8)
RETURNS TABLE (id uuid, queue text, type text, payload jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, traceparent text,
               tracestate text, stream_id text, created_at timestamptz, run_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    claimed_count bigint;
BEGIN
    FOR pass IN 1..2 LOOP
        IF pass = 2 THEN
            -- Wait for a dispatcher still holding any of these rows; the next UPDATE, a new
            -- statement, then sees its commit. Rows claimed in pass 1 are ours already.
            PERFORM 1 FROM jobs j WHERE j.id = ANY (p_ids) ORDER BY j.id FOR UPDATE;
        END IF;
        RETURN QUERY
        WITH claimed AS (
            UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, worker = p_worker,
                lease_expires_at = now() + make_interval(secs => p_lease),
                started_at = now(), updated_at = now()
            FROM unnest(p_ids, p_stream_ids) AS m(id, stream_id)
            WHERE j.id = m.id AND j.status = 'queued' AND j.stream_id = m.stream_id
            RETURNING j.id, j.queue, j.type, j.payload, j.attempts, j.max_attempts,
                      j.timeout_seconds, j.traceparent, j.tracestate, j.stream_id,
                      j.created_at, j.run_at
        ), ev AS (
            INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
            SELECT c.id, 'queued', 'running', c.attempts, p_worker, NULL FROM claimed c
        )
        SELECT * FROM claimed;
        GET DIAGNOSTICS claimed_count = ROW_COUNT;
        -- Every entry matched: nothing was still committing, and no entry was stale.
        EXIT WHEN claimed_count >= cardinality(p_ids);
    END LOOP;
END $$;
