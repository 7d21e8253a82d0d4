from __future__ import annotations

from quiver.sync import Client
from conftest import Broker, unique


def test_blocking_wrapper_round_trip(broker: Broker) -> None:
    with Client(broker.addr, ca=broker.ca) as c:
        topic = unique("sync")
        c.create_topic(topic, 2)
        p = c.producer(linger=0)
        metas = [p.send(topic, f"v{i}".encode(), key=b"same").result(10) for i in range(5)]
        assert len({m.partition for m in metas}) == 1
        assert [m.offset for m in metas] == list(range(5))
        p.close()
        consumer = c.consumer(topic)
        consumer.assign_all()
        got = []
        while len(got) < 5:
            got.extend(consumer.poll(2))
        assert [r.value for r in got] == [f"v{i}".encode() for i in range(5)]
        consumer.close()
        q = c.queue_consumer(unique("g"), topic)
        leased = []
        while len(leased) < 5:
            leased.extend(q.poll(max_wait=0.5))
        assert q.ack(leased).settled == 5
        c.delete_topic(topic)
