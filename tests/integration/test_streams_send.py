"""streams.send: one script call per stream XADDs a whole batch, ids back in message order."""

from __future__ import annotations

from taskforge import streams


async def test_send_keeps_message_order_across_streams(redis_client):
    messages = [(("a", "b", "a", "c", "a")[i % 5], f"m{i}".encode()) for i in range(23)]
    ids = await streams.send(redis_client, messages)
    assert len(ids) == len(messages) and all(ids)
    for queue in ("a", "b", "c"):
        entries = await redis_client.xrange(streams.stream_key(queue))
        expected = [(i, data) for i, (q, data) in zip(ids, messages, strict=True) if q == queue]
        assert [(e.decode(), f[streams.FIELD]) for e, f in entries] == expected


async def test_send_loads_its_script_on_a_redis_that_forgot_it(redis_client):
    await streams.send(redis_client, [("a", b"first")])
    await redis_client.script_flush()
    ids = await streams.send(redis_client, [("a", b"second"), ("a", b"third")])
    entries = await redis_client.xrange(streams.stream_key("a"))
    assert [f[streams.FIELD] for _, f in entries] == [b"first", b"second", b"third"]
    assert [e.decode() for e, _ in entries][1:] == ids
