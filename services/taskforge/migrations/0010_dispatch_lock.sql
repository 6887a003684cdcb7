-- The claim waits for a dispatch still committing on the dispatch's advisory lock, not on the
-- rows. A worker can read an entry before the scheduler has committed its dispatch (the XADD
-- comes before the COMMIT); 0009's claim then missed the row, locked every row of the batch
-- (a heap write and a WAL record each) and updated the missed ones in a second pass. Under
-- single submits that was three claims in four. The scheduler now holds an advisory lock
-- (class 0x74666470 = 1952867440, a random key per dispatch, carried in each entry) from
-- before its XADD to its COMMIT. The first pass is 0009's UPDATE; only when it missed some
-- entries does the claim take the batch's keys shared (waiting for those dispatches only;
-- shared locks never wait on each other) and try again. Taking the keys before the first
-- pass was measured too: a statement on every claim, 0.13 ms more per claim at 100 jobs/s
-- where most dispatches have committed by the time their entry is read. Entries without a key
-- (0: a scheduler of the previous release) still get 0009's row-lock pass. The four-argument
-- function stays for workers of the previous release during a rolling upgrade. The UPDATE
-- finds its rows by id whatever the planner's statistics say (the expected status comes with
-- the batch; hash and merge joins and sequential scans are off inside): see 0011.
CREATE FUNCTION taskforge_claim(p_ids uuid[], p_stream_ids text[], p_worker text, p_lease float8,
                                p_dispatch_locks integer[])
RETURNS TABLE (id uuid, queue text, type text, payload jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, traceparent text,
               tracestate text, stream_id text, created_at timestamptz, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
DECLARE
    claimed_count bigint;
BEGIN
    FOR pass IN 1..2 LOOP
        IF pass = 2 THEN
            -- Wait for the dispatches of these entries to end; the next UPDATE, a new
            -- statement, then sees their commits. Rows claimed in pass 1 are ours already.
            -- A key taken twice, or one whose dispatch has ended, costs no wait.
            PERFORM pg_advisory_xact_lock_shared(1952867440, k)
            FROM unnest(p_dispatch_locks) AS l(k) WHERE k <> 0;
            IF 0 = ANY (p_dispatch_locks) THEN
                -- An entry without a key: wait for whoever holds the rows, as 0009 did.
                PERFORM 1 FROM jobs j WHERE j.id = ANY (p_ids) ORDER BY j.id FOR UPDATE;
            END IF;
        END IF;
        RETURN QUERY
        WITH claimed AS (
            UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, worker = p_worker,
                lease_expires_at = now() + make_interval(secs => p_lease),
                started_at = now(), updated_at = now()
            FROM unnest(p_ids, p_stream_ids,
                        array_fill('queued'::text, ARRAY[cardinality(p_ids)]))
                 AS m(id, stream_id, expected)
            WHERE j.id = m.id AND j.status = m.expected AND j.stream_id = m.stream_id
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
