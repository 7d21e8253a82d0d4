from __future__ import annotations

import asyncio

import quiver
from conftest import Broker, run, unique


async def fill(c: quiver.Client, topic: str, partitions: int, start: int, end: int) -> None:
    producer = quiver.Producer(c)
    for i in range(start, end):
        await producer.send(topic, f"{i}".encode(), partition=i % partitions)
    await producer.close()


def test_two_members_split_partitions_commit_and_a_leaver_hands_over(broker: Broker) -> None:
    async def main() -> None:
        c = await quiver.Client.connect(broker.addr, ca=broker.ca)
        topic, group = unique("grp"), unique("billing")
        await c.admin.create_topic(topic, 4)
        await fill(c, topic, 4, 0, 40)
        a = await quiver.GroupConsumer.join(c, group, [topic], commit="manual", heartbeat_interval=0.1)
        b = await quiver.GroupConsumer.join(c, group, [topic], commit="manual", heartbeat_interval=0.1)
        seen: dict[str, list[quiver.ConsumedRecord]] = {"a": [], "b": []}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            for name, m in (("a", a), ("b", b)):
                seen[name].extend(await m.poll(0.2))
                await m.commit()
            owned_a, owned_b = set(a.assignment()), set(b.assignment())
            done = len(seen["a"]) + len(seen["b"]) >= 40
            if done and len(owned_a) == 2 and len(owned_b) == 2:
                break
            assert loop.time() < deadline, (a.assignment(), b.assignment(), len(seen["a"]), len(seen["b"]))
        assert not owned_a & owned_b, "each partition has one owner"
        values = sorted(int(r.value) for r in seen["a"] + seen["b"])
        # Each record once (a partition that moved restarts at its commit: with a commit after
        # every poll nothing is re-read).
        assert values == list(range(40)), values
        committed = await a.committed([(topic, p) for p in range(4)])
        assert committed == {(topic, p): 10 for p in range(4)}
        # a leaves: b gets every partition and reads only what is new.
        await a.close()
        await fill(c, topic, 4, 40, 44)
        got: list[quiver.ConsumedRecord] = []
        while len(got) < 4 or len(b.assignment()) < 4:
            got.extend(await b.poll(0.2))
            assert loop.time() < deadline + 20, (b.assignment(), got)
        assert sorted(int(r.value) for r in got) == [40, 41, 42, 43]
        await b.commit()
        await b.close()
        await c.close()

    run(main(), timeout=90)


def test_auto_commit_stores_positions_and_a_new_member_resumes_there(broker: Broker) -> None:
    async def main() -> None:
        c = await quiver.Client.connect(broker.addr, ca=broker.ca)
        topic, group = unique("auto"), unique("g")
        await c.admin.create_topic(topic, 2)
        await fill(c, topic, 2, 0, 10)
        m = await quiver.GroupConsumer.join(c, group, [topic], auto_commit_interval=0.1)
        got: list[quiver.ConsumedRecord] = []
        while len(got) < 10:
            got.extend(await m.poll(0.5))
        await m.close()  # commits in auto mode
        await fill(c, topic, 2, 10, 12)
        m2 = await quiver.GroupConsumer.join(c, group, [topic])
        again: list[quiver.ConsumedRecord] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(again) < 2 and loop.time() < deadline:
            again.extend(await m2.poll(0.5))
        assert sorted(int(r.value) for r in again) == [10, 11]
        await m2.close()
        await c.close()

    run(main(), timeout=60)
