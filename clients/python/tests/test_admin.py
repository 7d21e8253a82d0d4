from __future__ import annotations

import pytest

import quiver
from conftest import Broker, run, unique


def test_topics_create_list_describe_delete(broker: Broker) -> None:
    async def main() -> None:
        async with await quiver.Client.connect(broker.addr, ca=broker.ca) as c:
            assert c.server_info["protocol_version"] == 1
            name = unique("admin")
            created = await c.admin.create_topic(name, 3, retention_ms=3_600_000)
            assert created == quiver.TopicSummary(name, 3)
            assert quiver.TopicSummary(name, 3) in await c.admin.list_topics()
            desc = await c.admin.describe_topic(name)
            assert [p.partition for p in desc.partitions] == [0, 1, 2]
            assert desc.retention_ms == 3_600_000
            assert all(p.log_end == 0 for p in desc.partitions)
            with pytest.raises(quiver.BrokerError) as e:
                await c.admin.create_topic(name, 1)
            assert e.value.code == quiver.ErrorCode.TOPIC_EXISTS
            await c.admin.delete_topic(name)
            assert name not in [t.name for t in await c.admin.list_topics()]

    run(main())


def test_unknown_topic_maps_to_a_coded_non_retriable_error(broker: Broker) -> None:
    async def main() -> None:
        async with await quiver.Client.connect(broker.addr, ca=broker.ca) as c:
            with pytest.raises(quiver.BrokerError) as e:
                await c.admin.describe_topic("no-such-topic")
            assert e.value.code == quiver.ErrorCode.UNKNOWN_TOPIC
            assert e.value.code == 10
            assert e.value.retriable is False
            assert isinstance(e.value, quiver.QuiverError)
            assert quiver.ErrorCode.SERVER_BUSY.retriable

    run(main())


def test_a_wrong_ca_is_refused(broker: Broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import start_broker

    other = start_broker(tmp_path)  # its own dev CA
    try:
        async def main() -> None:
            with pytest.raises(quiver.ConnectError):
                await quiver.Client.connect(broker.addr, ca=other.ca, timeout=5)

        run(main())
    finally:
        other.stop()
