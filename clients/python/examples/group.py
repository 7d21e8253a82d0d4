"""A consumer-group member: run it in two terminals and the partitions split between them.
Commits after each processed poll (at least once).

    python examples/group.py
"""

import asyncio

import quiver


async def main() -> None:
    async with await quiver.Client.connect() as client:
        try:
            await client.admin.create_topic("py-events", 4)
        except quiver.BrokerError as e:
            if e.code != quiver.ErrorCode.TOPIC_EXISTS:
                raise
        async with quiver.Producer(client) as producer:
            for i in range(20):
                await producer.send("py-events", f"event {i}".encode(), key=f"device-{i % 5}".encode())
        member = await quiver.GroupConsumer.join(client, "py-billing", ["py-events"], commit="manual")
        try:
            idle = 0
            while idle < 5:  # stop after 5 s without records
                records = await member.poll(timeout=1.0)
                idle = 0 if records else idle + 1
                for r in records:
                    print(f"{member.member_id} got {r.topic}/{r.partition}@{r.offset}: {r.value!r}")
                await member.commit()  # after processing: at least once
                print("assignment:", member.assignment())
        finally:
            await member.close()


if __name__ == "__main__":
    asyncio.run(main())
