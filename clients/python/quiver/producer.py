"""The producer: records are encoded into per-partition batches, sent when full (`batch_bytes`) or
after `linger`, pipelined on one produce stream whose answers come in order. Retriable failures are
retried with backoff in the order batches were sealed (before newer ones).

Idempotence (on by default), as the Rust client: a producer id from `init-producer` and a sequence
per partition (counting records) stamped into each batch when sealed and kept across retries, so a
resend whose first attempt was appended is answered `duplicate` instead of appended twice.

Keyed records go to `partition_for_key(key, partitions)` (FNV-1a, the Rust client's partitioner);
unkeyed ones fill one partition's batch, then the next (sticky). Records with a delay
(`deliver_at`/`delay_ms`) go into batches of their own so each delivery result is an offset or a
delay id.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Sequence

from . import frame as fr
from .batch import DELAY_MS_HEADER, DELIVER_AT_HEADER, BatchBuilder, is_delay_header, partition_for_key
from .errors import BrokerError, ConnectionClosed, ProtocolError, QuiverError

if TYPE_CHECKING:
    from .client import Client, Stream

ACKS = ("none", "leader", "all")


@dataclass(frozen=True)
class RecordMetadata:
    """Where an acknowledged record landed. `offset` is None with acks="none", for a batch the
    topic's pipeline transformed, and for a record held for delayed delivery (then `delay_id`)."""

    topic: str
    partition: int
    offset: int | None
    delay_id: int | None = None
    duplicate: bool = False


@dataclass
class _Ack:
    partition: int
    base_offset: int | None
    delayed: int
    delay_first_id: int | None
    duplicate: bool


class Delivery:
    """Awaitable: resolves to the record's RecordMetadata once its batch is acknowledged, or raises
    the error that failed the batch for good."""

    __slots__ = ("_fut", "_topic", "_held", "_index")

    def __init__(self, fut: "asyncio.Future[_Ack]", topic: str, held: bool, index: int) -> None:
        self._fut = fut
        self._topic = topic
        self._held = held
        self._index = index

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        ack = yield from asyncio.shield(self._fut).__await__()
        if self._held:
            did = ack.delay_first_id + self._index if ack.delay_first_id is not None and self._index < ack.delayed else None
            return RecordMetadata(self._topic, ack.partition, None, did, ack.duplicate)
        off = ack.base_offset + self._index if ack.base_offset is not None else None
        return RecordMetadata(self._topic, ack.partition, off, None, ack.duplicate)

    def done(self) -> bool:
        return self._fut.done()


class _Open:
    __slots__ = ("builder", "fut", "started", "held")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.builder = BatchBuilder()
        self.fut: asyncio.Future[_Ack] = loop.create_future()
        self.started = time.monotonic()
        self.held = 0


class _Ready:
    __slots__ = ("topic", "partition", "data", "fut", "attempts", "order", "producer_id", "due")

    def __init__(self, topic: str, partition: int, data: bytes, fut: "asyncio.Future[_Ack]", order: int, producer_id: int):
        self.topic = topic
        self.partition = partition
        self.data = data
        self.fut = fut
        self.attempts = 0
        self.order = order
        self.producer_id = producer_id
        self.due = 0.0


class Producer:
    def __init__(
        self,
        client: "Client",
        *,
        acks: str = "leader",
        linger: float = 0.005,
        batch_bytes: int = 256 << 10,
        retries: int = 5,
        retry_backoff: float = 0.1,
        max_in_flight: int = 64,
        idempotent: bool = True,
        partitioner: str = "key-hash",
    ) -> None:
        if acks not in ACKS:
            raise ValueError(f"acks must be one of {ACKS}")
        if partitioner not in ("key-hash", "round-robin"):
            raise ValueError("partitioner must be 'key-hash' or 'round-robin'")
        self._client = client
        self.acks = acks
        self.linger = linger
        self.batch_bytes = batch_bytes
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.max_in_flight = max(1, max_in_flight)
        self.idempotent = idempotent
        self.partitioner = partitioner
        self._loop = asyncio.get_running_loop()
        self._open: dict[tuple[str, int, bool], _Open] = {}
        self._sticky: dict[str, int] = {}
        self._partitions: dict[str, int] = {}
        self._unacked: list[asyncio.Future[_Ack]] = []
        self._producer_id: int | None = None
        self._stale_id = False
        self._sequences: dict[tuple[str, int], int] = {}
        self._sealed = 0
        self._init_lock = asyncio.Lock()
        self._ready: deque[_Ready] = deque()
        self._retry: list[_Ready] = []
        self._in_flight: deque[_Ready] = deque()
        self._stream: Stream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._sender = asyncio.ensure_future(self._send_loop())
        self._linger_task = asyncio.ensure_future(self._linger_loop()) if linger > 0 else None

    @property
    def producer_id(self) -> int | None:
        return self._producer_id

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | dict[str, bytes] | None = None,
        tags: Sequence[str] = (),
        timestamp: int | None = None,
        deliver_at: int | None = None,
        delay_ms: int | None = None,
        now: bool = False,
    ) -> Delivery:
        """Adds a record to its partition's batch and returns its Delivery (await it for the
        offset). `deliver_at` (ms since the epoch) or `delay_ms`: the broker holds the record until
        then. `now`: send the batch at once instead of after `linger`."""
        if self._closing:
            raise QuiverError("the producer is closed")
        if isinstance(value, str) or (key is not None and isinstance(key, str)):
            raise TypeError("value and key are bytes (encode strings first)")
        hdrs: list[tuple[str, bytes]] = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
        if deliver_at is not None or delay_ms is not None:
            hdrs = [(n, v) for n, v in hdrs if not is_delay_header(n)]
            if deliver_at is not None:
                hdrs.append((DELIVER_AT_HEADER, str(int(deliver_at)).encode()))
            else:
                hdrs.append((DELAY_MS_HEADER, str(int(delay_ms or 0)).encode()))
        await self._ensure_producer_id()
        if partition is None:
            count = await self._partition_count(topic)
            if key is not None and self.partitioner == "key-hash":
                partition = partition_for_key(key, count)
            else:
                partition = self._sticky.get(topic, 0) % count
        ts = timestamp if timestamp is not None else int(time.time() * 1000)
        delayed = any(is_delay_header(n) for n, _ in hdrs)
        bkey = (topic, partition, delayed)
        o = self._open.get(bkey)
        from .batch import record_encoded_len

        rec_len = record_encoded_len(key, value, hdrs, tags)
        if o is not None and o.builder.size + rec_len > self.batch_bytes:
            self._seal(bkey)
            o = None
        if o is None:
            o = self._open[bkey] = _Open(self._loop)
        index = o.held if delayed else len(o.builder) - o.held
        o.builder.push(value, key=key, timestamp=ts, headers=hdrs, tags=tags)
        if delayed:
            o.held += 1
        d = Delivery(o.fut, topic, delayed, index)
        if now or self.linger <= 0 or o.builder.size >= self.batch_bytes:
            self._seal(bkey)
        # Back-pressure: let the sender drain when too much is waiting.
        while len(self._ready) > self.max_in_flight * 2 and not self._closing:
            await asyncio.sleep(0.001)
        return d

    async def send_and_wait(self, topic: str, value: bytes, **kw: Any) -> RecordMetadata:
        """Sends one record at once and waits for its delivery result."""
        return await (await self.send(topic, value, now=True, **kw))

    async def flush(self) -> None:
        """Sends every open batch and waits until all sent so far are acknowledged; raises the
        first delivery error."""
        for k in list(self._open):
            self._seal(k)
        waiting = [f for f in self._unacked if not f.done()]
        self._unacked = []
        first: BaseException | None = None
        for f in waiting:
            try:
                await asyncio.shield(f)
            except QuiverError as e:
                first = first or e
        if first is not None:
            raise first

    async def close(self) -> None:
        """Flushes, then stops the sender (the client stays open)."""
        try:
            await self.flush()
        finally:
            self._closing = True
            self._wake.set()
            if self._linger_task is not None:
                self._linger_task.cancel()
            try:
                await asyncio.wait_for(self._sender, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            if self._stream is not None:
                try:
                    self._stream.finish()
                except QuiverError:
                    pass
                self._stream.close()
            if self._reader is not None:
                self._reader.cancel()

    async def __aenter__(self) -> "Producer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # internals

    async def _ensure_producer_id(self) -> None:
        if not self.idempotent or (self._producer_id is not None and not self._stale_id):
            return
        async with self._init_lock:
            if self._producer_id is not None and not self._stale_id:
                return
            pid = await self._client.admin.init_producer()
            self._producer_id = pid
            self._stale_id = False
            self._sequences.clear()

    async def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            desc = await self._client.admin.describe_topic(topic)
            n = self._partitions[topic] = max(1, len(desc.partitions))
        return n

    def _seal(self, bkey: tuple[str, int, bool]) -> None:
        o = self._open.pop(bkey, None)
        if o is None or len(o.builder) == 0:
            return
        topic, partition, _ = bkey
        pid = self._producer_id if self.idempotent and self._producer_id is not None else 0
        seq = self._sequences.get((topic, partition), 0)
        data = o.builder.finish(pid, seq)
        if pid:
            self._sequences[(topic, partition)] = (seq + len(o.builder)) & 0xFFFFFFFF
        self._sticky[topic] = self._sticky.get(topic, 0) + 1
        self._sealed += 1
        self._unacked.append(o.fut)
        self._ready.append(_Ready(topic, partition, data, o.fut, self._sealed, pid))
        self._wake.set()

    async def _linger_loop(self) -> None:
        period = max(self.linger / 2, 0.001)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for k, o in list(self._open.items()):
                if now - o.started >= self.linger:
                    self._seal(k)

    async def _send_loop(self) -> None:
        while True:
            if self._closing and not self._ready and not self._retry and not self._in_flight:
                return
            self._wake.clear()
            can_send = len(self._in_flight) < self.max_in_flight
            timeout: float | None = None
            if self._retry:
                r = self._retry[0]
                wait = r.due - time.monotonic()
                if can_send and wait <= 0:
                    self._retry.pop(0)
                    self._write(r)
                    continue
                timeout = max(wait, 0.001)
            elif self._ready and can_send:
                self._write(self._ready.popleft())
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _write(self, r: _Ready) -> None:
        if r.fut.done():
            return
        if self._stream is None:
            try:
                self._stream = self._client.open_stream()
            except QuiverError as e:
                return self._fail_or_retry(r, e)
            self._reader = asyncio.ensure_future(self._read_loop(self._stream))
        header = {
            "request_id": self._client.next_request_id(),
            "topic": r.topic,
            "partition": r.partition,
            "acks": self.acks,
        }
        try:
            self._stream.write_frame(fr.Kind.PRODUCE, header, r.data)
        except QuiverError as e:
            return self._broken(r, e)
        if self.acks == "none":
            r.fut.set_result(_Ack(r.partition, None, 0, None, False))
        else:
            self._in_flight.append(r)

    async def _read_loop(self, stream: "Stream") -> None:
        while True:
            try:
                f = await stream.read_frame()
                if f is None:
                    raise ProtocolError("produce stream ended")
            except QuiverError as e:
                if self._stream is stream:
                    self._stream = None
                    if self._in_flight:
                        self._broken(self._in_flight.popleft(), e)
                stream.close()
                return
            if not self._in_flight:
                continue
            r = self._in_flight.popleft()
            self._wake.set()
            if f.kind == fr.Kind.ERROR:
                h = f.header
                self._fail_or_retry(r, BrokerError(int(h.get("code", 0)), str(h.get("message", "")), h.get("request_id")))
            elif f.kind == fr.Kind.PRODUCE_OK:
                h = f.header
                transformed = bool(h.get("transformed", False))
                delayed = int(h.get("delayed", 0) or 0)
                if not r.fut.done():
                    r.fut.set_result(
                        _Ack(
                            int(h["partition"]),
                            None if transformed else int(h["base_offset"]),
                            delayed,
                            int(h.get("delay_first_id", 0)) if not transformed and delayed > 0 else None,
                            bool(h.get("duplicate", False)),
                        )
                    )
            else:
                self._broken(r, ProtocolError(f"unexpected {f.kind.name} on a produce stream"))

    def _broken(self, r: _Ready, e: QuiverError) -> None:
        """The stream failed under `r`: everything in flight goes again on a new stream, in order."""
        self._stream = None
        self._retry_or_fail(r, e)
        while self._in_flight:
            self._retry_or_fail(self._in_flight.popleft(), ProtocolError(f"produce stream failed: {e}"))

    def _fail_or_retry(self, r: _Ready, e: QuiverError) -> None:
        if e.retriable or isinstance(e, ConnectionClosed) and e.code is None:
            self._retry_or_fail(r, e)
        else:
            self._fail(r, e)

    def _retry_or_fail(self, r: _Ready, e: QuiverError) -> None:
        if r.attempts >= self.retries or self._client.closed:
            return self._fail(r, e)
        r.attempts += 1
        r.due = time.monotonic() + self.retry_backoff * (2 ** (r.attempts - 1))
        i = 0
        while i < len(self._retry) and self._retry[i].order < r.order:
            i += 1
        self._retry.insert(i, r)
        self._wake.set()

    def _fail(self, r: _Ready, e: QuiverError) -> None:
        if r.producer_id and self._producer_id == r.producer_id:
            self._stale_id = True
        if not r.fut.done():
            r.fut.set_exception(e)
            r.fut.exception()  # a failure nobody awaits is not "never retrieved"
