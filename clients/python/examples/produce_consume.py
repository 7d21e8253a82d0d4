"""Produce keyed records, then read them back from the earliest offset.

    quiver serve &                        # in the directory holding ./quiver-data
    python examples/produce_consume.py    # QUIVER_SERVER / QUIVER_CA override the defaults
"""

import asyncio

import quiver


async def main() -> None:
    async with await quiver.Client.connect() as client:  # 127.0.0.1:7447, ./quiver-data/tls/ca.pem
        try:
            await client.admin.create_topic("py-orders", 3)
        except quiver.BrokerError as e:
            if e.code != quiver.ErrorCode.TOPIC_EXISTS:
                raise
        async with quiver.Producer(client, acks="all") as producer:
            deliveries = [
                await producer.send("py-orders", f"order {i}".encode(), key=f"customer-{i % 3}".encode(),
                                    tags=["eu" if i % 2 else "us"], headers={"source": b"example"})
                for i in range(9)
            ]
            await producer.flush()
            for d in deliveries:
                meta = await d
                print(f"sent to partition {meta.partition} at offset {meta.offset}")

        consumer = quiver.Consumer(client, "py-orders", filter="tag:eu")
        await consumer.assign_all(quiver.EARLIEST)
        for record in await consumer.poll(timeout=2.0):
            print(f"{record.partition}/{record.offset} key={record.key!r} value={record.value!r} tags={record.tags}")
        await consumer.close()


if __name__ == "__main__":
    asyncio.run(main())
