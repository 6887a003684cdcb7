-- The claim waits for a dispatch still committing on the dispatch's advisory lock, not on the
-- rows. A worker often reads an entry before the scheduler has committed its dispatch (the
-- XADD comes before the COMMIT); 0009's claim then missed the row, locked every missed row
-- (a heap write and a WAL record each) and updated them in a second pass. Under single
-- submits that was three claims in four. The scheduler now holds an advisory lock (class
-- 0x74666470 = 1952867440, a random key per dispatch, carried in each entry) from before its
-- XADD to its COMMIT; the claim takes each distinct key shared first, which waits for those
-- dispatches only, and then matches in one pass. Entries without a key (0: a scheduler of
-- the previous release) and stale entries still get 0009's lock pass. The four-argument
-- function stays for workers of the previous release during a rolling upgrade.
CREATE FUNCTION taskforge_claim(p_ids uuid[], p_stream_ids text[], p_worker text, p_lease float8,
                                p_dispatch_locks integer[])
RETURNS TABLE (id uuid, queue text, type text, payload jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, traceparent text,
               tracestate text, stream_id text, created_at timestamptz, run_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    claimed_count bigint;
BEGIN
    -- In key order, so that two claims never wait on each other; a shared lock never waits
    -- on another claim, only on the dispatch holding the key.
    PERFORM pg_advisory_xact_lock_shared(1952867440, k)
    FROM (SELECT DISTINCT k FROM unnest(p_dispatch_locks) AS l(k) WHERE k <> 0 ORDER BY k) s;
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
