"""Admin calls (docs/protocol.md, "Admin"): one `Admin` frame per stream, answered by `AdminOk`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from . import frame as fr
from .errors import ProtocolError


class Caller(Protocol):
    """What admin calls need of a connection (a `Client`): one request, one reply frame. A
    protocol rather than an import keeps the arrow one way: client.py builds `Admin`."""

    async def call(
        self, kind: fr.Kind, header: dict[str, Any], reply: fr.Kind, payload: bytes = b""
    ) -> fr.Frame: ...


@dataclass
class TopicSummary:
    name: str
    partitions: int


@dataclass
class PartitionDescription:
    partition: int
    log_start: int
    log_end: int
    size_bytes: int
    segments: int


@dataclass
class TopicDescription:
    name: str
    partitions: list[PartitionDescription]
    segment_bytes: int
    created_ms: int
    retention_ms: int | None = None
    retention_bytes: int | None = None
    pending_delayed: int = 0
    pipeline: list[dict[str, Any]] = field(default_factory=list)


class Admin:
    def __init__(self, client: Caller) -> None:
        self._client = client

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """A raw admin request: `op` (kebab-case) and its fields; returns the answer's map (with
        its `type` tag)."""
        f = await self._client.call(fr.Kind.ADMIN, {"op": op, **fields}, fr.Kind.ADMIN_OK)
        return f.header

    async def _expect(self, want: str, op: str, **fields: Any) -> dict[str, Any]:
        h = await self.call(op, **fields)
        if h.get("type") != want:
            raise ProtocolError(f"unexpected admin answer {h.get('type')!r} to {op} (wanted {want})")
        return h

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        segment_bytes: int | None = None,
    ) -> TopicSummary:
        h = await self._expect(
            "topic-created", "create-topic", name=name, partitions=partitions,
            retention_ms=retention_ms, retention_bytes=retention_bytes, segment_bytes=segment_bytes,
        )
        return TopicSummary(h["name"], h["partitions"])

    async def delete_topic(self, name: str) -> None:
        await self._expect("topic-deleted", "delete-topic", name=name)

    async def list_topics(self) -> list[TopicSummary]:
        h = await self._expect("topics", "list-topics")
        return [TopicSummary(t["name"], t["partitions"]) for t in h["topics"]]

    async def describe_topic(self, name: str) -> TopicDescription:
        h = await self._expect("topic", "describe-topic", name=name)
        return _description(h)

    async def add_partitions(self, name: str, count: int) -> TopicDescription:
        return _description(await self._expect("topic", "add-partitions", name=name, count=count))

    async def metadata(self) -> dict[str, Any]:
        return await self._expect("metadata", "metadata")

    async def deploy_plugin(self, name: str, component: bytes, version: str | None = None) -> dict[str, Any]:
        """Deploys a WebAssembly component (the frame payload); returns the `plugin-deployed`
        answer (`plugin`, `compile_ms`, `cached`)."""
        header = {"op": "deploy-plugin", "name": name, "version": version}
        f = await self._client.call(fr.Kind.ADMIN, header, fr.Kind.ADMIN_OK, payload=component)
        return f.header

    async def init_producer(self) -> int:
        return int((await self._expect("producer", "init-producer"))["producer_id"])

    async def cancel_delayed(self, delay_id: int) -> str:
        return str((await self._expect("delay-cancelled", "cancel-delayed", id=delay_id))["topic"])

    async def create_user(self, name: str) -> str:
        """Creates a token user (a broker with --auth); returns its token, shown this once."""
        return str((await self._expect("user-created", "create-user", name=name))["token"])

    async def who_am_i(self) -> tuple[str, bool]:
        h = await self._expect("identity", "who-am-i")
        return h["principal"], bool(h["auth"])


def _description(h: dict[str, Any]) -> TopicDescription:
    parts = [
        PartitionDescription(p["partition"], p["log_start"], p["log_end"], p["size_bytes"], p["segments"])
        for p in h["partitions"]
    ]
    return TopicDescription(
        name=h["name"], partitions=parts, segment_bytes=h["segment_bytes"], created_ms=h["created_ms"],
        retention_ms=h.get("retention_ms"), retention_bytes=h.get("retention_bytes"),
        pending_delayed=h.get("pending_delayed", 0), pipeline=h.get("pipeline", []),
    )
