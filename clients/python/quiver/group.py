"""The group consumer: members of a consumer group share the partitions of the group's topics, and
the group remembers how far it got (committed offsets). Assignment is incremental and cooperative
(docs/groups.md): a background task heartbeats the coordinator with the partitions this member
still owns and learns the partitions it may own now; `poll`/`next` apply the difference. A
partition taken away is committed (auto mode), dropped and reported released at once; a partition
added starts at its committed offset (or `reset`). Partitions that stay are never paused.

Commit modes: "auto" commits, at most once per `auto_commit_interval` and before returning new
records, the positions of the records returned before (at least once as long as each poll's
records are processed before the next poll); "manual": call `commit()` after processing.
A member whose session expired (UnknownMember) drops its partitions without committing and joins
again as a new member."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Sequence

from . import frame as fr
from .consumer import EARLIEST, ConsumedRecord, Consumer, Key, Offset, SeekTo
from .errors import BrokerError, ConnectionClosed, ErrorCode, ProtocolError, QuiverError

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("quiver.group")


async def call_group(client: "Client", header: dict[str, Any]) -> dict[str, Any]:
    return (await client.call(fr.Kind.GROUP, header, fr.Kind.GROUP_OK)).header


def _tp(k: Key) -> dict[str, Any]:
    return {"topic": k[0], "partition": k[1]}


class GroupConsumer:
    def __init__(
        self,
        client: "Client",
        group: str,
        topics: Sequence[str],
        *,
        commit: str = "auto",
        auto_commit_interval: float = 1.0,
        session_timeout: float = 10.0,
        heartbeat_interval: float = 0.5,
        reset: SeekTo = EARLIEST,
        **consumer_options: Any,
    ) -> None:
        """Use `await GroupConsumer.join(...)` (same arguments). `consumer_options` go to the
        underlying Consumer (max_bytes, max_wait, filter, plugin...)."""
        if not group or not topics:
            raise ValueError("a group consumer needs a group name and at least one topic")
        if commit not in ("auto", "manual"):
            raise ValueError("commit is 'auto' or 'manual'")
        self._client = client
        self.group = group
        self.topics = list(topics)
        self.commit_mode = commit
        self.auto_commit_interval = auto_commit_interval
        self.session_timeout = session_timeout
        self.heartbeat_interval = heartbeat_interval
        self.reset = reset
        self._consumer = Consumer(client, None, **consumer_options)
        self.member_id: str | None = None
        self._assigned: set[Key] = set()
        self._owned: set[Key] = set()
        self._committed: dict[Key, int] = {}
        self._fenced = False
        self._failure: BaseException | None = None
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_commit = time.monotonic()
        self._hb_task: asyncio.Task[None] | None = None
        self._interval = heartbeat_interval

    @classmethod
    async def join(cls, client: "Client", group: str, topics: Sequence[str], **kw: Any) -> "GroupConsumer":
        g = cls(client, group, topics, **kw)
        await g._beat()
        if g._failure is not None:
            raise g._failure
        g._hb_task = asyncio.ensure_future(g._heartbeat_loop())
        await g._sync()
        return g

    def assignment(self) -> list[Key]:
        """The (topic, partition)s this member reads now, sorted."""
        return sorted(self._owned)

    def position(self, topic: str, partition: int) -> int | None:
        return self._consumer.position((topic, partition))

    async def poll(self, timeout: float = 1.0) -> list[ConsumedRecord]:
        """Records available within `timeout` seconds (possibly none), after applying assignment
        changes (and an auto commit when due)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self._sync()
            await self._auto_commit()
            wait = min(max(deadline - loop.time(), 0), 0.1)
            records = await self._consumer.poll(wait)
            if records or loop.time() >= deadline:
                return records

    async def next(self) -> ConsumedRecord:
        while True:
            records = await self.poll(1.0)
            if records:
                # Hand back one at a time: keep the rest in the consumer's buffer order.
                for r in reversed(records[1:]):
                    self._consumer._ready.appendleft(r)
                self._consumer._positions[(records[0].topic, records[0].partition)] = records[0].offset + 1
                return records[0]

    def __aiter__(self) -> "GroupConsumer":
        return self

    async def __anext__(self) -> ConsumedRecord:
        return await self.next()

    async def commit(self) -> None:
        """Commits the positions of every owned partition (everything returned so far)."""
        await self._send_commit(self._positions(self._owned))

    async def commit_offsets(self, offsets: dict[Key, int]) -> None:
        """Commits explicit offsets (each the next offset to read) of partitions this member owns."""
        await self._send_commit(offsets)

    async def committed(self, partitions: Sequence[Key]) -> dict[Key, int | None]:
        return await self._fetch_committed(list(partitions))

    async def close(self) -> None:
        """Commits (auto mode) and leaves, so the partitions move at once."""
        err: BaseException | None = None
        if self.commit_mode == "auto":
            try:
                await self.commit()
            except QuiverError as e:
                err = e
        if self._hb_task is not None:
            self._hb_task.cancel()
        await self._consumer.close()
        if self.member_id is not None:
            try:
                await call_group(self._client, {"op": "leave", "group": self.group, "member_id": self.member_id})
            except BrokerError as e:
                if e.code != ErrorCode.UNKNOWN_MEMBER:
                    err = err or e
            self.member_id = None
        if err is not None:
            raise err

    async def __aenter__(self) -> "GroupConsumer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # assignment

    async def _sync(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._fenced:
            self._drop_all()
            return
        target = set(self._assigned)
        revoked = self._owned - target
        added = target - self._owned
        if revoked:
            if self.commit_mode == "auto":
                try:
                    await self._send_commit(self._positions(revoked))
                except QuiverError as e:
                    log.warning("group %s: cannot commit revoked partitions: %s", self.group, e)
            for k in revoked:
                self._consumer.unassign(k)
                self._owned.discard(k)
                self._committed.pop(k, None)
            self._wake.set()  # the new owner waits for our release
        if added:
            committed = await self._fetch_committed(sorted(added))
            for k in sorted(added):
                off = committed.get(k)
                self._consumer.seek(k, Offset(off) if off is not None else self.reset)
                if off is not None:
                    self._committed[k] = off
                self._owned.add(k)

    def _drop_all(self) -> None:
        for k in list(self._owned):
            self._consumer.unassign(k)
        self._owned.clear()
        self._committed.clear()
        self._fenced = False
        self._wake.set()

    async def _fetch_committed(self, partitions: list[Key]) -> dict[Key, int | None]:
        h = await call_group(self._client, {"op": "fetch-offsets", "group": self.group, "partitions": [_tp(k) for k in partitions]})
        return {(o["topic"], o["partition"]): o.get("offset") for o in h.get("offsets", [])}

    def _positions(self, partitions: set[Key] | Sequence[Key]) -> dict[Key, int]:
        out = {}
        for k in partitions:
            pos = self._consumer.position(k)
            if pos is not None and self._committed.get(k) != pos:
                out[k] = pos
        return out

    async def _auto_commit(self) -> None:
        if self.commit_mode != "auto" or time.monotonic() - self._last_commit < self.auto_commit_interval:
            return
        self._last_commit = time.monotonic()
        try:
            await self.commit()
        except QuiverError as e:
            if isinstance(e, BrokerError) and not e.retriable and e.code not in (ErrorCode.UNKNOWN_MEMBER, ErrorCode.NOT_PARTITION_OWNER):
                raise
            log.warning("group %s: auto-commit failed: %s", self.group, e)

    async def _send_commit(self, offsets: dict[Key, int]) -> None:
        if not offsets:
            return
        if self.member_id is None:
            raise QuiverError("the member is joining the group again; its partitions were dropped")
        req = {
            "op": "commit", "group": self.group, "member_id": self.member_id,
            "offsets": [{"topic": k[0], "partition": k[1], "offset": o} for k, o in offsets.items()],
        }
        try:
            await call_group(self._client, req)
        except BrokerError as e:
            if e.code == ErrorCode.UNKNOWN_MEMBER:
                self._lose()
                self._drop_all()
            raise
        self._committed.update(offsets)

    # heartbeat

    def _lose(self) -> None:
        self.member_id = None
        self._assigned = set()
        self._fenced = True
        self._changed.set()

    async def _beat(self) -> None:
        if self._fenced:
            return  # the consumer has not dropped its partitions yet
        owned = sorted(self._owned | self._assigned) if self.member_id else []
        req = {
            "op": "heartbeat", "group": self.group, "member_id": self.member_id,
            "client_id": self._client.client_id, "topics": self.topics,
            "session_timeout_ms": int(self.session_timeout * 1000), "owned": [_tp(k) for k in owned],
        }
        try:
            h = await call_group(self._client, req)
        except BrokerError as e:
            if e.code == ErrorCode.UNKNOWN_MEMBER:
                log.info("group %s: membership expired; joining again", self.group)
                self._lose()
                return
            if e.retriable:
                log.warning("group %s: heartbeat failed: %s", self.group, e)
                return
            self._failure = e
            self._changed.set()
            return
        except (ConnectionClosed, ProtocolError) as e:
            self._failure = e
            self._changed.set()
            return
        if h.get("type") != "assignment":
            self._failure = ProtocolError(f"unexpected group answer {h.get('type')!r}")
            return
        self.member_id = h["member_id"]
        assigned = {(tp["topic"], tp["partition"]) for tp in h.get("assigned", [])}
        if assigned != self._assigned:
            self._assigned = assigned
            self._changed.set()
        broker_ms = int(h.get("heartbeat_interval_ms", 0) or 0)
        interval = self.heartbeat_interval
        if broker_ms:
            interval = min(interval, broker_ms / 1000)
        self._interval = max(interval, 0.01)

    async def _heartbeat_loop(self) -> None:
        while self._failure is None:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self._beat()
