-- The dispatcher asks for its next due time in the statement that marks its rows queued.
--
-- A trickle's dispatch round was five round trips: the due rows, mark queued, COMMIT, the
-- next due time, and BEGIN for the next round. The next due time now comes back from the
-- mark-queued statement, and the round ends with "COMMIT; BEGIN" in one round trip: three.
-- Asked inside the round's transaction, after the rows were marked, the next due time no
-- longer counts the rows just dispatched (they are queued to this transaction) and reads
-- nothing the separate query did not; the statement's portal closes at the COMMIT, so the
-- wait that follows holds no snapshot (see 0013: the transaction begun ahead holds none).
--
-- The two functions this calls keep their plans (0013, 0015); this one only sequences them,
-- in that order, each statement seeing the one before. A NULL p_skip_queues asks for no
-- next due time: a full batch goes again at once and would not use it.
CREATE FUNCTION taskforge_mark_queued_next_due(p_ids uuid[], p_stream_ids text[],
                                               p_from text[], p_skip_queues text[])
RETURNS double precision
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM taskforge_mark_queued(p_ids, p_stream_ids, p_from);
    IF p_skip_queues IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN taskforge_next_due(p_skip_queues);
END $$;
