"""The record batch (docs/batch-format.md), in pure Python: encoded by producers, CRC32C-checked and
decoded by consumers. All integers little-endian; a 56-byte header, then records back to back."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from .crc import crc32c
from .errors import BatchError

MAGIC = b"QVRB"
VERSION = 1
HEADER_LEN = 56
FLAG_SPARSE = 1
FLAG_DELAYED = 2
DELIVER_AT_HEADER = "quiver-deliver-at"
DELAY_MS_HEADER = "quiver-delay-ms"
NO_KEY = 0xFFFFFFFF

# magic, version, flags, reserved, length, base_offset, crc, base_ts, max_ts, count, producer, seq
_HEADER = struct.Struct("<4sBBHIQIqqIQI")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_REC_FIXED = struct.Struct("<IIiB")  # body_length, offset_delta, timestamp_delta, tag_count


@dataclass
class Record:
    """A record as read from the broker."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        """The value of the first header named `name`."""
        for n, v in self.headers:
            if n == name:
                return v
        return None


def is_delay_header(name: str) -> bool:
    return name == DELIVER_AT_HEADER or name == DELAY_MS_HEADER


def record_encoded_len(
    key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]], tags: Sequence[str]
) -> int:
    return (
        12 + 1 + sum(1 + len(t.encode()) for t in tags) + 4 + (len(key) if key is not None else 0)
        + 4 + len(value) + 2 + sum(6 + len(n.encode()) + len(v) for n, v in headers)
    )


class BatchBuilder:
    """Encodes records into one batch (base offset 0: the broker assigns offsets)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.count = 0
        self.size = HEADER_LEN
        self._base_ts = 0
        self._max_ts = -(1 << 63)
        self.flags = 0

    def __len__(self) -> int:
        return self.count

    def push(
        self,
        value: bytes,
        *,
        key: bytes | None = None,
        timestamp: int,
        headers: Sequence[tuple[str, bytes]] = (),
        tags: Sequence[str] = (),
    ) -> None:
        if self.count == 0:
            self._base_ts = timestamp
        delta = timestamp - self._base_ts
        if not -(1 << 31) <= delta < (1 << 31):
            raise BatchError(f"record timestamp {timestamp} too far from the batch's {self._base_ts}")
        if len(tags) > 255:
            raise BatchError("at most 255 tags per record")
        if len(headers) > 65535:
            raise BatchError("at most 65535 headers per record")
        out = bytearray()
        out += bytes((len(tags),))
        for t in tags:
            tb = t.encode()
            if len(tb) > 255:
                raise BatchError(f"tag {t!r} is longer than 255 bytes")
            out += bytes((len(tb),)) + tb
        if key is None:
            out += _U32.pack(NO_KEY)
        else:
            out += _U32.pack(len(key)) + key
        out += _U32.pack(len(value)) + value
        out += _U16.pack(len(headers))
        for name, v in headers:
            nb = name.encode()
            if len(nb) > 65535:
                raise BatchError("header name longer than 65535 bytes")
            out += _U16.pack(len(nb)) + nb + _U32.pack(len(v)) + v
            if is_delay_header(name):
                self.flags |= FLAG_DELAYED
        body_len = 8 + len(out)
        rec = struct.pack("<IIi", body_len, self.count, delta) + out
        self._parts.append(rec)
        self.count += 1
        self.size += len(rec)
        if timestamp > self._max_ts:
            self._max_ts = timestamp

    def finish(self, producer_id: int = 0, base_sequence: int = 0) -> bytes:
        if self.count == 0:
            raise BatchError("a batch must hold at least one record")
        tail = struct.pack(
            "<qqIQI", self._base_ts, self._max_ts, self.count, producer_id, base_sequence & 0xFFFFFFFF
        )
        body = tail + b"".join(self._parts)
        crc = crc32c(body)
        head = struct.pack("<4sBBHIQI", MAGIC, VERSION, self.flags, 0, self.size, 0, crc)
        return head + body


@dataclass
class BatchHeader:
    flags: int
    length: int
    base_offset: int
    crc: int
    base_timestamp: int
    max_timestamp: int
    record_count: int
    producer_id: int
    base_sequence: int


def parse_header(buf: bytes | memoryview, pos: int = 0) -> BatchHeader:
    if len(buf) - pos < HEADER_LEN:
        raise BatchError(f"batch truncated: need {HEADER_LEN} bytes, have {len(buf) - pos}")
    (magic, version, flags, reserved, length, base, crc, bts, mts, count, pid, seq) = _HEADER.unpack_from(
        buf, pos
    )
    if magic != MAGIC:
        raise BatchError(f"not a Quiver batch: magic bytes {bytes(magic)!r}")
    if version != VERSION:
        raise BatchError(f"unsupported batch version {version}")
    if reserved != 0 or length < HEADER_LEN or flags & ~(FLAG_SPARSE | FLAG_DELAYED):
        raise BatchError("bad batch header")
    if count == 0:
        raise BatchError("a batch must hold at least one record")
    return BatchHeader(flags, length, base, crc, bts, mts, count, pid, seq)


def iter_batches(payload: bytes) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Splits concatenated batches, checking each one's CRC32C; yields (header, batch bytes)."""
    mv = memoryview(payload)
    pos = 0
    n = len(payload)
    while pos < n:
        h = parse_header(mv, pos)
        end = pos + h.length
        if end > n:
            raise BatchError(f"batch truncated: need {h.length} bytes, have {n - pos}")
        computed = crc32c(mv[pos + 24 : end])
        if computed != h.crc:
            raise BatchError(f"batch CRC32C mismatch: stored {h.crc:#010x}, computed {computed:#010x}")
        yield h, mv[pos:end]
        pos = end


def decode_records(h: BatchHeader, b: memoryview, first: int = 0) -> list[Record]:
    """The records of one checked batch whose offset is at least `first`."""
    out: list[Record] = []
    pos = HEADER_LEN
    end = len(b)
    base, bts = h.base_offset, h.base_timestamp
    prev = -1
    try:
        for _ in range(h.record_count):
            body_len, odelta, tdelta, ntags = _REC_FIXED.unpack_from(b, pos)
            rec_end = pos + 4 + body_len
            if rec_end > end or odelta <= prev:
                raise BatchError("malformed record")
            prev = odelta
            offset = base + odelta
            if offset < first:
                pos = rec_end
                continue
            p = pos + 13
            tags = []
            for _ in range(ntags):
                tl = b[p]
                tags.append(bytes(b[p + 1 : p + 1 + tl]).decode())
                p += 1 + tl
            (klen,) = _U32.unpack_from(b, p)
            p += 4
            if klen == NO_KEY:
                key = None
            else:
                key = bytes(b[p : p + klen])
                p += klen
            (vlen,) = _U32.unpack_from(b, p)
            p += 4
            value = bytes(b[p : p + vlen])
            p += vlen
            (nh,) = _U16.unpack_from(b, p)
            p += 2
            headers = []
            for _ in range(nh):
                (nl,) = _U16.unpack_from(b, p)
                name = bytes(b[p + 2 : p + 2 + nl]).decode()
                p += 2 + nl
                (hl,) = _U32.unpack_from(b, p)
                headers.append((name, bytes(b[p + 4 : p + 4 + hl])))
                p += 4 + hl
            if p != rec_end:
                raise BatchError("malformed record: bytes left over")
            out.append(Record(offset, bts + tdelta, key, value, headers, tags))
            pos = rec_end
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise BatchError(f"malformed record: {e}") from None
    if pos != end:
        raise BatchError("malformed batch: bytes after the last record")
    return out


def decode(payload: bytes, first: int = 0) -> list[Record]:
    """Every record at or after offset `first` in a payload of batches, CRC-checked."""
    out: list[Record] = []
    for h, b in iter_batches(payload):
        out.extend(decode_records(h, b, first))
    return out


def partition_for_key(key: bytes, partitions: int) -> int:
    """FNV-1a 64 of the key modulo the partition count: the Rust client's partitioner and the
    broker's exchange routing (proto/src/routing.rs), so a key keeps its partition across clients."""
    h = 0xCBF29CE484222325
    for b in key:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % max(partitions, 1)
