"""Request/reply over topics. A request carries `quiver-reply-to` (the topic to answer on) and
`quiver-correlation-id`; a reply carries the request's correlation id. A Requester owns a reply
topic (by default a private one, `quiver.reply.<16 hex>` with one partition, deleted by `close`)
read from its end; responders read the request topic with a queue consumer and answer with
`reply_to` (Responder does both)."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import secrets
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Union

from .batch import Record
from .consumer import Consumer, Offset
from .errors import BrokerError, ErrorCode, NoReply, QuiverError
from .producer import Producer
from .queue import QueueConsumer

if TYPE_CHECKING:
    from .client import Client

REPLY_TO_HEADER = "quiver-reply-to"
CORRELATION_ID_HEADER = "quiver-correlation-id"
log = logging.getLogger("quiver.rpc")


class Requester:
    def __init__(self, client: "Client", reply_topic: str | None = None) -> None:
        """Use `await Requester.create(client)`."""
        self._client = client
        self._prefix = secrets.token_hex(8)
        self.reply_topic = reply_topic or f"quiver.reply.{self._prefix}"
        self._created = reply_topic is None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Record]] = {}
        self._producer = Producer(client, linger=0)
        self._consumer: Consumer | None = None
        self._listener: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, client: "Client", reply_topic: str | None = None) -> "Requester":
        r = cls(client, reply_topic)
        if r._created:
            await client.admin.create_topic(r.reply_topic, 1)
        # Resolve the end now, so a reply produced right after `create` cannot slip in first.
        desc = await client.admin.describe_topic(r.reply_topic)
        r._consumer = Consumer(client, r.reply_topic, max_wait=0.5)
        for p in desc.partitions:
            r._consumer.assign(p.partition, Offset(p.log_end))
        r._listener = asyncio.ensure_future(r._listen())
        return r

    async def request(self, topic: str, value: bytes, timeout: float = 5.0, **send_options: Any) -> Record:
        """Sends `value` to `topic` as a request and waits up to `timeout` seconds for the reply
        (NoReply when none came)."""
        cid = f"{self._prefix}-{next(self._ids)}"
        headers = [(n, v) for n, v in dict(send_options.pop("headers", {}) or {}).items()
                   if n not in (REPLY_TO_HEADER, CORRELATION_ID_HEADER)]
        headers += [(REPLY_TO_HEADER, self.reply_topic.encode()), (CORRELATION_ID_HEADER, cid.encode())]
        fut: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        try:
            async def exchange() -> Record:
                await (await self._producer.send(topic, value, headers=headers, now=True, **send_options))
                return await fut

            return await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise NoReply(f"no reply to request {cid} on {topic} within {timeout}s") from None
        finally:
            self._pending.pop(cid, None)

    async def _listen(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                r = await self._consumer.next()
            except QuiverError as e:
                if self._client.closed:
                    break
                log.warning("reading replies failed: %s; restarting", e)
                await asyncio.sleep(0.2)
                for k in self._consumer.assignment():
                    pos = self._consumer.position(k)
                    self._consumer.seek(k, Offset(pos) if pos is not None else "latest")
                continue
            cid = r.header(CORRELATION_ID_HEADER)
            fut = self._pending.pop(cid.decode(errors="replace"), None) if cid else None
            if fut is not None and not fut.done():
                fut.set_result(r)
        for f in self._pending.values():
            if not f.done():
                f.set_exception(QuiverError("connection closed"))

    async def close(self) -> None:
        """Stops reading replies and deletes the reply topic if it was created here."""
        if self._listener is not None:
            self._listener.cancel()
        if self._consumer is not None:
            await self._consumer.close()
        try:
            await self._producer.close()
        except QuiverError:
            pass
        if self._created:
            await self._client.admin.delete_topic(self.reply_topic)


def reply_to(request: Record) -> tuple[str, list[tuple[str, bytes]]] | None:
    """(reply topic, headers) of the reply to `request`; None when it expects no reply."""
    topic = request.header(REPLY_TO_HEADER)
    cid = request.header(CORRELATION_ID_HEADER)
    if topic is None or cid is None:
        return None
    return topic.decode(), [(CORRELATION_ID_HEADER, cid)]


Handler = Callable[[Record], Union[bytes, Awaitable[bytes]]]


class Responder:
    """Answers requests from `topic`, leased under the share group `group`."""

    def __init__(self, client: "Client", group: str, topic: str, **queue_options: Any) -> None:
        self.queue = QueueConsumer(client, group, topic, **queue_options)
        self._producer = Producer(client, linger=0)

    async def serve_once(self, handler: Handler) -> int:
        """One poll's worth of requests; returns how many were answered. Requests without the
        request headers, or whose reply topic is gone, are acknowledged unanswered; on an error
        the poll's requests are released, to be delivered again."""
        requests = await self.queue.poll()
        try:
            deliveries = []
            for req in requests:
                value = handler(req)
                if inspect.isawaitable(value):
                    value = await value
                target = reply_to(req)
                if target is None:
                    continue
                topic, headers = target
                try:
                    deliveries.append(await self._producer.send(topic, value, headers=headers, now=True))
                except BrokerError as e:
                    if e.code != ErrorCode.UNKNOWN_TOPIC:
                        raise
            answered = 0
            for d in deliveries:
                try:
                    await d
                    answered += 1
                except BrokerError as e:
                    if e.code != ErrorCode.UNKNOWN_TOPIC:
                        raise
        except BaseException:
            try:
                await self.queue.release(requests)
            except QuiverError:
                pass
            raise
        await self.queue.ack(requests)
        return answered

    async def serve(self, handler: Handler) -> None:
        while True:
            await self.serve_once(handler)

    async def close(self) -> None:
        await self._producer.close()
