"""Native tests of tag-filter-py: `python3 -m unittest` in this directory (no build, no wasm).

Batches are hand-encoded here following docs/batch-format.md, CRC32C included, and checked against
bytes the Rust encoder produced (the same sample as plugins/js/tag-filter-js/test.mjs), so the
decoder is tested against the real format, not only against this encoder.

tag_filter.py imports the componentize-py bindings (`wit_world`, `componentize_py_types`), which
exist only inside the build; small stand-ins with the same names are installed in `sys.modules`
first, and the `host.log` stand-in records the log lines.
"""

import enum
import os
import random
import struct
import sys
import types
import unittest
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# --- stand-ins for the generated bindings (componentize-py -w filter bindings OUT) ---

LOG = []


def _install_binding_stubs():
    cpt = types.ModuleType("componentize_py_types")

    @dataclass(frozen=True)
    class Err(Exception):
        value: object

    cpt.Err = Err
    world = types.ModuleType("wit_world")

    class WitWorld(object):
        pass

    world.WitWorld = WitWorld
    imports = types.ModuleType("wit_world.imports")
    host = types.ModuleType("wit_world.imports.host")

    class Level(enum.Enum):
        TRACE = 0
        DEBUG = 1
        INFO = 2
        WARN = 3
        ERROR = 4

    host.Level = Level
    host.log = lambda level, message: LOG.append((level.name.lower(), message))
    host.now_ms = lambda: 0
    wit_types = types.ModuleType("wit_world.imports.types")

    @dataclass
    class ConfigEntry:
        key: str
        value: str

    wit_types.ConfigEntry = ConfigEntry
    world.imports = imports
    imports.host = host
    imports.types = wit_types
    for module in (cpt, world, imports, host, wit_types):
        sys.modules.setdefault(module.__name__, module)


_install_binding_stubs()

from componentize_py_types import Err  # noqa: E402
from wit_world.imports.types import ConfigEntry  # noqa: E402

import tag_filter  # noqa: E402
from batch import FLAG_SPARSE, HEADER_LEN, decode_batch  # noqa: E402

# --- an encoder, the mirror image of batch.py ---


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC32C (Castagnoli), reflected, as in the `crc32c` crate."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _bytes(v):
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def encode_batch(records, base_offset=0, flags=0, offsets=None):
    """Encodes dicts {timestamp, key?, value, tags?, headers?} as one batch. `offsets` (for a
    sparse batch) gives each record's offset delta; by default they are dense."""
    base_ts = records[0]["timestamp"]
    parts = []
    for index, r in enumerate(records):
        body = bytearray()
        body += struct.pack("<Ii", offsets[index] if offsets else index, r["timestamp"] - base_ts)
        tags = r.get("tags", [])
        body.append(len(tags))
        for t in tags:
            b = _bytes(t)
            body.append(len(b))
            body += b
        if r.get("key") is None:
            body += struct.pack("<I", 0xFFFFFFFF)
        else:
            k = _bytes(r["key"])
            body += struct.pack("<I", len(k)) + k
        v = _bytes(r["value"])
        body += struct.pack("<I", len(v)) + v
        headers = r.get("headers", [])
        body += struct.pack("<H", len(headers))
        for name, value in headers:
            n, hv = _bytes(name), _bytes(value)
            body += struct.pack("<H", len(n)) + n + struct.pack("<I", len(hv)) + hv
        parts.append(struct.pack("<I", len(body)) + bytes(body))
    records_bytes = b"".join(parts)
    length = HEADER_LEN + len(records_bytes)
    after_crc = struct.pack(
        "<qqIQI", base_ts, max(r["timestamp"] for r in records), len(records), 0, 0
    ) + records_bytes
    return (
        b"QVRB"
        + struct.pack("<BBHIQI", 1, flags, 0, length, base_offset, crc32c(after_crc))
        + after_crc
    )


# These three records, encoded by the Rust encoder (quiver_proto::BatchBuilder, via the hostile
# fixture in `pass` mode), are exactly these bytes.
SAMPLE = [
    {"timestamp": 1700000000000, "key": "k1", "value": "one", "tags": ["a"]},
    {"timestamp": 1700000000005, "value": "two", "tags": ["b", "c"], "headers": [("h", "v")]},
    {"timestamp": 1699999999990, "value": ""},
]
SAMPLE_HEX = (
    "51565242010000009300000000000000000000004944c8740068e5cf8b0100000568e5cf"
    "8b010000030000000000000000000000000000001a000000000000000000000001016102"
    "0000006b31030000006f6e6500002200000001000000050000000201620163ffffffff03"
    "00000074776f010001006801000000761300000002000000f6ffffff00ffffffff000000"
    "000000"
)

RECORDS = [
    {"timestamp": 1, "value": "v", "tags": tags} for tags in ([], ["a"], ["b", "c"], ["a", "b"])
]


def cfg(*pairs):
    return [ConfigEntry(k, v) for k, v in pairs]


def tags_of(batch):
    return [[t.decode() for t in r.tags] for r in decode_batch(batch).records]


PLUGIN = tag_filter.WitWorld()


def init(entries):
    return PLUGIN.init(entries)


def run_filter(batch):
    return PLUGIN.filter(batch)


class DecoderTest(unittest.TestCase):
    def test_crc32c_check_value(self):
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)

    def test_encoder_matches_rust_encoder(self):
        self.assertEqual(encode_batch(SAMPLE).hex(), SAMPLE_HEX)

    def test_reads_every_field(self):
        decoded = decode_batch(bytes.fromhex(SAMPLE_HEX))
        self.assertNotIsInstance(decoded, str)
        header = decoded.header
        self.assertEqual(header.record_count, 3)
        self.assertEqual(header.length, len(SAMPLE_HEX) // 2)
        self.assertEqual(header.base_timestamp, 1700000000000)
        self.assertEqual(header.max_timestamp, 1700000000005)
        self.assertEqual(header.crc, crc32c(bytes.fromhex(SAMPLE_HEX)[24:]))
        r0, r1, r2 = decoded.records
        self.assertEqual([r.offset for r in decoded.records], [0, 1, 2])
        self.assertEqual([r.timestamp for r in decoded.records], [r["timestamp"] for r in SAMPLE])
        self.assertEqual(r0.key, b"k1")
        self.assertIsNone(r1.key)
        self.assertEqual([r0.value, r1.value, r2.value], [b"one", b"two", b""])
        self.assertEqual(r1.headers, [(b"h", b"v")])
        self.assertEqual(r0.headers, [])
        self.assertEqual(tags_of(bytes.fromhex(SAMPLE_HEX)), [["a"], ["b", "c"], []])
        self.assertTrue(r1.has_tag(b"c"))
        self.assertFalse(r1.has_tag(b"d"))
        self.assertFalse(r1.has_tag(b""))

    def test_buffer_types_offsets_and_sparse_batches(self):
        batch = encode_batch(SAMPLE, base_offset=1000)
        padded = b"\0" * 7 + batch + b"\0" * 10
        for view in (memoryview(padded)[7 : 7 + len(batch)], bytearray(batch)):
            decoded = decode_batch(view)
            self.assertEqual([r.offset for r in decoded.records], [1000, 1001, 1002])
        sparse = encode_batch(SAMPLE, flags=FLAG_SPARSE, offsets=[0, 4, 9])
        self.assertEqual([r.offset for r in decode_batch(sparse).records], [0, 4, 9])
        unordered = encode_batch(SAMPLE, flags=FLAG_SPARSE, offsets=[0, 4, 4])
        self.assertRegex(decode_batch(unordered), "malformed record 2: offset deltas")
        not_dense = encode_batch(SAMPLE, offsets=[0, 2, 3])
        self.assertRegex(decode_batch(not_dense), "malformed record 1: offset deltas")
        # A batch with a delay header carries FLAG_DELAYED (2): a read filter sees such batches.
        delayed = encode_batch(SAMPLE, flags=2)
        self.assertEqual(len(decode_batch(delayed).records), 3)

    def test_malformed_input_is_an_error_string(self):
        good = encode_batch(SAMPLE)

        def patched(at, fmt, value):
            b = bytearray(good)
            struct.pack_into(fmt, b, at, value)
            return bytes(b)

        cases = {
            "empty": b"",
            "not bytes": "QVRB",
            "none": None,
            "magic": b"X" + good[1:],
            "version": patched(4, "<B", 2),
            "flags": patched(5, "<B", 6),
            "reserved": patched(6, "<H", 1),
            "small length": patched(8, "<I", 55),
            "trailing bytes": good + b"\0",
            "record count": patched(40, "<I", 1000000),
            "zero records": patched(40, "<I", 0),
        }
        # Every truncation: the length field then disagrees with the buffer, or the records run
        # short.
        for n in range(len(good)):
            cases["first %d bytes" % n] = good[:n]
        # A truncated batch whose length field was fixed up: only the record bounds checks can
        # catch it.
        for n in range(HEADER_LEN, len(good)):
            cut = bytearray(good[:n])
            struct.pack_into("<I", cut, 8, n)
            cases["relabelled %d bytes" % n] = bytes(cut)
        for name, data in cases.items():
            with self.subTest(name):
                decoded = decode_batch(data)
                self.assertIsInstance(decoded, str)
                self.assertTrue(decoded.startswith("input batch rejected: "), decoded)
        self.assertRegex(decode_batch(cases["magic"]), "bad magic")
        self.assertRegex(decode_batch(cases["trailing bytes"]), "header says 147 bytes but 148")
        self.assertRegex(decode_batch(cases["zero records"]), "at least one record")

    def test_a_record_longer_than_its_fields_is_refused(self):
        # One spare byte inside the record: its body_length and the batch length both count it.
        padded = bytearray(encode_batch(SAMPLE[:1]) + b"\0")
        struct.pack_into("<I", padded, 8, len(padded))
        body_len = struct.unpack_from("<I", padded, HEADER_LEN)[0]
        struct.pack_into("<I", padded, HEADER_LEN, body_len + 1)
        self.assertEqual(
            decode_batch(bytes(padded)),
            "input batch rejected: malformed record 0: record length does not match its fields",
        )

    def test_corrupted_bytes_never_raise(self):
        good = encode_batch(SAMPLE)
        rng = random.Random(42)
        for _ in range(5000):
            bad = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(HEADER_LEN, len(bad))] = rng.randrange(256)
            decoded = decode_batch(bytes(bad))
            self.assertTrue(isinstance(decoded, str) or len(decoded.records) == 3)


class FilterTest(unittest.TestCase):
    def setUp(self):
        del LOG[:]

    def assert_err(self, message, call, *args):
        with self.assertRaises(Err) as caught:
            call(*args)
        if message is not None:
            self.assertEqual(caught.exception.value, message)
        return caught.exception.value

    def test_any_of_the_tags_is_the_default(self):
        init(cfg(("tags", "a, b")))
        self.assertEqual(run_filter(encode_batch(RECORDS)), [False, True, True, True])
        init(cfg(("tags", "c"), ("mode", "any")))
        self.assertEqual(run_filter(encode_batch(RECORDS)), [False, False, True, False])

    def test_all_of_the_tags(self):
        init(cfg(("tags", "a,b"), ("mode", "all")))
        self.assertEqual(run_filter(encode_batch(RECORDS)), [False, False, False, True])

    def test_tags_compare_as_utf8_bytes(self):
        init(cfg(("tags", "été,b")))
        batch = encode_batch(
            [
                {"timestamp": 1, "value": "v", "tags": ["été"]},
                {"timestamp": 1, "value": "v", "tags": ["ete"]},
                {"timestamp": 1, "value": "v", "tags": ["ét", "étéé", "xété"]},
                {"timestamp": 1, "value": "v", "tags": ["x", "b"]},
            ]
        )
        self.assertEqual(run_filter(batch), [True, False, False, True])

    def test_the_sample_batch(self):
        init(cfg(("tags", "c")))
        self.assertEqual(run_filter(bytes.fromhex(SAMPLE_HEX)), [False, True, False])

    def test_init_refuses_bad_settings_and_forgets_the_old_ones(self):
        init(cfg(("tags", "a")))
        self.assert_err(
            "missing required config `tags` (attach with --config tags=...)", init, []
        )
        self.assert_err(
            "config `tags` is empty (attach with --config tags=...)", init, cfg(("tags", " , "))
        )
        self.assert_err(
            'config `mode` has invalid value "some": expected one of any, all',
            init,
            cfg(("tags", "a"), ("mode", "some")),
        )
        # A refused init leaves no previous configuration running.
        self.assert_err(
            "the plugin was called before a successful init", run_filter, encode_batch(RECORDS)
        )
        # A key set twice keeps its last value.
        init(cfg(("tags", "zzz"), ("tags", "a")))
        self.assertEqual(run_filter(encode_batch(RECORDS)), [False, True, False, True])

    def test_a_malformed_batch_fails_the_call_with_a_string(self):
        init(cfg(("tags", "a")))
        message = self.assert_err(None, run_filter, encode_batch(RECORDS)[:70])
        self.assertTrue(message.startswith("input batch rejected: "), message)
        self.assertIsInstance(self.assert_err(None, run_filter, b""), str)

    def test_init_logs_its_configuration_once(self):
        init(cfg(("tags", "x, é")))
        self.assertEqual(LOG, [("info", 'tag-filter-py: keeping records with any of ["x", "é"]')])
        run_filter(encode_batch(RECORDS))
        self.assertEqual(len(LOG), 1)


if __name__ == "__main__":
    unittest.main()
