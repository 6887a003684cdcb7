-- The dispatcher's statements: planned once per session, and timed by the statement.
--
-- Part 1: the due-rows and next-due queries are planned once per session, not per round.
--
-- The scheduler plans every execution (plan_cache_mode = force_custom_plan on its pool, so
-- that a plan cached while jobs was nearly empty cannot outlive the table's growth). For the
-- two queries it runs every round that cost more than running them: 0.12-0.17 ms of planning
-- against 0.03 ms of execution for the due rows, 0.16 against 0.015 for the next due time
-- (pg_stat_statements, 100 jobs/s). The due-rows query is on the way from submit to start.
--
-- Both have one good plan whatever the statistics say: the jobs_due index (partial on the
-- waiting statuses, in dispatch order) read from its start. These functions keep that plan
-- with sequential scans and sorts off for themselves (a bitmap scan would need a sort), so
-- a generic plan made once (even on an empty table) is that plan, and force it: a round no
-- longer plans them.
-- The settings are needed: a generic plan takes `queue <> ALL($n)` (the paused and capped
-- queues) for one row in a million, and on a table of 200k waiting jobs chose a sequential
-- scan and a sort for the due rows, a parallel scan with JIT for the next due time. (JIT is
-- decided when the plan is made and a generic plan's cost grows with the table: off.)
--
-- The dispatch's advisory lock (0010) is taken first, as the query's InitPlan did: held from
-- here to the COMMIT also when the limit is 0 (capped queues filled the batch).
CREATE FUNCTION taskforge_select_due(p_limit integer, p_skip_queues text[],
                                     p_dispatch_lock integer)
RETURNS TABLE (id uuid, queue text, type text, attempts integer, priority integer,
               timeout_seconds double precision, traceparent text, tracestate text,
               status text)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_sort = off SET jit = off AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1952867440, p_dispatch_lock);
    RETURN QUERY
    SELECT j.id, j.queue, j.type, j.attempts, j.priority, j.timeout_seconds, j.traceparent,
           j.tracestate, j.status
    FROM jobs j
    WHERE j.status IN ('pending', 'retrying') AND j.run_at <= statement_timestamp()
      AND j.queue <> ALL(p_skip_queues)
    ORDER BY j.priority DESC, j.run_at
    LIMIT p_limit
    FOR UPDATE OF j SKIP LOCKED;
END $$;

-- Seconds until the earliest waiting row of the queues not skipped is due (negative when
-- overdue), NULL when none waits. min(run_at) over the waiting rows read every one of them:
-- a sequential scan per idle round, as slow as the number of jobs delayed into the future.
-- jobs_due holds them by (priority DESC, run_at), so the earliest of each priority is the
-- first entry of its stretch: a loose index scan (one probe per distinct priority, a
-- recursive CTE) finds them all, and the earliest of those is the answer.
CREATE FUNCTION taskforge_next_due(p_skip_queues text[])
RETURNS double precision
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_sort = off SET jit = off
SET max_parallel_workers_per_gather = 0 AS $$
BEGIN
    RETURN (
        WITH RECURSIVE firsts(priority, run_at) AS (
            (SELECT j.priority, j.run_at FROM jobs j
             WHERE j.status IN ('pending', 'retrying') AND j.queue <> ALL(p_skip_queues)
             ORDER BY j.priority DESC, j.run_at LIMIT 1)
            UNION ALL
            SELECT nxt.priority, nxt.run_at
            FROM firsts f CROSS JOIN LATERAL (
                SELECT j.priority, j.run_at FROM jobs j
                WHERE j.status IN ('pending', 'retrying') AND j.queue <> ALL(p_skip_queues)
                  AND j.priority < f.priority
                ORDER BY j.priority DESC, j.run_at LIMIT 1) AS nxt
        )
        SELECT EXTRACT(EPOCH FROM (min(firsts.run_at) - statement_timestamp()))::float8 FROM firsts);
END $$;

-- Part 2: the dispatcher begins its next transaction as it commits the last one ("COMMIT;
-- BEGIN", one round trip), so that a woken round starts with its due-rows query: a BEGIN of
-- its own was a round trip, 0.24 ms at the median, on the way from submit to start. A
-- transaction begun ahead takes no snapshot and no transaction id until its first statement,
-- so it holds nothing back; but its now() is when it began, possibly a poll interval before
-- the round. So every statement of a dispatch tells time by statement_timestamp(): the due
-- rows and next due time above, and the rows and history it writes here (job_events.at
-- defaulted to now()). In an ordinary transaction the two clocks differ by microseconds, so
-- a scheduler of the previous release using this function is served as before.
CREATE OR REPLACE FUNCTION taskforge_mark_queued(p_ids uuid[], p_stream_ids text[],
                                                 p_from text[])
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    WITH moved AS (
        UPDATE jobs j SET status = 'queued', stream_id = m.stream_id,
            updated_at = statement_timestamp()
        FROM unnest(p_ids, p_stream_ids, p_from) AS m(id, stream_id, from_status)
        WHERE j.id = m.id AND j.status = m.from_status
        RETURNING j.id, j.attempts, m.from_status
    ), ev AS (
        INSERT INTO job_events (job_id, from_status, to_status, attempt, actor, error, at)
        SELECT moved.id, moved.from_status, 'queued', moved.attempts, 'scheduler', NULL,
               statement_timestamp()
        FROM moved
    )
    SELECT moved.id FROM moved;
END $$;
