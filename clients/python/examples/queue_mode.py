"""Queue mode: workers share one topic record by record; a failed job is nacked and comes back
after a delay, a skipped one is released at once.

    python examples/queue_mode.py   (not queue.py: that name would shadow the standard library's queue module)
"""

import asyncio

import quiver


async def main() -> None:
    async with await quiver.Client.connect() as client:
        try:
            await client.admin.create_topic("py-jobs", 2)
        except quiver.BrokerError as e:
            if e.code != quiver.ErrorCode.TOPIC_EXISTS:
                raise
        async with quiver.Producer(client) as producer:
            for i in range(6):
                await producer.send("py-jobs", f"job {i}".encode())
        worker = quiver.QueueConsumer(client, "py-workers", "py-jobs", visibility_timeout=30, max_deliveries=3)
        done = 0
        while done < 6:
            for job in await worker.poll(max_wait=2.0):
                if job.value.endswith(b"3") and job.delivery_count == 1:
                    print(f"{job.value!r} failed on delivery {job.delivery_count}: nack, retry in 0.5 s")
                    await worker.nack(job, delay=0.5)
                    continue
                print(f"{job.value!r} done (delivery {job.delivery_count})")
                await worker.ack(job)
                done += 1


if __name__ == "__main__":
    asyncio.run(main())
