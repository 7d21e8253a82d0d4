"""CRC32C (Castagnoli): the C-accelerated `crc32c` or `google_crc32c` package when importable, else a
pure-Python table (correct, slow)."""

from __future__ import annotations

from typing import Callable

IMPLEMENTATION: str


def _table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def crc32c_pure(data: bytes | bytearray | memoryview) -> int:
    crc = 0xFFFFFFFF
    t = _TABLE
    for b in bytes(data):
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c: Callable[[bytes | bytearray | memoryview], int]
try:
    from crc32c import crc32c as _c  # type: ignore[import-not-found]

    crc32c = _c
    IMPLEMENTATION = "crc32c"
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import google_crc32c  # type: ignore[import-not-found]

        def crc32c(data: bytes | bytearray | memoryview) -> int:
            return int(google_crc32c.value(bytes(data)))

        IMPLEMENTATION = "google-crc32c"
    except ImportError:
        crc32c = crc32c_pure
        IMPLEMENTATION = "pure-python"
