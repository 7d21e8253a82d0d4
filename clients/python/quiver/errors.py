"""Errors: every failure the broker reports carries its stable error code (docs/protocol.md)."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """The stable error codes of the protocol. A number this client does not know reads as UNKNOWN."""

    UNKNOWN = 0
    MALFORMED_FRAME = 1
    FRAME_TOO_LARGE = 2
    UNSUPPORTED_VERSION = 3
    INVALID_REQUEST = 4
    UNKNOWN_TOPIC = 10
    UNKNOWN_PARTITION = 11
    TOPIC_EXISTS = 12
    INVALID_TOPIC_NAME = 13
    INVALID_CONFIG = 14
    TOPIC_UNAVAILABLE = 15
    UNKNOWN_EXCHANGE = 16
    EXCHANGE_EXISTS = 17
    OFFSET_OUT_OF_RANGE = 20
    INVALID_BATCH = 21
    RECORD_TOO_LARGE = 22
    OUT_OF_ORDER_SEQUENCE = 23
    PRODUCER_FENCED = 24
    UNROUTABLE = 25
    UNKNOWN_DELAYED = 26
    STORAGE_ERROR = 30
    DISK_FULL = 31
    TIMEOUT = 40
    SERVER_BUSY = 41
    SHUTTING_DOWN = 42
    NOT_AUTHORIZED = 50
    UNKNOWN_PLUGIN = 60
    INVALID_PLUGIN = 61
    PLUGIN_INIT_FAILED = 62
    PLUGIN_FAILED = 63
    PLUGIN_IN_USE = 64
    UNKNOWN_MEMBER = 70
    NOT_PARTITION_OWNER = 71
    GROUP_ACTIVE = 72
    INTERNAL = 99

    @classmethod
    def of(cls, number: int) -> "ErrorCode":
        try:
            return cls(number)
        except ValueError:
            return cls.UNKNOWN

    @property
    def retriable(self) -> bool:
        """The same request may succeed later unchanged (clients retry these with backoff)."""
        return self in _RETRIABLE


_RETRIABLE = frozenset(
    {
        ErrorCode.STORAGE_ERROR,
        ErrorCode.DISK_FULL,
        ErrorCode.TIMEOUT,
        ErrorCode.SERVER_BUSY,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.OUT_OF_ORDER_SEQUENCE,
    }
)


class QuiverError(Exception):
    """Base class of every error this package raises."""

    code: ErrorCode | None = None

    @property
    def retriable(self) -> bool:
        return self.code is not None and self.code.retriable


class BrokerError(QuiverError):
    """The broker refused a request with an `Error` frame: `code` (stable number), `message`."""

    def __init__(self, code: int, message: str, request_id: int | None = None):
        self.code = ErrorCode.of(code)
        self.raw_code = code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{self.code.name.lower()} ({code}): {message}")


class ConnectError(QuiverError):
    """The connection could not be made, or the broker refused it (then `code` is set)."""

    def __init__(self, message: str, code: int | None = None):
        self.code = ErrorCode.of(code) if code is not None else None
        super().__init__(message)


class ConnectionClosed(QuiverError):
    """The connection ended (closed by either side, or lost); `code` is the close code when known."""

    def __init__(self, message: str, code: int | None = None):
        self.code = ErrorCode.of(code) if code is not None and code < 0x10000 else None
        super().__init__(message)


class ProtocolError(QuiverError):
    """The peer sent something this client cannot read (a framing or decoding failure)."""


class BatchError(ProtocolError):
    """Bytes are not a valid record batch (bad magic, length, CRC32C, record structure)."""


class NoReply(QuiverError):
    """A request/reply call got no reply in time."""
