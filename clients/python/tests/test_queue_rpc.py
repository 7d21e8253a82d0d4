from __future__ import annotations

import asyncio

import pytest

import quiver
from conftest import Broker, run, unique


async def poll_some(q: quiver.QueueConsumer, n: int, limit: float = 10) -> list[quiver.QueuedRecord]:
    out: list[quiver.QueuedRecord] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while len(out) < n:
        assert loop.time() < deadline, f"only {len(out)} of {n} records leased"
        out.extend(await q.poll(max_records=n - len(out), max_wait=0.5))
    return out


def test_queue_poll_ack_nack_release_redelivery_and_dead_letter(broker: Broker) -> None:
    async def main() -> None:
        c = await quiver.Client.connect(broker.addr, ca=broker.ca)
        topic, group = unique("jobs"), unique("workers")
        await c.admin.create_topic(topic, 2)
        producer = quiver.Producer(c)
        for i in range(6):
            await producer.send(topic, f"job{i}".encode(), partition=i % 2)
        await producer.close()
        w1 = quiver.QueueConsumer(c, group, topic, visibility_timeout=2.0, max_deliveries=2)
        w2 = quiver.QueueConsumer(c, group, topic, visibility_timeout=30, max_deliveries=2)
        first = await poll_some(w1, 6)
        assert sorted(r.value for r in first) == [f"job{i}".encode() for i in range(6)]
        assert all(r.delivery_count == 1 for r in first)
        # Leased to w1: w2 gets nothing now.
        assert await w2.poll(max_wait=0.2) == []
        by_value = {r.value: r for r in first}
        assert (await w1.ack([by_value[b"job0"], by_value[b"job1"]])) == quiver.Settled(2, 0)
        # release: back at once, the delivery not counted.
        await w1.release(by_value[b"job2"])
        # nack with a delay: back after it, counted.
        await w1.nack(by_value[b"job3"], delay=0.3)
        got = await poll_some(w2, 1)
        assert [(r.value, r.delivery_count) for r in got] == [(b"job2", 1)]
        await w2.ack(got)
        later = await poll_some(w2, 1)
        assert [(r.value, r.delivery_count) for r in later] == [(b"job3", 2)]
        await w2.ack(later)
        # job4/job5: w1's leases run out (2 s) and they come again, to anyone.
        again = await poll_some(w2, 2)
        assert sorted((r.value, r.delivery_count) for r in again) == [(b"job4", 2), (b"job5", 2)]
        # Settling an expired lease is stale.
        assert (await w1.ack(by_value[b"job4"])).stale == 1
        # At max_deliveries a nack dead-letters: job5 goes to <topic>.dlq.
        await w2.ack([r for r in again if r.value == b"job4"])
        await w2.nack([r for r in again if r.value == b"job5"])
        dlq = quiver.Consumer(c, f"{topic}.dlq")
        await dlq.assign_all()
        dead = await asyncio.wait_for(dlq.next(), 10)
        assert dead.value == b"job5"
        assert dead.header("quiver-delivery-count") == b"2"
        await dlq.close()
        assert await w2.poll(max_wait=0.3) == []
        await c.close()

    run(main(), timeout=60)


def test_request_reply_round_trips_and_times_out_without_a_responder(broker: Broker) -> None:
    async def main() -> None:
        c = await quiver.Client.connect(broker.addr, ca=broker.ca)
        topic = unique("rpc")
        await c.admin.create_topic(topic, 2)
        requester = await quiver.Requester.create(c)
        with pytest.raises(quiver.NoReply):
            await requester.request(topic, b"early", timeout=0.3)
        responder = quiver.Responder(c, unique("responders"), topic, max_wait=0.2)

        async def serve() -> None:
            while True:
                await responder.serve_once(lambda r: b"echo:" + r.value)

        server = asyncio.ensure_future(serve())
        replies = await asyncio.gather(*(requester.request(topic, f"q{i}".encode(), timeout=10) for i in range(5)))
        assert [r.value for r in replies] == [f"echo:q{i}".encode() for i in range(5)]
        # The early request was answered too, but nobody waits for it any more.
        server.cancel()
        await responder.close()
        reply_topic = requester.reply_topic
        await requester.close()
        assert reply_topic not in [t.name for t in await c.admin.list_topics()]
        await c.close()

    run(main(), timeout=60)
