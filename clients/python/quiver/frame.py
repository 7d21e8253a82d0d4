"""Frames (docs/protocol.md, "Frame layout"): u32 length | u8 kind | u32 header_len | MessagePack
header | payload, little-endian; sans-IO like proto/src/frame.rs."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import BrokerError, ProtocolError

PREFIX_LEN = 9
FRAME_HEADROOM = 64 << 10
DEFAULT_MAX_FRAME = (16 << 20) + FRAME_HEADROOM
MAX_HEADER = 1 << 20
PROTOCOL_VERSION = 1
ALPN = "quiver/1"

_PREFIX = struct.Struct("<IBI")


class Kind(enum.IntEnum):
    HELLO = 0x01
    HELLO_OK = 0x02
    PRODUCE = 0x10
    PRODUCE_OK = 0x11
    FETCH = 0x20
    FETCH_OK = 0x21
    ADMIN = 0x30
    ADMIN_OK = 0x31
    GROUP = 0x40
    GROUP_OK = 0x41
    QUEUE = 0x50
    QUEUE_OK = 0x51
    ERROR = 0x7F


_KINDS = frozenset(int(k) for k in Kind)


@dataclass
class Frame:
    kind: Kind
    header: dict[str, Any]
    payload: bytes


def pack_header(header: dict[str, Any]) -> bytes:
    """A header as a MessagePack map; None values are left out (optional fields absent)."""
    return msgpack.packb({k: v for k, v in header.items() if v is not None}, use_bin_type=True)


def encode(kind: Kind, header: dict[str, Any], payload: bytes = b"") -> bytes:
    h = pack_header(header)
    if len(h) > MAX_HEADER:
        raise ProtocolError(f"frame header of {len(h)} bytes exceeds {MAX_HEADER}")
    return _PREFIX.pack(5 + len(h) + len(payload), int(kind), len(h)) + h + payload


def check(buf: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME) -> int | None:
    """Bytes of the whole frame at the start of `buf`, None when more are needed; raises when the
    bytes already show the frame is bad (then the stream is out of sync)."""
    if len(buf) < 4:
        return None
    (length,) = struct.unpack_from("<I", buf, 0)
    if length > max_frame:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    if length < 5:
        raise ProtocolError(f"frame length {length} is shorter than the fixed fields")
    if len(buf) < 5:
        return None
    if buf[4] not in _KINDS:
        raise ProtocolError(f"unknown frame kind {buf[4]:#04x}")
    if len(buf) < PREFIX_LEN:
        return None
    (header_len,) = struct.unpack_from("<I", buf, 5)
    if header_len > MAX_HEADER or header_len > length - 5:
        raise ProtocolError(f"bad header length {header_len} in a frame of {length}")
    total = 4 + length
    return total if len(buf) >= total else None


def parse(buf: bytes | bytearray | memoryview, total: int) -> Frame:
    """Decodes the frame of `total` bytes (from `check`) at the start of `buf`."""
    _, kind, header_len = _PREFIX.unpack_from(buf, 0)
    raw = bytes(buf[PREFIX_LEN : PREFIX_LEN + header_len])
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=False) if raw else {}
    except Exception as e:  # msgpack raises several types
        raise ProtocolError(f"invalid frame header: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a map")
    return Frame(Kind(kind), header, bytes(buf[PREFIX_LEN + header_len : total]))


def expect(frame: Frame, kind: Kind) -> Frame:
    """The frame when it is of `kind`; raises BrokerError for an Error frame."""
    if frame.kind == Kind.ERROR:
        h = frame.header
        raise BrokerError(int(h.get("code", 0)), str(h.get("message", "")), h.get("request_id"))
    if frame.kind != kind:
        raise ProtocolError(f"expected a {kind.name} frame, got {frame.kind.name}")
    return frame
