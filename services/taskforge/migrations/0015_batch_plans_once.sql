-- The batch transitions (dispatch's mark-queued, claim, finish, lease renewal) are planned
-- once per session, not on every call.
--
-- Workers and the scheduler plan every execution (plan_cache_mode = force_custom_plan on
-- their pools), so each of these functions planned its UPDATE on every call: 0.13-0.18 ms a
-- call against 0.07-0.10 ms of running it at 100 jobs/s (pg_stat_statements), a claim that
-- waited for its dispatch twice — a fifth of PostgreSQL's CPU at a trickle. A plan cached
-- once must stay good whatever the table held when it was made, and the nested loop of 0011
-- (the batch outside, one primary-key probe per entry inside) is not what a generic plan made
-- on a table of one row picks: it reads the whole primary key for every call instead (2.3 s
-- for 500 entries of 30k queued jobs, measured).
--
-- So each UPDATE now names its rows by id twice: `j.id = ANY (p_ids)`, which the primary key
-- serves (an index scan of the batch's ids, in id order, whatever the statistics), and the
-- join to the unnest that pairs each row with its entry. Nested loops are off inside, so the
-- two meet in a hash join of two batch-sized inputs (a nested loop would rescan the ids for
-- every entry); sequential scans and merge joins stay off. That plan is the only one left
-- whether the statistics say the table is empty or huge, so it is made once and kept.
-- Measured on 60k queued jobs, the plan made on a table of one row: a 500-entry claim 5.7 ms
-- round trip included (0011's nested loop, planned per call: 6.1 ms), one entry 0.74 ms
-- (0.78).
--
-- Signatures and results are unchanged: a worker or scheduler of the previous release calls
-- these during a rolling upgrade.

CREATE OR REPLACE FUNCTION taskforge_mark_queued(p_ids uuid[], p_stream_ids text[],
                                                 p_from text[])
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    WITH moved AS (
        UPDATE jobs j SET status = 'queued', stream_id = m.stream_id,
            updated_at = statement_timestamp()
        FROM unnest(p_ids, p_stream_ids, p_from) AS m(id, stream_id, from_status)
        WHERE j.id = ANY (p_ids) AND j.id = m.id AND j.status = m.from_status
        RETURNING j.id, j.attempts, m.from_status
    ), ev AS (
        INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error, at)
        SELECT moved.id, moved.from_status, 'queued', moved.attempts, 'scheduler', NULL,
               statement_timestamp()
        FROM moved
    )
    SELECT moved.id FROM moved;
END $$;

CREATE OR REPLACE FUNCTION taskforge_claim(p_ids uuid[], p_stream_ids text[], p_worker text,
                                           p_lease float8, p_dispatch_locks integer[])
RETURNS TABLE (id uuid, queue text, type text, payload jsonb, attempts integer,
               max_attempts integer, timeout_seconds double precision, traceparent text,
               tracestate text, stream_id text, created_at timestamptz, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
DECLARE
    claimed_count bigint;
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
        -- Every entry matched: nothing was still committing, and no entry was stale.
        EXIT WHEN claimed_count >= cardinality(p_ids);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION taskforge_finish(p_ids uuid[], p_attempts integer[],
                                            p_statuses text[], p_results text[],
                                            p_errors text[], p_delays float8[], p_actor text)
RETURNS TABLE (id uuid, status text, attempts integer, queue text, type text,
               last_error text, traceparent text, tracestate text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH done AS (
        UPDATE jobs j SET status = o.status,
            result = CASE WHEN o.status = 'completed' THEN o.result::jsonb ELSE j.result END,
            last_error = COALESCE(o.error, j.last_error),
            run_at = CASE WHEN o.status = 'retrying' THEN now() + make_interval(secs => o.delay)
                          ELSE j.run_at END,
            finished_at = CASE WHEN o.status IN ('completed', 'dead', 'cancelled') THEN now() END,
            lease_expires_at = NULL, stream_id = NULL, updated_at = now()
        FROM unnest(p_ids, p_attempts, p_statuses, p_results, p_errors, p_delays,
                    array_fill('running'::text, ARRAY[cardinality(p_ids)]))
             AS o(id, attempt, status, result, error, delay, expected)
        WHERE j.id = ANY (p_ids) AND j.id = o.id AND j.status = o.expected
          AND j.attempts = o.attempt
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

CREATE OR REPLACE FUNCTION taskforge_renew_leases(p_ids uuid[], p_attempts integer[],
                                                  p_lease float8)
RETURNS TABLE (id uuid, cancel_requested boolean)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_nestloop = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => p_lease),
        updated_at = now()
    FROM unnest(p_ids, p_attempts, array_fill('running'::text, ARRAY[cardinality(p_ids)]))
         AS r(id, attempt, expected)
    WHERE j.id = ANY (p_ids) AND j.id = r.id AND j.status = r.expected
      AND j.attempts = r.attempt
    RETURNING j.id, j.cancel_requested;
END $$;
