from __future__ import annotations

import asyncio
import time

import pytest

import quiver
from quiver import batch as bt
from quiver import frame as fr
from conftest import Broker, run, unique


async def connect(broker: Broker) -> quiver.Client:
    return await quiver.Client.connect(broker.addr, ca=broker.ca)


async def consume_n(c: quiver.Client, topic: str, n: int, **kw) -> list[quiver.ConsumedRecord]:  # type: ignore[no-untyped-def]
    consumer = quiver.Consumer(c, topic, **kw)
    await consumer.assign_all(quiver.EARLIEST)
    out: list[quiver.ConsumedRecord] = []
    while len(out) < n:
        out.extend(await consumer.poll(5))
    await consumer.close()
    return out


def test_partition_for_key_is_fnv1a_like_the_rust_client(broker: Broker) -> None:
    assert bt.partition_for_key(b"a", 1 << 63) == 0xAF63DC4C8601EC8C % (1 << 63)
    assert bt.partition_for_key(b"", 7) == 0xCBF29CE484222325 % 7
    # The CLI (Rust client) puts a key where the Python client does.
    topic = unique("keys")
    broker.cli("topic", "create", topic, "--partitions", "7")
    for k in ["alpha", "beta", "customer-42", "z"]:
        broker.cli("produce", topic, "--key", k, stdin=k + "\n")

    async def main() -> None:
        async with await connect(broker) as c:
            got = await consume_n(c, topic, 4)
            for r in got:
                assert r.key is not None
                assert r.partition == bt.partition_for_key(r.key, 7), r

    run(main())


def test_round_trip_keeps_order_per_key_with_tags_headers_and_offsets(broker: Broker) -> None:
    async def main() -> None:
        async with await connect(broker) as c:
            topic = unique("orders")
            await c.admin.create_topic(topic, 3)
            producer = quiver.Producer(c, linger=0.005, batch_bytes=4096)
            deliveries = []
            for i in range(300):
                key = f"k{i % 10}".encode()
                d = await producer.send(topic, f"{i}".encode(), key=key, tags=["even" if i % 2 == 0 else "odd"],
                                        headers={"n": str(i).encode()})
                deliveries.append((key, d))
            await producer.flush()
            metas = [(k, await d) for k, d in deliveries]
            seen: dict[int, set[int]] = {}
            for key, m in metas:
                assert m.partition == quiver.partition_for_key(key, 3)
                assert m.offset is not None
                assert m.offset not in seen.setdefault(m.partition, set()), "offsets are unique"
                seen[m.partition].add(m.offset)
            await producer.close()
            records = await consume_n(c, topic, 300)
            assert len(records) == 300
            by_key: dict[bytes, list[int]] = {}
            for r in records:
                assert r.key is not None
                by_key.setdefault(r.key, []).append(int(r.value))
                assert r.tags == ["even" if int(r.value) % 2 == 0 else "odd"]
                assert r.header("n") == r.value
            for key, values in by_key.items():
                assert values == sorted(values), f"order of {key!r}"
                assert len(values) == 30
            # The delivery results name the offsets the records were read at.
            where = {(m.partition, m.offset): int(v) for (_, m), v in zip(metas, range(300))}
            for r in records:
                assert where[(r.partition, r.offset)] == int(r.value)

    run(main())


@pytest.mark.parametrize("acks", ["none", "leader", "all"])
def test_acks_levels(broker: Broker, acks: str) -> None:
    async def main() -> None:
        async with await connect(broker) as c:
            topic = unique(f"acks-{acks}")
            await c.admin.create_topic(topic, 1)
            producer = quiver.Producer(c, acks=acks, linger=0)
            ds = [await producer.send(topic, f"v{i}".encode()) for i in range(20)]
            await producer.flush()
            metas = [await d for d in ds]
            if acks == "none":
                assert all(m.offset is None for m in metas)
            else:
                assert [m.offset for m in metas] == list(range(20))
            await producer.close()
            got = await consume_n(c, topic, 20)
            assert [r.value for r in got] == [f"v{i}".encode() for i in range(20)]

    run(main())


def test_a_resent_idempotent_batch_is_acknowledged_but_not_appended_twice(broker: Broker) -> None:
    async def send_raw(c: quiver.Client, topic: str, data: bytes, wait: bool) -> dict | None:  # type: ignore[type-arg]
        s = c.open_stream()
        s.write_frame(fr.Kind.PRODUCE, {"request_id": 1, "topic": topic, "partition": 0, "acks": "all"}, data, end=True)
        if not wait:
            return None
        return (await s.expect(fr.Kind.PRODUCE_OK)).header

    def batch(pid: int, seq: int, values: list[str]) -> bytes:
        b = bt.BatchBuilder()
        for v in values:
            b.push(v.encode(), timestamp=1)
        return b.finish(pid, seq)

    async def main() -> None:
        c = await connect(broker)
        topic = unique("payments")
        await c.admin.create_topic(topic, 1)
        pid = await c.admin.init_producer()
        assert pid != 0
        # The first attempt's connection dies before the reply; the resend is a duplicate.
        lost = await connect(broker)
        await send_raw(lost, topic, batch(pid, 0, ["a", "b"]), False)
        await asyncio.sleep(0.2)
        await lost.close()
        resent = await send_raw(c, topic, batch(pid, 0, ["a", "b"]), True)
        assert resent is not None and resent["duplicate"] is True, resent
        assert (resent["base_offset"], resent["last_offset"]) == (0, 1)
        nxt = await send_raw(c, topic, batch(pid, 2, ["c"]), True)
        assert nxt is not None and not nxt.get("duplicate") and nxt["base_offset"] == 2
        # A gap is refused with a retriable error.
        with pytest.raises(quiver.BrokerError) as e:
            await send_raw(c, topic, batch(pid, 7, ["x"]), True)
        assert e.value.code == quiver.ErrorCode.OUT_OF_ORDER_SEQUENCE and e.value.retriable
        got = await consume_n(c, topic, 3)
        assert [r.value for r in got] == [b"a", b"b", b"c"]
        # The producer is idempotent by default and sees the same end to end.
        producer = quiver.Producer(c)
        m = await producer.send_and_wait(topic, b"d", partition=0)
        assert m.offset == 3 and producer.producer_id not in (None, 0, pid)
        await producer.close()
        assert (await c.admin.describe_topic(topic)).partitions[0].log_end == 4
        await c.close()

    run(main())


def test_seek_earliest_latest_offset_and_timestamp(broker: Broker) -> None:
    async def main() -> None:
        async with await connect(broker) as c:
            topic = unique("seek")
            await c.admin.create_topic(topic, 1)
            producer = quiver.Producer(c, linger=0)
            base = int(time.time() * 1000) - 100_000
            for i in range(10):
                await producer.send(topic, f"r{i}".encode(), timestamp=base + i * 1000)
            await producer.flush()
            consumer = quiver.Consumer(c, topic)
            consumer.assign(0, quiver.EARLIEST)
            got = []
            while len(got) < 10:
                got.extend(await consumer.poll(5))
            assert [r.offset for r in got] == list(range(10))
            assert consumer.position(0) == 10
            consumer.seek(0, quiver.Offset(7))
            got = []
            while len(got) < 3:
                got.extend(await consumer.poll(5))
            assert [r.value for r in got] == [b"r7", b"r8", b"r9"]
            consumer.seek(0, quiver.Timestamp(base + 4500))
            r = await asyncio.wait_for(consumer.next(), 5)
            assert (r.offset, r.value, r.timestamp) == (5, b"r5", base + 5000)
            consumer.seek(0, quiver.LATEST)
            assert await consumer.poll(0.5) == []
            await producer.send(topic, b"new")
            await producer.flush()
            r = await asyncio.wait_for(consumer.next(), 5)
            assert (r.offset, r.value) == (10, b"new")
            # The async iterator.
            consumer.seek(0, quiver.Offset(8))
            values = []
            async for rec in consumer:
                values.append(rec.value)
                if len(values) == 3:
                    break
            assert values == [b"r8", b"r9", b"new"]
            await consumer.close()
            await producer.close()

    run(main())


def test_native_filter_expression(broker: Broker) -> None:
    async def main() -> None:
        async with await connect(broker) as c:
            topic = unique("filter")
            await c.admin.create_topic(topic, 1)
            producer = quiver.Producer(c)
            for i in range(20):
                tags = ["eu"] if i % 4 == 0 else ["us"]
                await producer.send(topic, f"{i}".encode(), tags=tags, headers={"lang": b"en" if i % 5 == 0 else b"fr"})
            await producer.flush()
            consumer = quiver.Consumer(c, topic, filter="tag:eu")
            consumer.assign(0)
            got = []
            while len(got) < 5:
                got.extend(await consumer.poll(5))
            assert [int(r.value) for r in got] == [0, 4, 8, 12, 16]
            await asyncio.sleep(0.3)
            await consumer.poll(0.3)
            assert consumer.position(0) == 20, "the position moves past skipped records"
            await consumer.close()
            both = await consume_n(c, topic, 1, filter="tag:eu & header:lang=en")
            assert [int(r.value) for r in both] == [0]
            # A malformed expression is an InvalidRequest with a code.
            bad = quiver.Consumer(c, topic, filter="tag:(")
            bad.assign(0)
            with pytest.raises(quiver.BrokerError) as e:
                await bad.poll(5)
            assert e.value.code == quiver.ErrorCode.INVALID_REQUEST
            await bad.close()
            await producer.close()

    run(main())


def test_delayed_records_get_a_delay_id_and_arrive_later(broker: Broker) -> None:
    async def main() -> None:
        async with await connect(broker) as c:
            topic = unique("delay")
            await c.admin.create_topic(topic, 1)
            producer = quiver.Producer(c)
            now_d = await producer.send(topic, b"now")
            later_d = await producer.send(topic, b"later", delay_ms=300)
            await producer.flush()
            now_m, later_m = await now_d, await later_d
            assert now_m.offset == 0 and now_m.delay_id is None
            assert later_m.offset is None and later_m.delay_id is not None
            got = await consume_n(c, topic, 2)
            assert [r.value for r in got] == [b"now", b"later"]
            assert got[1].header("quiver-delay-id") == str(later_m.delay_id).encode()
            await producer.close()

    run(main())


def test_unknown_topic_fails_the_send_with_its_code(broker: Broker) -> None:
    async def main() -> None:
        async with await connect(broker) as c:
            producer = quiver.Producer(c)
            with pytest.raises(quiver.BrokerError) as e:
                await producer.send("no-such-topic", b"x")
            assert e.value.code == quiver.ErrorCode.UNKNOWN_TOPIC and not e.value.retriable
            # With an explicit partition the broker refuses the batch itself.
            d = await producer.send("no-such-topic", b"x", partition=0)
            with pytest.raises(quiver.BrokerError) as e:
                await d
            assert e.value.code == quiver.ErrorCode.UNKNOWN_TOPIC
            await producer.close()  # the failure was reported by its delivery

    run(main())


def test_read_filter_plugin(broker: Broker) -> None:
    from conftest import ROOT

    wasm = ROOT / "target" / "plugins" / "tag-filter.wasm"
    if not wasm.exists():
        pytest.skip(f"{wasm} not built (scripts/build-plugins.sh; cli/tests/python_client.rs builds it)")

    async def main() -> None:
        async with await connect(broker) as c:
            name = unique("tagf")
            deployed = await c.admin.deploy_plugin(name, wasm.read_bytes())
            assert deployed["type"] == "plugin-deployed"
            topic = unique("plug")
            await c.admin.create_topic(topic, 1)
            producer = quiver.Producer(c)
            for i in range(10):
                await producer.send(topic, f"{i}".encode(), tags=["keep"] if i % 3 == 0 else ["drop"])
            await producer.close()
            got = await consume_n(c, topic, 4, plugin=name, plugin_config={"tags": "keep"})
            assert [int(r.value) for r in got] == [0, 3, 6, 9]
            # A refused configuration is the plugin's init error, with its code.
            bad = quiver.Consumer(c, topic, plugin=name)
            bad.assign(0)
            with pytest.raises(quiver.BrokerError) as e:
                await bad.poll(5)
            assert e.value.code == quiver.ErrorCode.PLUGIN_INIT_FAILED, e.value
            await bad.close()

    run(main())
