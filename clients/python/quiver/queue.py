"""The queue consumer (share groups): many consumers read one topic, even one partition, together;
the broker leases each record to one consumer at a time and forgets it once acknowledged. A record
not settled before its lease ends (`visibility_timeout`) is delivered again; after
`max_deliveries` deliveries it goes to `<topic>.dlq`. One request per stream (docs/protocol.md,
"Queue"); acks, nacks and releases are sent as coalesced offset ranges."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from . import batch as bt
from . import frame as fr
from .consumer import ConsumedRecord
from .errors import ProtocolError

if TYPE_CHECKING:
    from .client import Client


@dataclass
class QueuedRecord(ConsumedRecord):
    """A leased record: `delivery_count` is 1 on the first delivery; settle it before
    `lease_deadline_ms` (ms since the epoch)."""

    delivery_count: int = 1
    lease_deadline_ms: int = 0


@dataclass(frozen=True)
class Settled:
    settled: int
    stale: int


def ranges(records: Sequence[QueuedRecord]) -> list[dict[str, int]]:
    """Coalesces (partition, offset) pairs into inclusive ranges."""
    out: list[dict[str, int]] = []
    for p, o in sorted({(r.partition, r.offset) for r in records}):
        if out and out[-1]["partition"] == p and out[-1]["last"] + 1 == o:
            out[-1]["last"] = o
        else:
            out.append({"partition": p, "first": o, "last": o})
    return out


class QueueConsumer:
    def __init__(
        self,
        client: "Client",
        group: str,
        topic: str,
        *,
        max_records: int = 500,
        max_wait: float = 1.0,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        consumer_id: str | None = None,
    ) -> None:
        self._client = client
        self.group = group
        self.topic = topic
        self.max_records = max_records
        self.max_wait = max_wait
        self.visibility_timeout = visibility_timeout
        self.max_deliveries = max_deliveries
        self.consumer_id = consumer_id or f"{client.client_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    async def _call(self, op: str, **fields: Any) -> fr.Frame:
        header = {"op": op, "group": self.group, "topic": self.topic, "consumer_id": self.consumer_id, **fields}
        return await self._client.call(fr.Kind.QUEUE, header, fr.Kind.QUEUE_OK)

    async def poll(self, max_records: int | None = None, max_wait: float | None = None) -> list[QueuedRecord]:
        """Leases up to `max_records` records, waiting up to `max_wait` seconds for some."""
        f = await self._call(
            "poll",
            max_records=max_records or self.max_records,
            max_wait_ms=int((self.max_wait if max_wait is None else max_wait) * 1000),
            visibility_timeout_ms=int(self.visibility_timeout * 1000),
            max_deliveries=self.max_deliveries,
        )
        h = f.header
        if h.get("type") != "leased":
            raise ProtocolError(f"unexpected queue answer {h.get('type')!r}")
        deadline = int(h.get("lease_deadline_ms", 0))
        payload = f.payload
        out: list[QueuedRecord] = []
        pos = 0
        for part in h.get("parts", []):
            n = int(part["bytes"])
            if pos + n > len(payload):
                raise ProtocolError(f"leased part claims {n} bytes, {len(payload) - pos} left")
            leased = {r["offset"]: r["delivery_count"] for r in part["records"]}
            for r in bt.decode(payload[pos : pos + n]):
                count = leased.get(r.offset)
                if count is not None:
                    out.append(QueuedRecord(r.offset, r.timestamp, r.key, r.value, r.headers, r.tags,
                                            self.topic, int(part["partition"]), count, deadline))
            pos += n
        if pos != len(payload):
            raise ProtocolError(f"{len(payload) - pos} bytes after the leased parts")
        return out

    async def _settle(self, op: str, records: Sequence[QueuedRecord], **fields: Any) -> Settled:
        rs = ranges(records)
        if not rs:
            return Settled(0, 0)
        h = (await self._call(op, records=rs, **fields)).header
        return Settled(int(h.get("settled", 0)), int(h.get("stale", 0)))

    async def ack(self, records: Sequence[QueuedRecord] | QueuedRecord) -> Settled:
        """Done with these records: never delivered again."""
        return await self._settle("ack", _seq(records))

    async def nack(self, records: Sequence[QueuedRecord] | QueuedRecord, delay: float = 0.0) -> Settled:
        """Failed: delivered again after `delay` seconds (counts as a delivery)."""
        return await self._settle("nack", _seq(records), delay_ms=int(delay * 1000))

    async def release(self, records: Sequence[QueuedRecord] | QueuedRecord) -> Settled:
        """Not processed: delivered again at once, the delivery not counted."""
        return await self._settle("release", _seq(records))


def _seq(records: Sequence[QueuedRecord] | QueuedRecord) -> Sequence[QueuedRecord]:
    return [records] if isinstance(records, QueuedRecord) else records
