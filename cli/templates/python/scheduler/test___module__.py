"""Unit tests of {{name}}, run natively with `python3 -m unittest` (no build, no wasm).

{{module}}.py imports componentize-py's generated bindings (`wit_world`, `componentize_py_types`),
which exist only inside the build; small stand-ins with the same names are installed first, and
the `host.log` stand-in records the log lines.
"""

import enum
import json
import os
import sys
import types
import unittest
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LOG = []  # (level, message) of every host.log call


def install_binding_stand_ins():
    """Stand-ins for the generated modules, with the same names and shapes (see the real ones with
    `componentize-py -d wit/quiver-plugin.wit -w {{world}} bindings OUT`)."""

    @dataclass(frozen=True)
    class Err(Exception):
        value: object

    @dataclass
    class ConfigEntry:
        key: str
        value: str

    @dataclass
    class Routes:
        topics: list
        counts: list
        targets: list

    class Level(enum.Enum):
        TRACE, DEBUG, INFO, WARN, ERROR = range(5)

    def module(name, **attributes):
        m = types.ModuleType(name)
        m.__dict__.update(attributes)
        sys.modules.setdefault(name, m)
        return m

    module("componentize_py_types", Err=Err)
    host = module(
        "wit_world.imports.host",
        Level=Level,
        log=lambda level, message: LOG.append((level.name.lower(), message)),
        now_ms=lambda: 1700000000000,
    )
    wit_types = module("wit_world.imports.types", ConfigEntry=ConfigEntry, Routes=Routes)
    imports = module("wit_world.imports", host=host, types=wit_types)
    module("wit_world", WitWorld=object, imports=imports)


install_binding_stand_ins()

from componentize_py_types import Err  # noqa: E402
from wit_world.imports.types import ConfigEntry  # noqa: E402

import {{module}} as plugin  # noqa: E402
from quiver_batch import FLAG_DELAYED, NewRecord, decode_batch, encode_batch  # noqa: E402

PLUGIN = plugin.WitWorld()


def config(settings=None):
    """`config({"tag": "gold"})` -> the list<config-entry> of `--config tag=gold`."""
    return [ConfigEntry(key, value) for key, value in (settings or {}).items()]


def refusal(call, *args):
    """The message of the `err` that `call` returns."""
    try:
        call(*args)
    except Err as e:
        return e.value
    raise AssertionError("expected an Err")


class BatchCodecTest(unittest.TestCase):
    def test_the_encoder_writes_what_the_rust_encoder_writes(self):
        # quiver_proto::BatchBuilder's bytes for these three records (CRC32C included).
        batch = encode_batch(
            [
                NewRecord("one", key="k1", tags=["a"], timestamp=1700000000000),
                NewRecord("two", tags=["b", "c"], headers=[("h", "v")], timestamp=1700000000005),
                NewRecord("", timestamp=1699999999990),
            ]
        )
        self.assertEqual(
            batch.hex(),
            "51565242010000009300000000000000000000004944c8740068e5cf8b0100000568e5cf"
            "8b010000030000000000000000000000000000001a000000000000000000000001016102"
            "0000006b31030000006f6e6500002200000001000000050000000201620163ffffffff03"
            "00000074776f010001006801000000761300000002000000f6ffffff00ffffffff000000"
            "000000",
        )
        records = decode_batch(batch).records
        self.assertEqual([r.value for r in records], [b"one", b"two", b""])
        self.assertEqual([r.key for r in records], [b"k1", None, None])
        self.assertEqual(records[1].tags, [b"b", b"c"])
        self.assertEqual(records[1].headers, [(b"h", b"v")])

    def test_a_delay_header_sets_the_delayed_flag(self):
        # The broker looks for delay headers only in batches flagged so (docs/delay.md).
        batch = encode_batch([NewRecord("later", headers=[("quiver-delay-ms", "500")])])
        self.assertEqual(decode_batch(batch).header.flags, FLAG_DELAYED)

    def test_malformed_batches_are_refused(self):
        good = encode_batch([NewRecord("value", tags=["vip"])])
        for bad in (b"", b"not a batch", good[:-1], good + b"\0", b"XXXX" + good[4:]):
            with self.assertRaisesRegex(ValueError, "^input batch rejected: "):
                decode_batch(bad)


class SchedulerTest(unittest.TestCase):
    BATCH = encode_batch(
        [
            NewRecord("reminder: pay order 1"),
            NewRecord("fraud check for order 2", tags=["urgent"]),
            NewRecord("reminder: pay order 3", tags=["eu"]),
        ]
    )

    def setUp(self):
        del LOG[:]

    def test_delays_all_but_urgent_records(self):
        PLUGIN.init(config())
        self.assertEqual(PLUGIN.schedule(self.BATCH), [1000, 0, 1000])
        PLUGIN.init(config({"delay-ms": "250", "urgent-tag": "eu"}))
        self.assertEqual(PLUGIN.schedule(self.BATCH), [250, 250, 0])

    def test_init_logs_what_it_will_do(self):
        PLUGIN.init(config({"delay-ms": "0"}))
        line = '{{name}}: delaying records by 0 ms, except those tagged "urgent"'
        self.assertEqual(LOG, [("info", line)])

    def test_bad_config_is_refused(self):
        for bad in ("soon", "-1", "1.5", "", " 1", "²", str(1 << 64), "9" * 5000):
            self.assertEqual(
                refusal(PLUGIN.init, config({"delay-ms": bad})),
                "config `delay-ms`: %s is not a whole number of milliseconds"
                % json.dumps(bad, ensure_ascii=False),
            )
        self.assertEqual(
            refusal(PLUGIN.init, config({"delay": "1"})),
            "unknown config `delay` ({{name}} takes: delay-ms, urgent-tag)",
        )
        self.assertIn("before a successful init", refusal(PLUGIN.schedule, self.BATCH))

    def test_a_malformed_batch_is_an_error_not_a_crash(self):
        PLUGIN.init(config())
        self.assertTrue(refusal(PLUGIN.schedule, b"not a batch").startswith("input batch rejected"))


if __name__ == "__main__":
    unittest.main()
