"""The Quiver batch format (version 1, docs/batch-format.md) in plain Python: `decode_batch` reads
the `list<u8>` the broker passes to a plugin, `encode_batch` writes one (a transform's output, and
the test's input batches). You should not need to change this file.

Standard library only (`struct`), because it runs in two places: inside the component, on the
CPython that componentize-py bundles, and natively under `python3 -m unittest`.

All integers are little-endian. A 56-byte header, then `record_count` records back to back:

    u32 body_length | u32 offset_delta | i32 timestamp_delta | u8 tag_count, tags (u8 len, bytes)
    | u32 key_length (0xFFFFFFFF = no key), key | u32 value_length, value
    | u16 header_count, headers (u16 name len, name, u32 value len, value)
"""

import struct
from collections import namedtuple

MAGIC = b"QVRB"
VERSION = 1
HEADER_LEN = 56
FLAG_SPARSE = 1  # offsets strictly increasing instead of dense (filtered fetch results only)
FLAG_DELAYED = 2  # some record has a delay header (the broker holds such records)
DELAY_HEADERS = (b"quiver-deliver-at", b"quiver-delay-ms")
NO_KEY = 0xFFFFFFFF
# The smallest record: body_length, offset and timestamp deltas, tag count, key length, value
# length and header count (4 + 4 + 4 + 1 + 4 + 4 + 2).
MIN_RECORD_LEN = 23

# magic, version, flags, reserved, length, base_offset, crc, base_timestamp, max_timestamp,
# record_count, producer_id, base_sequence: 4+1+1+2+4+8+4+8+8+4+8+4 = 56 bytes, no padding.
_HEADER = struct.Struct("<4sBBHIQIqqIQI")
_RECORD_FIXED = struct.Struct("<IiB")  # offset_delta, timestamp_delta, tag_count
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class BatchError(ValueError):
    """The bytes are not a valid batch (decoding), or records cannot be encoded as one."""


BatchHeader = namedtuple(
    "BatchHeader",
    "flags length base_offset crc base_timestamp max_timestamp record_count producer_id "
    "base_sequence",
)

Batch = namedtuple("Batch", "header records")
"""A decoded batch: its `BatchHeader` and its `Record`s, in batch order."""

NewRecord = namedtuple("NewRecord", "value key tags headers timestamp", defaults=(None, (), (), 0))
NewRecord.__doc__ = """A record to encode. `value` and `key` are bytes or str (UTF-8), `key` may be
None; `tags` is a sequence of str or bytes; `headers` a sequence of (name, value) pairs; `timestamp`
is in milliseconds since the Unix epoch (a plugin making records of its own takes host.now_ms())."""


# --- decoding --------------------------------------------------------------------------------


def _rejected(reason):
    # The prefix the Rust SDK and the JavaScript decoder use for a batch they cannot read.
    return BatchError("input batch rejected: " + reason)


def _bad(index, reason):
    return _rejected("malformed record %d: %s" % (index, reason))


def decode_batch(data):
    """Decodes one encoded batch (bytes, bytearray or memoryview) into a `Batch`.

    Raises `BatchError` with the reason when the bytes are not a valid batch, and nothing else:
    every read is bounds-checked first. The CRC32C is not checked (the broker did, before calling
    the plugin). Records are `Record` views into `data`: fields are sliced out only when read.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise _rejected("expected the batch as bytes")
    n = len(data)
    if n < 12:
        raise _rejected("batch truncated: need 12 bytes, have %d" % n)
    if data[0:4] != MAGIC:
        raise _rejected("not a Quiver batch: bad magic bytes")
    if data[4] != VERSION:
        raise _rejected("unsupported batch version %d (this plugin reads %d)" % (data[4], VERSION))
    if _U16.unpack_from(data, 6)[0] != 0:
        raise _rejected("batch header field reserved is not 0")
    length = _U32.unpack_from(data, 8)[0]
    if length < HEADER_LEN:
        raise _rejected("batch header field length has invalid value %d" % length)
    if n < HEADER_LEN:
        raise _rejected("batch truncated: need %d bytes, have %d" % (HEADER_LEN, n))
    if length != n:
        raise _rejected("batch header says %d bytes but %d were passed" % (length, n))
    _magic, _version, flags, _reserved, *rest = _HEADER.unpack_from(data, 0)
    header = BatchHeader(flags, *rest)
    if header.flags & ~(FLAG_SPARSE | FLAG_DELAYED):
        raise _rejected("batch header field flags has invalid value %d" % header.flags)
    count = header.record_count
    if count == 0:
        raise _rejected("a batch must hold at least one record")
    # A hostile count cannot drive work or allocation: the records must fit in the bytes.
    if count * MIN_RECORD_LEN > length - HEADER_LEN:
        raise _rejected("batch header field record_count has invalid value %d" % count)

    sparse = header.flags & FLAG_SPARSE
    records = []
    pos = HEADER_LEN
    next_delta = 0  # the smallest offset delta the next record may have
    for index in range(count):
        if pos + 4 > n:
            raise _bad(index, "record length runs past the batch")
        end = pos + 4 + _U32.unpack_from(data, pos)[0]
        if end > n:
            raise _bad(index, "record runs past the batch")
        if end - pos - 4 < 9:
            raise _bad(index, "record shorter than its fixed fields")
        offset_delta, ts_delta, tag_count = _RECORD_FIXED.unpack_from(data, pos + 4)
        if (offset_delta < next_delta) if sparse else (offset_delta != index):
            raise _bad(index, "offset deltas are not dense (or, in a sparse batch, not increasing)")
        next_delta = offset_delta + 1
        at = pos + 13

        tags_at = at
        for _ in range(tag_count):
            if at + 1 > end or at + 1 + data[at] > end:
                raise _bad(index, "tag runs past the record")
            at += 1 + data[at]

        if at + 4 > end:
            raise _bad(index, "missing key length")
        key_len = _U32.unpack_from(data, at)[0]
        at += 4
        key_at = at
        if key_len == NO_KEY:
            key_at, key_len = -1, 0
        elif at + key_len > end:
            raise _bad(index, "key runs past the record")
        at += key_len

        if at + 4 > end:
            raise _bad(index, "missing value length")
        value_len = _U32.unpack_from(data, at)[0]
        at += 4
        value_at = at
        if at + value_len > end:
            raise _bad(index, "value runs past the record")
        at += value_len

        if at + 2 > end:
            raise _bad(index, "missing header count")
        header_count = _U16.unpack_from(data, at)[0]
        at += 2
        headers_at = at
        for _ in range(header_count):
            if at + 2 > end or at + 6 + _U16.unpack_from(data, at)[0] > end:
                raise _bad(index, "header runs past the record")
            value_start = at + 6 + _U16.unpack_from(data, at)[0]
            value_end = value_start + _U32.unpack_from(data, value_start - 4)[0]
            if value_end > end:
                raise _bad(index, "header value runs past the record")
            at = value_end
        if at != end:
            raise _bad(index, "record length does not match its fields")

        records.append(
            Record(
                data,
                header.base_offset + offset_delta,
                header.base_timestamp + ts_delta,
                tag_count,
                tags_at,
                key_at,
                key_len,
                value_at,
                value_len,
                header_count,
                headers_at,
            )
        )
        pos = end
    if pos != n:
        raise _rejected("trailing bytes after the last record")
    return Batch(header, records)


class Record(object):
    """One record of a decoded batch: its positions in the batch bytes, already bounds-checked.

    `offset` and `timestamp` (ms since the Unix epoch) are ints. `key` (bytes or None), `value`
    (bytes), `tags` (list of bytes) and `headers` (list of (name, value) bytes pairs) are sliced out
    when read, so a plugin that only looks at tags copies nothing else. Tags and header names are
    UTF-8 (the broker checked); `.decode()` them to get str.
    """

    __slots__ = (
        "data",
        "offset",
        "timestamp",
        "_tag_count",
        "_tags_at",
        "_key_at",
        "_key_len",
        "_value_at",
        "_value_len",
        "_header_count",
        "_headers_at",
    )

    def __init__(
        self,
        data,
        offset,
        timestamp,
        tag_count,
        tags_at,
        key_at,
        key_len,
        value_at,
        value_len,
        header_count,
        headers_at,
    ):
        self.data = data  # the whole batch
        self.offset = offset  # base_offset + offset delta (relative, from 0, in ingest pipelines)
        self.timestamp = timestamp
        # Where each field starts in `data` (key_at is -1 for no key), and how long or how many.
        self._tag_count = tag_count
        self._tags_at = tags_at
        self._key_at = key_at
        self._key_len = key_len
        self._value_at = value_at
        self._value_len = value_len
        self._header_count = header_count
        self._headers_at = headers_at

    def has_tag(self, tag):
        """Whether the record carries this tag (str or UTF-8 bytes), compared in place."""
        wanted = tag.encode("utf-8") if isinstance(tag, str) else tag
        data = self.data
        at = self._tags_at
        for _ in range(self._tag_count):
            if data[at] == len(wanted) and data.startswith(wanted, at + 1):
                return True
            at += 1 + data[at]
        return False

    @property
    def tags(self):
        data = self.data
        at = self._tags_at
        tags = []
        for _ in range(self._tag_count):
            tags.append(data[at + 1 : at + 1 + data[at]])
            at += 1 + data[at]
        return tags

    @property
    def key(self):
        if self._key_at < 0:
            return None
        return self.data[self._key_at : self._key_at + self._key_len]

    @property
    def value(self):
        return self.data[self._value_at : self._value_at + self._value_len]

    @property
    def headers(self):
        data = self.data
        at = self._headers_at
        headers = []
        for _ in range(self._header_count):
            name_end = at + 2 + _U16.unpack_from(data, at)[0]
            value_end = name_end + 4 + _U32.unpack_from(data, name_end)[0]
            headers.append((data[at + 2 : name_end], data[name_end + 4 : value_end]))
            at = value_end
        return headers

    def header(self, name):
        """The value (bytes) of the first header with this name (str or bytes), or None."""
        wanted = name.encode("utf-8") if isinstance(name, str) else name
        for header_name, value in self.headers:
            if header_name == wanted:
                return value
        return None


# --- encoding --------------------------------------------------------------------------------


def _bytes(value):
    """str as UTF-8, bytes-like as they are; anything else is a mistake worth a clear message."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise BatchError("expected bytes or str in a record, got %s" % type(value).__name__)


def encode_batch(records):
    """Encodes records (`NewRecord`s, or decoded `Record`s: anything with value, key, tags, headers
    and timestamp) as one batch: dense offsets from 0, base offset 0, producer id 0, the CRC32C
    set, and FLAG_DELAYED when a record has a delay header (as the broker expects).

    Returns b"" for no records: a transform returns that to drop every record, because a batch
    of zero records does not exist. Raises `BatchError` when a record does not fit the format.
    """
    records = list(records)
    if not records:
        return b""
    base_ts = records[0].timestamp
    max_ts = max(r.timestamp for r in records)
    flags = 0
    parts = []
    for index, r in enumerate(records):
        delta = r.timestamp - base_ts
        if not -(1 << 31) <= delta < (1 << 31):
            raise BatchError("record %d: timestamp more than 24 days from the first's" % index)
        tags, headers = list(r.tags), list(r.headers)  # read once: a decoded Record slices them
        body = [struct.pack("<IiB", index, delta, _checked(len(tags), 255, "tags", index))]
        for tag in tags:
            tag = _bytes(tag)
            body.append(bytes((_checked(len(tag), 255, "bytes in a tag", index),)) + tag)
        if r.key is None:
            body.append(_U32.pack(NO_KEY))
        else:
            key = _bytes(r.key)
            body.append(_U32.pack(_checked(len(key), NO_KEY - 1, "key bytes", index)) + key)
        value = _bytes(r.value)
        body.append(_U32.pack(_checked(len(value), NO_KEY - 1, "value bytes", index)) + value)
        body.append(_U16.pack(_checked(len(headers), 0xFFFF, "headers", index)))
        for name, header_value in headers:
            name, header_value = _bytes(name), _bytes(header_value)
            if name in DELAY_HEADERS:
                flags |= FLAG_DELAYED
            body.append(_U16.pack(_checked(len(name), 0xFFFF, "bytes in a header name", index)))
            body.append(name + _U32.pack(len(header_value)) + header_value)
        body = b"".join(body)
        parts.append(_U32.pack(len(body)) + body)
    # The CRC covers bytes 24.. (from base_timestamp on), so it is computed before the head.
    covered = struct.pack("<qqIQI", base_ts, max_ts, len(records), 0, 0) + b"".join(parts)
    length = 24 + len(covered)
    if length > 0xFFFFFFFF:
        raise BatchError("the records take more than 4 GiB")
    head = struct.pack("<4sBBHIQI", MAGIC, VERSION, flags, 0, length, 0, crc32c(covered))
    return head + covered


def _checked(n, limit, what, index):
    if n > limit:
        raise BatchError("record %d: %d %s, at most %d allowed" % (index, n, what, limit))
    return n


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


# Built at import time, which inside the component means at build time (componentize-py snapshots
# the interpreter), so it costs nothing when the plugin starts.
_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC32C (Castagnoli) of `data`, as the batch header's `crc` field (bytes 24..length) uses.
    Pure Python, about a byte per table lookup: fine for the batches a plugin sees."""
    table = _CRC32C_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
