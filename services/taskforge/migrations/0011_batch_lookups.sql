-- Batched transitions look their rows up by id, whatever the planner's statistics say.
--
-- The dispatch, the claim and the finish each join a batch (unnest of arrays) to jobs. A
-- queue table's statistics are always out of date: taken while it held fewer rows or other
-- statuses, they led the planner to hash the batch and scan jobs for the other side. The
-- dispatch read the whole table (a sequential scan: 18-36 ms for 500 rows of a 20k-row
-- table), the claim every queued row (the whole backlog in the streams), the finish every
-- running row (the whole fleet's). Seen with auto_explain during a 20k-job drain: 31 of 40
-- dispatches and 24 of 157 claims took over 15 ms. Two changes make the cost follow the batch:
--
-- * The expected status comes with the batch (a column of the unnest) instead of being a
--   constant, so the planner cannot start from the status index on the strength of an
--   estimate ("1 queued row") that is stale; the UPDATE still re-checks it on the row.
-- * Inside these functions only, hash and merge joins and sequential scans are off: the plan
--   left is a nested loop over the batch probing the primary key once per entry.
--
-- Both are needed: with the joins off but the status still a constant, the planner started
-- from the status index and rescanned the batch for every row it found (a nested loop the
-- wrong way round, worse than the hash). So the claim of 0010 is written this way, and the
-- previous release's claim (used only during a rolling upgrade) is left as it was.

CREATE FUNCTION taskforge_mark_queued(p_ids uuid[], p_stream_ids text[], p_from text[])
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    WITH moved AS (
        UPDATE jobs j SET status = 'queued', stream_id = m.stream_id, updated_at = now()
        FROM unnest(p_ids, p_stream_ids, p_from) AS m(id, stream_id, from_status)
        WHERE j.id = m.id AND j.status = m.from_status
        RETURNING j.id, j.attempts, m.from_status
    ), ev AS (
        INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error)
        SELECT moved.id, moved.from_status, 'queued', moved.attempts, 'scheduler', NULL
        FROM moved
    )
    SELECT moved.id FROM moved;
END $$;

CREATE FUNCTION taskforge_finish(p_ids uuid[], p_attempts integer[], p_statuses text[],
                                 p_results text[], p_errors text[], p_delays float8[],
                                 p_actor text)
RETURNS TABLE (id uuid, status text, attempts integer, queue text, type text,
               last_error text, traceparent text, tracestate text)
LANGUAGE plpgsql VOLATILE
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
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
        WHERE j.id = o.id AND j.status = o.expected AND j.attempts = o.attempt
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
