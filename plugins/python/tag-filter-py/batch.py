"""A decoder for the Quiver batch format, version 1 (docs/batch-format.md), in plain Python with no
dependencies beyond `struct`: what a plugin needs to read the `list<u8>` the broker passes (the
componentize-py bindings hand it over as `bytes`).

All integers are little-endian. A 56-byte header, then `record_count` records back to back:

    u32 body_length | u32 offset_delta | i32 timestamp_delta | u8 tag_count, tags (u8 len, bytes)
    | u32 key_length (0xFFFFFFFF = no key), key | u32 value_length, value
    | u16 header_count, headers (u16 name len, name, u32 value len, value)

`decode_batch` never raises on bad input: every read is bounds-checked first and a malformed batch
comes back as an error string ("input batch rejected: ..."), the same messages as the JavaScript
decoder (plugins/js/tag-filter-js/batch.js). It does not check the CRC32C: the broker verified it
before calling the plugin. Records are `Record` views holding positions into the input: keys,
values, tags and headers are sliced out only when asked for, and `has_tag` compares a tag in place.
Tags and header names stay UTF-8 bytes (the broker checked they are UTF-8), so a filter compares
them against pre-encoded bytes without decoding a string per record.

This module must stay importable by a plain CPython (>= 3.8) for the native tests: no
componentize-py imports here.
"""

import struct
from collections import namedtuple

HEADER_LEN = 56
FLAG_SPARSE = 1
# Set when a record carries a delay header (docs/batch-format.md); nothing to do for a reader.
FLAG_DELAYED = 2
MAGIC = b"QVRB"
VERSION = 1
NO_KEY = 0xFFFFFFFF
# Smallest record: body_length, offset and timestamp deltas, tag count, key length, value length
# and header count (4 + 4 + 4 + 1 + 4 + 4 + 2).
MIN_RECORD_LEN = 23

# magic, version, flags, reserved, length, base_offset, crc, base_timestamp, max_timestamp,
# record_count, producer_id, base_sequence: 4+1+1+2+4+8+4+8+8+4+8+4 = 56 bytes, no padding ("<").
_HEADER = struct.Struct("<4sBBHIQIqqIQI")
# offset_delta, timestamp_delta, tag_count: the fixed start of a record body.
_RECORD_FIXED = struct.Struct("<IiB")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
assert _HEADER.size == HEADER_LEN

BatchHeader = namedtuple(
    "BatchHeader",
    "flags length base_offset crc base_timestamp max_timestamp record_count producer_id "
    "base_sequence",
)
"""The decoded header fields (magic, version and reserved are checked, not kept)."""

Batch = namedtuple("Batch", "header records")
"""A decoded batch: its `BatchHeader` and a list of `Record`s, in batch order."""


def _rejected(reason):
    """The message, with the prefix the Rust SDK uses for a batch it cannot read."""
    return "input batch rejected: " + reason


def _bad_record(index, reason):
    return _rejected("malformed record %d: %s" % (index, reason))


def decode_batch(data):
    """Decodes one encoded batch.

    `data` is exactly one batch as `bytes` (or `bytearray` / `memoryview`, copied to `bytes`).
    Returns a `Batch`, or a `str` with the reason when the bytes are not a valid batch: check with
    `isinstance(result, str)`. Never raises on malformed input.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        return _rejected("expected the batch as bytes")
    n = len(data)
    if n < 12:
        return _rejected("batch truncated: need 12 bytes, have %d" % n)
    if data[0:4] != MAGIC:
        return _rejected("not a Quiver batch: bad magic bytes")
    if data[4] != VERSION:
        return _rejected(
            "unsupported batch version %d (this plugin reads version %d)" % (data[4], VERSION)
        )
    flags = data[5]
    if _U16.unpack_from(data, 6)[0] != 0:
        return _rejected("batch header field reserved is not 0")
    length = _U32.unpack_from(data, 8)[0]
    if length < HEADER_LEN:
        return _rejected("batch header field length has invalid value %d" % length)
    if n < HEADER_LEN:
        return _rejected("batch truncated: need %d bytes, have %d" % (HEADER_LEN, n))
    if length != n:
        return _rejected("batch header says %d bytes but %d were passed" % (length, n))
    if flags & ~(FLAG_SPARSE | FLAG_DELAYED):
        return _rejected("batch header field flags has invalid value %d" % flags)
    (_, _, _, _, _, base_offset, crc, base_ts, max_ts, count, producer_id, base_seq) = (
        _HEADER.unpack_from(data, 0)
    )
    header = BatchHeader(
        flags, length, base_offset, crc, base_ts, max_ts, count, producer_id, base_seq
    )
    if count == 0:
        return _rejected("a batch must hold at least one record")
    # A hostile count cannot drive work or allocation: the records must fit in the bytes.
    if count * MIN_RECORD_LEN > length - HEADER_LEN:
        return _rejected("batch header field record_count has invalid value %d" % count)

    sparse = bool(flags & FLAG_SPARSE)
    unpack_u16 = _U16.unpack_from
    unpack_u32 = _U32.unpack_from
    unpack_fixed = _RECORD_FIXED.unpack_from
    records = []
    pos = HEADER_LEN
    min_delta = 0
    for index in range(count):
        if pos + 4 > n:
            return _bad_record(index, "record length runs past the batch")
        body_len = unpack_u32(data, pos)[0]
        start = pos + 4
        end = start + body_len
        if end > n:
            return _bad_record(index, "record runs past the batch")
        if body_len < 9:
            return _bad_record(index, "record shorter than its fixed fields")
        offset_delta, ts_delta, tag_count = unpack_fixed(data, start)
        if (offset_delta < min_delta) if sparse else (offset_delta != index):
            return _bad_record(
                index, "offset deltas are not dense (or, in a sparse batch, not increasing)"
            )
        min_delta = offset_delta + 1
        at = start + 9

        tags_at = at
        for _ in range(tag_count):
            if at + 1 > end or at + 1 + data[at] > end:
                return _bad_record(index, "tag runs past the record")
            at += 1 + data[at]

        if at + 4 > end:
            return _bad_record(index, "missing key length")
        key_len = unpack_u32(data, at)[0]
        at += 4
        if key_len == NO_KEY:
            key_at = -1
            key_len = 0
        else:
            key_at = at
            if at + key_len > end:
                return _bad_record(index, "key runs past the record")
        at += key_len

        if at + 4 > end:
            return _bad_record(index, "missing value length")
        value_len = unpack_u32(data, at)[0]
        at += 4
        value_at = at
        if at + value_len > end:
            return _bad_record(index, "value runs past the record")
        at += value_len

        if at + 2 > end:
            return _bad_record(index, "missing header count")
        header_count = unpack_u16(data, at)[0]
        at += 2
        headers_at = at
        for _ in range(header_count):
            if at + 6 > end:
                return _bad_record(index, "header runs past the record")
            name_len = unpack_u16(data, at)[0]
            if at + 6 + name_len > end:
                return _bad_record(index, "header runs past the record")
            value_start = at + 6 + name_len
            header_value_len = unpack_u32(data, at + 2 + name_len)[0]
            if value_start + header_value_len > end:
                return _bad_record(index, "header value runs past the record")
            at = value_start + header_value_len
        if at != end:
            return _bad_record(index, "record length does not match its fields")

        records.append(
            Record(
                data,
                base_offset + offset_delta,
                base_ts + ts_delta,
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
        return _rejected("malformed record %d: trailing bytes after last record" % count)
    return Batch(header, records)


class Record(object):
    """One record of a decoded batch: positions into the batch bytes, already bounds-checked.

    `offset` and `timestamp` are ints; `key` (bytes or None), `value` (bytes), `tags` (list of
    bytes) and `headers` (list of (name, value) bytes pairs) are sliced out when read, so a filter
    that only tests tags copies nothing but the tags.
    """

    __slots__ = (
        "data",
        "offset",
        "timestamp",
        "tag_count",
        "tags_at",
        "key_at",
        "key_len",
        "value_at",
        "value_len",
        "header_count",
        "headers_at",
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
        self.data = data
        self.offset = offset  # base_offset + the record's offset delta
        self.timestamp = timestamp  # milliseconds since the Unix epoch
        self.tag_count = tag_count
        self.tags_at = tags_at
        self.key_at = key_at
        self.key_len = key_len
        self.value_at = value_at
        self.value_len = value_len
        self.header_count = header_count
        self.headers_at = headers_at

    def has_tag(self, wanted):
        """Whether one of the record's tags is exactly these UTF-8 bytes (compared in place)."""
        data = self.data
        n = len(wanted)
        at = self.tags_at
        for _ in range(self.tag_count):
            tag_len = data[at]
            if tag_len == n and data.startswith(wanted, at + 1):
                return True
            at += 1 + tag_len
        return False

    @property
    def tags(self):
        """The tags as UTF-8 bytes, in order."""
        data = self.data
        tags = []
        at = self.tags_at
        for _ in range(self.tag_count):
            tag_len = data[at]
            tags.append(data[at + 1 : at + 1 + tag_len])
            at += 1 + tag_len
        return tags

    @property
    def key(self):
        """The key, or None when the record has none."""
        if self.key_at < 0:
            return None
        return self.data[self.key_at : self.key_at + self.key_len]

    @property
    def value(self):
        return self.data[self.value_at : self.value_at + self.value_len]

    @property
    def headers(self):
        """(name, value) pairs of UTF-8 name bytes and value bytes, in order."""
        data = self.data
        headers = []
        at = self.headers_at
        for _ in range(self.header_count):
            name_len = _U16.unpack_from(data, at)[0]
            value_start = at + 6 + name_len
            value_len = _U32.unpack_from(data, at + 2 + name_len)[0]
            headers.append(
                (data[at + 2 : at + 2 + name_len], data[value_start : value_start + value_len])
            )
            at = value_start + value_len
        return headers
