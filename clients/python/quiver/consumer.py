"""The consumer: reads assigned partitions (of one topic, or several for the group consumer). Each
partition has a fetch task long-polling the broker on its own stream (a quiet partition never
delays a busy one) that hands CRC-checked records to the consumer through a bounded queue (the
prefetch buffer); records before the requested offset are skipped (batches are sent whole)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence, Union

from . import batch as bt
from . import frame as fr
from .batch import Record
from .errors import BrokerError, ErrorCode, ProtocolError, QuiverError

if TYPE_CHECKING:
    from .client import Client


@dataclass(frozen=True)
class Offset:
    """Seek to an exact offset."""

    offset: int


@dataclass(frozen=True)
class Timestamp:
    """Seek to the first record at or after this time (ms since the epoch)."""

    ms: int


SeekTo = Union[str, Offset, Timestamp]
"""Where to start: "earliest", "latest", Offset(n) or Timestamp(ms)."""
EARLIEST = "earliest"
LATEST = "latest"


def offset_spec(to: SeekTo) -> Any:
    """The wire form of an OffsetSpec: "earliest" / "latest" / {"at": n} / {"timestamp": ms}."""
    if isinstance(to, Offset):
        return {"at": to.offset}
    if isinstance(to, Timestamp):
        return {"timestamp": to.ms}
    if to in (EARLIEST, LATEST):
        return to
    raise ValueError(f"cannot seek to {to!r}: use 'earliest', 'latest', Offset(n) or Timestamp(ms)")


@dataclass
class ConsumedRecord(Record):
    """A record and where it came from."""

    topic: str = ""
    partition: int = 0


Key = tuple[str, int]


class _Chunk:
    __slots__ = ("key", "epoch", "records", "next_offset", "error")

    def __init__(self, key: Key, epoch: int, records: list[Record], next_offset: int, error: BaseException | None = None):
        self.key = key
        self.epoch = epoch
        self.records = records
        self.next_offset = next_offset
        self.error = error


class Consumer:
    """Reads partitions it is assigned (no group): `assign`, `seek`, then `poll`, `next` or
    `async for record in consumer`."""

    def __init__(
        self,
        client: "Client",
        topic: str | None = None,
        *,
        max_bytes: int = 1 << 20,
        max_wait: float = 0.5,
        min_bytes: int = 1,
        prefetch: int = 16,
        filter: str | None = None,
        plugin: str | None = None,
        plugin_config: Sequence[tuple[str, str]] | dict[str, str] = (),
        reset: SeekTo | None = EARLIEST,
    ) -> None:
        """`filter`: a native filter expression run by the broker (e.g. `tag=a`); `plugin`: a
        deployed filter plugin (`NAME[@VERSION]`) run by the broker after it, with `plugin_config`.
        `reset`: where to go when the position is no longer in the log (None raises)."""
        self._client = client
        self.topic = topic
        self.max_bytes = max_bytes
        self.max_wait = max_wait
        self.min_bytes = min_bytes
        self.filter = filter
        cfg = list(plugin_config.items()) if isinstance(plugin_config, dict) else list(plugin_config)
        self.plugin = {"name": plugin, "config": [list(kv) for kv in cfg]} if plugin else None
        self.reset = reset
        self._queue: asyncio.Queue[_Chunk] = asyncio.Queue(maxsize=max(1, prefetch))
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._epochs: dict[Key, int] = {}
        self._positions: dict[Key, int] = {}
        self._ready: deque[Any] = deque()
        self._closed = False

    def _key(self, partition: int | Key) -> Key:
        if isinstance(partition, tuple):
            return partition
        if self.topic is None:
            raise ValueError("this consumer has no default topic: pass (topic, partition)")
        return (self.topic, partition)

    def assign(self, partitions: int | Key | Sequence[int | Key], start: SeekTo = EARLIEST) -> None:
        """Starts reading these partitions (numbers of the consumer's topic, or (topic, partition))
        from `start`."""
        if isinstance(partitions, (int, tuple)):
            partitions = [partitions]
        for p in partitions:
            self.seek(p, start)

    async def assign_all(self, start: SeekTo = EARLIEST) -> list[int]:
        """Every partition of the consumer's topic."""
        assert self.topic is not None
        desc = await self._client.admin.describe_topic(self.topic)
        ps = [p.partition for p in desc.partitions]
        self.assign(ps, start)
        return ps

    def seek(self, partition: int | Key, to: SeekTo) -> None:
        """Moves an assigned partition (or assigns it): records already buffered are dropped."""
        key = self._key(partition)
        spec = offset_spec(to)
        self._stop(key)
        epoch = self._epochs.get(key, 0) + 1
        self._epochs[key] = epoch
        if isinstance(to, Offset):
            self._positions[key] = to.offset
        else:
            self._positions.pop(key, None)
        self._tasks[key] = asyncio.ensure_future(self._fetch_loop(key, epoch, spec))

    def unassign(self, partition: int | Key) -> None:
        key = self._key(partition)
        self._stop(key)
        self._epochs[key] = self._epochs.get(key, 0) + 1
        self._positions.pop(key, None)

    def assignment(self) -> list[Key]:
        return sorted(self._tasks)

    def position(self, partition: int | Key) -> int | None:
        """The offset of the next record the application gets from the partition."""
        return self._positions.get(self._key(partition))

    def _stop(self, key: Key) -> None:
        if self._ready:
            self._ready = deque(
                i for i in self._ready if (i[0] if isinstance(i, tuple) else (i.topic, i.partition)) != key
            )
        t = self._tasks.pop(key, None)
        if t is not None:
            t.cancel()

    async def poll(self, timeout: float = 1.0) -> list[ConsumedRecord]:
        """The records available within `timeout` seconds (possibly none)."""
        out = self._take_all()
        if out:
            return out
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                chunk = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                return []
            self._accept(chunk)
            while not self._queue.empty():
                self._accept(self._queue.get_nowait())
            out = self._take_all()
            if out:
                return out

    async def next(self) -> ConsumedRecord:
        """The next record, waiting as long as it takes."""
        while True:
            r = self._take_one()
            if r is not None:
                return r
            self._accept(await self._queue.get())

    def __aiter__(self) -> AsyncIterator[ConsumedRecord]:
        return self

    async def __anext__(self) -> ConsumedRecord:
        if self._closed:
            raise StopAsyncIteration
        return await self.next()

    def _accept(self, chunk: _Chunk) -> None:
        if self._epochs.get(chunk.key) != chunk.epoch or chunk.key not in self._tasks:
            return  # from before a seek or unassign
        if chunk.error is not None:
            self._tasks.pop(chunk.key, None)
            raise chunk.error
        self._ready.extend(chunk.records)
        self._ready.append((chunk.key, chunk.epoch, chunk.next_offset))

    def _take_one(self) -> ConsumedRecord | None:
        while self._ready:
            item = self._ready.popleft()
            if isinstance(item, tuple):
                key, epoch, nxt = item
                if self._epochs.get(key) == epoch:
                    self._positions[key] = nxt
                continue
            key = (item.topic, item.partition)
            if key not in self._tasks:
                continue
            self._positions[key] = item.offset + 1
            return item
        return None

    def _take_all(self) -> list[ConsumedRecord]:
        out = []
        while True:
            r = self._take_one()
            if r is None:
                return out
            out.append(r)

    async def _fetch_loop(self, key: Key, epoch: int, spec: Any) -> None:
        topic, partition = key
        stream = None
        try:
            stream = self._client.open_stream()
            while True:
                header = {
                    "request_id": self._client.next_request_id(),
                    "topic": topic,
                    "partition": partition,
                    "offset": spec,
                    "max_bytes": self.max_bytes,
                    "max_wait_ms": int(self.max_wait * 1000),
                    "min_bytes": self.min_bytes,
                    "filter": self.filter,
                    "plugin": self.plugin,
                }
                stream.write_frame(fr.Kind.FETCH, header)
                try:
                    f = await stream.expect(fr.Kind.FETCH_OK)
                except BrokerError as e:
                    if e.code == ErrorCode.OFFSET_OUT_OF_RANGE and self.reset is not None:
                        spec = offset_spec(self.reset)
                        continue
                    raise
                h = f.header
                first = int(h.get("offset", 0))
                records: list[Record] = []
                for bh, b in bt.iter_batches(f.payload):
                    for r in bt.decode_records(bh, b, first):
                        records.append(ConsumedRecord(r.offset, r.timestamp, r.key, r.value, r.headers, r.tags, topic, partition))
                nxt = int(h["next_offset"])
                advanced = spec != {"at": nxt}
                spec = {"at": nxt}
                if records or advanced:
                    await self._queue.put(_Chunk(key, epoch, records, nxt))
        except asyncio.CancelledError:
            raise
        except (QuiverError, ProtocolError) as e:
            await self._queue.put(_Chunk(key, epoch, [], 0, e))
        finally:
            if stream is not None:
                try:
                    stream.finish()
                except QuiverError:
                    pass
                stream.close()

    async def close(self) -> None:
        self._closed = True
        for k in list(self._tasks):
            self._stop(k)
        await asyncio.sleep(0)

    async def __aenter__(self) -> "Consumer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
