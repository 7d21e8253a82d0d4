"""Throughput of the Python client: produce then consume N records of SIZE bytes (default 200,000
× 100 B) on a fresh one-partition topic, records/s for each. Against a running broker
(`--server`/`--ca`, defaults as the client: QUIVER_SERVER/QUIVER_CA or 127.0.0.1:7447 and
./quiver-data/tls/ca.pem), or one it starts itself with `--serve path/to/quiver` (a temp data dir,
`--http none`).

    python bench.py --serve ../../target/release/quiver --records 200000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import tempfile
import threading
import time

import quiver
from quiver import crc


async def bench(server: str | None, ca: str | None, records: int, size: int, partitions: int) -> None:
    async with await quiver.Client.connect(server, ca=ca) as c:
        topic = f"pybench-{os.getpid()}-{int(time.time())}"
        await c.admin.create_topic(topic, partitions)
        value = b"x" * size
        producer = quiver.Producer(c, acks="leader", linger=0.005, batch_bytes=256 << 10)
        start = time.perf_counter()
        for i in range(records):
            await producer.send(topic, value, partition=i % partitions)
        await producer.flush()
        produce_s = time.perf_counter() - start
        await producer.close()
        consumer = quiver.Consumer(c, topic, max_bytes=4 << 20, max_wait=0.1)
        consumer.assign(list(range(partitions)), quiver.EARLIEST)
        got = 0
        start = time.perf_counter()
        while got < records:
            got += len(await consumer.poll(5))
        consume_s = time.perf_counter() - start
        await consumer.close()
        await c.admin.delete_topic(topic)
    print(f"python {platform.python_version()}, crc32c: {crc.IMPLEMENTATION}, {records} x {size} B, "
          f"{partitions} partition(s)")
    print(f"produce: {records / produce_s:,.0f} rec/s ({produce_s:.2f} s, acks=leader, linger 5 ms, batches of 256 KiB)")
    print(f"consume: {records / consume_s:,.0f} rec/s ({consume_s:.2f} s, from the earliest offset)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server")
    p.add_argument("--ca")
    p.add_argument("--serve", help="a quiver binary to start a broker with (temp data dir)")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=1)
    a = p.parse_args()
    proc = None
    server, ca = a.server, a.ca
    if a.serve:
        tmp = tempfile.mkdtemp(prefix="pybench-")
        proc = subprocess.Popen(
            [a.serve, "serve", "--listen", "127.0.0.1:0", "--http", "none", "--data-dir", f"{tmp}/data"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1", "RUST_LOG": "info"},
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.search(r"quiver listening.* addr=(\S+)", line)
            if m:
                server, ca = m.group(1), f"{tmp}/data/tls/ca.pem"
                break
        if server is None:
            raise SystemExit(f"{a.serve} did not print its address (exit code {proc.wait()})")
        # Keep reading the broker's log so it never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        asyncio.run(bench(server, ca, a.records, a.size, a.partitions))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
