"""A small blocking wrapper over the asyncio API, for scripts and code without an event loop. The
asyncio objects live on one background thread's loop; every call here waits for its result.

    from quiver.sync import Client
    with Client("127.0.0.1:7447", ca="quiver-data/tls/ca.pem") as c:
        c.create_topic("orders", 3)
        p = c.producer()
        print(p.send("orders", b"hello", key=b"k").result())
        p.flush()
        consumer = c.consumer("orders")
        consumer.assign_all("earliest")
        for record in consumer.poll(1.0):
            print(record.offset, record.value)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Iterator, Sequence, TypeVar

from . import admin as _admin
from .client import Client as AsyncClient
from .consumer import ConsumedRecord, Consumer as AsyncConsumer, SeekTo
from .producer import Producer as AsyncProducer, RecordMetadata
from .queue import QueueConsumer as AsyncQueueConsumer, QueuedRecord, Settled

T = TypeVar("T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="quiver-sync", daemon=True).start()
            _loop = loop
        return _loop


def _run(coro: Awaitable[T], timeout: float | None = None) -> T:
    return asyncio.run_coroutine_threadsafe(coro, _get_loop()).result(timeout)  # type: ignore[arg-type]


async def _make(factory: Any, *args: Any, **kw: Any) -> Any:
    return factory(*args, **kw)


class Client:
    """A blocking connection; arguments as `quiver.Client.connect`."""

    def __init__(self, server: str | None = None, **options: Any) -> None:
        self._c: AsyncClient = _run(AsyncClient.connect(server, **options))

    @property
    def aio(self) -> AsyncClient:
        """The underlying asyncio client."""
        return self._c

    def create_topic(self, name: str, partitions: int = 1, **settings: Any) -> _admin.TopicSummary:
        return _run(self._c.admin.create_topic(name, partitions, **settings))

    def delete_topic(self, name: str) -> None:
        _run(self._c.admin.delete_topic(name))

    def list_topics(self) -> list[_admin.TopicSummary]:
        return _run(self._c.admin.list_topics())

    def describe_topic(self, name: str) -> _admin.TopicDescription:
        return _run(self._c.admin.describe_topic(name))

    def producer(self, **options: Any) -> "Producer":
        return Producer(_run(_make(AsyncProducer, self._c, **options)))

    def consumer(self, topic: str, **options: Any) -> "Consumer":
        return Consumer(_run(_make(AsyncConsumer, self._c, topic, **options)))

    def queue_consumer(self, group: str, topic: str, **options: Any) -> "QueueConsumer":
        return QueueConsumer(AsyncQueueConsumer(self._c, group, topic, **options))

    def close(self) -> None:
        _run(self._c.close())

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Producer:
    def __init__(self, p: AsyncProducer) -> None:
        self._p = p

    def send(self, topic: str, value: bytes, **options: Any) -> "concurrent.futures.Future[RecordMetadata]":
        """Queues a record; the returned future resolves to its RecordMetadata."""

        async def go() -> RecordMetadata:
            return await (await self._p.send(topic, value, **options))

        return asyncio.run_coroutine_threadsafe(go(), _get_loop())

    def flush(self) -> None:
        _run(self._p.flush())

    def close(self) -> None:
        _run(self._p.close())


class Consumer:
    def __init__(self, c: AsyncConsumer) -> None:
        self._c = c

    def assign(self, partitions: int | Sequence[int], start: SeekTo = "earliest") -> None:
        _run(_make(self._c.assign, partitions, start))

    def assign_all(self, start: SeekTo = "earliest") -> list[int]:
        return _run(self._c.assign_all(start))

    def seek(self, partition: int, to: SeekTo) -> None:
        _run(_make(self._c.seek, partition, to))

    def position(self, partition: int) -> int | None:
        return self._c.position(partition)

    def poll(self, timeout: float = 1.0) -> list[ConsumedRecord]:
        return _run(self._c.poll(timeout))

    def __iter__(self) -> Iterator[ConsumedRecord]:
        while True:
            yield from self.poll(1.0)

    def close(self) -> None:
        _run(self._c.close())


class QueueConsumer:
    def __init__(self, q: AsyncQueueConsumer) -> None:
        self._q = q

    def poll(self, max_records: int | None = None, max_wait: float | None = None) -> list[QueuedRecord]:
        return _run(self._q.poll(max_records, max_wait))

    def ack(self, records: Any) -> Settled:
        return _run(self._q.ack(records))

    def nack(self, records: Any, delay: float = 0.0) -> Settled:
        return _run(self._q.nack(records, delay))

    def release(self, records: Any) -> Settled:
        return _run(self._q.release(records))
