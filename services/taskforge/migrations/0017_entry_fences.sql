-- A worker's attempt is fenced by its stream entry as well as its attempt number, and a claim
-- whose reply was lost can be made again by the same worker.
--
-- The finish and the lease renewal were fenced by (status running, attempts). A replay from
-- the DLQ resets attempts to 0, so a worker that held attempt 1 of the old run, partitioned
-- away meanwhile, could come back and finish or renew attempt 1 of the replayed run. A claimed
-- row keeps the stream id of the entry it was claimed from until it leaves `running`, and every
-- dispatch makes a new entry id, so (attempts, stream_id) names one attempt of one run. The new
-- overloads of taskforge_finish and taskforge_renew_leases take p_stream_ids and require
-- `j.stream_id = o.stream_id` too.
--
-- They are overloads (one more argument), not new versions of the old signatures: a worker of
-- the previous release calls the old ones during a rolling upgrade and has no stream ids to
-- pass, and PostgreSQL cannot change a function's argument list in place (CREATE OR REPLACE
-- with other arguments makes an overload anyway, and dropping the old one would break those
-- workers). The old ones stay as 0015 left them, fenced by the attempt only, until no worker
-- of that release is left; a later migration may drop them.
--
-- The new taskforge_finish also ends `cancelled` an attempt reported `retrying` whose job has
-- cancel_requested: its handler failed (or timed out) just as the cancel arrived, too late for
-- the worker to stop it, and retried it would run again though it was asked to end.
--
-- A new overload of taskforge_claim, with p_again, adds a last step: entries the UPDATE did
-- not claim, whose row is already `running` for this very worker from this very entry, come
-- back as claimed, attempts unchanged and no job_events row. That is a worker claiming again
-- the entries it kept after a claim that raised (its reply lost after the COMMIT): it used to
-- find them `running`, take them for stale, ack them, and leave the job running until its
-- lease lapsed and the reaper retried it. Only such a claim passes p_again = true: an entry
-- read afresh that Redis delivered again to the same consumer (a failover to a replica whose
-- group position lags) may belong to a job this worker has already run and not yet recorded,
-- and must stay stale. The step only runs when the UPDATE missed entries (after the second
-- pass), so a claim whose entries all match pays nothing for it. The old signature stays as
-- 0015 left it, for workers of the previous release.
--
-- The step renews the lease (as a heartbeat would) but changes nothing else. The worker takes
-- the deadline it enforces on a handler before it sends the claim, so its idea of the lease
-- must never outlast the row's; the lease set by the lost claim began earlier, by the backoff
-- and outage the worker waited through, and a handler stopped only at the worker's deadline
-- could have run on past it while the reaper gave the job to someone else.
--
-- Every function here keeps 0015's plan design: planned once per session, rows named by id
-- twice (`j.id = ANY (p_ids)` and the unnest join), expected statuses as unnest columns, nested
-- loops, merge joins and sequential scans off.

CREATE FUNCTION taskforge_claim(p_ids uuid[], p_stream_ids text[], p_worker text,
                                p_lease float8, p_dispatch_locks integer[], p_again boolean)
RETURNS TABLE (id uuid, queue text, type text, payload jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, traceparent text,
               tracestate text, stream_id text, created_at timestamptz, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
DECLARE
    claimed_count bigint;
    claimed_total bigint := 0;
BEGIN
    FOR pass IN 1..2 LOOP
        IF pass = 2 THEN
            -- Wait for the dispatches of these entries to end (0010); the next UPDATE, a
            -- new statement, then sees their commits. Rows claimed in pass 1 are ours.
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
            WHERE j.id = ANY (p_ids) AND j.id = m.id AND j.status = m.expected
              AND j.stream_id = m.stream_id
            RETURNING j.id, j.queue, j.type, j.payload, j.attempts, j.max_attempts,
                      j.timeout_seconds, j.traceparent, j.tracestate, j.stream_id,
                      j.created_at, j.run_at
        ), ev AS (
            INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
            SELECT c.id, 'queued', 'running', c.attempts, p_worker, NULL FROM claimed c
        )
        SELECT * FROM claimed;
        GET DIAGNOSTICS claimed_count = ROW_COUNT;
        claimed_total := claimed_total + claimed_count;
        -- Every entry matched: nothing was still committing, and no entry was stale.
        EXIT WHEN claimed_total >= cardinality(p_ids);
    END LOOP;
    IF claimed_total >= cardinality(p_ids) OR NOT p_again THEN
        RETURN;
    END IF;
    -- Entries this worker already claimed from the same entry, in an earlier transaction whose
    -- reply it lost. After the UPDATEs: a lost claim still committing held its rows, the
    -- UPDATE waited for it, and this statement sees its commit. The rows this call claimed
    -- match too, and carry this transaction's start time as started_at (now() is constant
    -- within a transaction); an earlier claim's is earlier, so they are told apart. Were the
    -- two ever equal, the entry would only be taken for stale, as before.
    RETURN QUERY
    UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => p_lease),
        updated_at = now()
    FROM unnest(p_ids, p_stream_ids, array_fill('running'::text, ARRAY[cardinality(p_ids)]))
         AS m(id, stream_id, expected)
    WHERE j.id = ANY (p_ids) AND j.id = m.id AND j.status = m.expected
      AND j.stream_id = m.stream_id AND j.worker = p_worker
      AND j.started_at IS DISTINCT FROM now()
    RETURNING j.id, j.queue, j.type, j.payload, j.attempts, j.max_attempts,
              j.timeout_seconds, j.traceparent, j.tracestate, j.stream_id,
              j.created_at, j.run_at;
END $$;

CREATE FUNCTION taskforge_finish(p_ids uuid[], p_attempts integer[], p_stream_ids text[],
                                 p_statuses text[], p_results text[], p_errors text[],
                                 p_delays float8[], p_actor text)
RETURNS TABLE (id uuid, status text, attempts integer, queue text, type text,
               last_error text, traceparent text, tracestate text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH done AS (
        -- An attempt that failed while its cancel was on the way (the handler ended before
        -- the worker could stop it) is not retried: the job was asked to end, so it ends
        -- cancelled, the attempt's error kept. Read from the row being updated (j), so a
        -- cancel that commits meanwhile is seen when the row is re-checked.
        UPDATE jobs j SET
            status = CASE WHEN o.status = 'retrying' AND j.cancel_requested THEN 'cancelled'
                          ELSE o.status END,
            result = CASE WHEN o.status = 'completed' THEN o.result::jsonb ELSE j.result END,
            last_error = COALESCE(o.error, j.last_error),
            run_at = CASE WHEN o.status = 'retrying' AND NOT j.cancel_requested
                          THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
            finished_at = CASE WHEN o.status IN ('completed', 'dead', 'cancelled')
                                 OR j.cancel_requested THEN now() END,
            lease_expires_at = NULL, stream_id = NULL, updated_at = now()
        FROM unnest(p_ids, p_attempts, p_stream_ids, p_statuses, p_results, p_errors, p_delays,
                    array_fill('running'::text, ARRAY[cardinality(p_ids)]))
             AS o(id, attempt, stream_id, status, result, error, delay, expected)
        WHERE j.id = ANY (p_ids) AND j.id = o.id AND j.status = o.expected
          AND j.attempts = o.attempt AND j.stream_id = o.stream_id
        RETURNING j.id, j.status, j.attempts, j.queue, j.type, j.last_error, j.traceparent,
                  j.tracestate, o.error
    ), ev AS (
        INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
        SELECT done.id, 'running', done.status, done.attempts, p_actor, done.error FROM done
    )
    SELECT done.id, done.status, done.attempts, done.queue, done.type, done.last_error,
           done.traceparent, done.tracestate
    FROM done;
END $$;

CREATE FUNCTION taskforge_renew_leases(p_ids uuid[], p_attempts integer[],
                                       p_stream_ids text[], p_lease float8)
RETURNS TABLE (id uuid, cancel_requested boolean)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => p_lease),
        updated_at = now()
    FROM unnest(p_ids, p_attempts, p_stream_ids,
                array_fill('running'::text, ARRAY[cardinality(p_ids)]))
         AS r(id, attempt, stream_id, expected)
    WHERE j.id = ANY (p_ids) AND j.id = r.id AND j.status = r.expected
      AND j.attempts = r.attempt AND j.stream_id = r.stream_id
    RETURNING j.id, j.cancel_requested;
END $$;
