-- Lease renewals (every worker's heartbeat) look their rows up by id, like the claim, the
-- dispatch and the finish (0010, 0011): with stale statistics ("1 running row") the planner
-- started from the status index and joined every running job of the fleet to each
-- heartbeat's batch, so the fleet's heartbeats together cost the square of its size.
CREATE FUNCTION taskforge_renew_leases(p_ids uuid[], p_attempts integer[], p_lease float8)
RETURNS TABLE (id uuid, cancel_requested boolean)
LANGUAGE plpgsql VOLATILE
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY
    UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => p_lease),
        updated_at = now()
    FROM unnest(p_ids, p_attempts, array_fill('running'::text, ARRAY[cardinality(p_ids)]))
         AS r(id, attempt, expected)
    WHERE j.id = r.id AND j.status = r.expected AND j.attempts = r.attempt
    RETURNING j.id, j.cancel_requested;
END $$;
