"""Unit tests of {{name}}, run natively with `python3 -m unittest` (no build, no wasm).
plugin_testing (imported first) stands in for the bindings that exist only inside the component.
"""

import unittest

from plugin_testing import LOG, config, refusal  # first: installs the binding stand-ins

import {{module}} as plugin  # noqa: E402
from quiver_batch import NewRecord, crc32c, decode_batch, encode_batch  # noqa: E402

PLUGIN = plugin.WitWorld()


class TransformTest(unittest.TestCase):
    def setUp(self):
        del LOG[:]

    def test_upper_cases_text_values_and_adds_the_header(self):
        PLUGIN.init(config())
        batch = encode_batch(
            [
                NewRecord("hello", key="k", tags=["demo"], timestamp=1700000000000),
                NewRecord("café", headers=[("trace", "abc")], timestamp=1700000000001),
                NewRecord(b"\x00\x01\x02\xff", timestamp=1700000000002),  # not UTF-8
            ]
        )
        encoded = PLUGIN.transform(batch)
        output = decode_batch(encoded)
        records = output.records
        self.assertEqual([r.value for r in records], [b"HELLO", "CAFÉ".encode(), b"\0\1\2\xff"])
        self.assertEqual([r.offset for r in records], [0, 1, 2])
        self.assertEqual([r.key for r in records], [b"k", None, None])
        self.assertEqual([r.tags for r in records], [[b"demo"], [], []])
        self.assertEqual([r.timestamp - 1700000000000 for r in records], [0, 1, 2])
        self.assertEqual(records[0].headers, [(b"transformed-by", b"{{name}}")])
        self.assertEqual(records[1].headers, [(b"trace", b"abc"), (b"transformed-by", b"{{name}}")])
        # a complete batch, as the broker checks it: CRC32C over bytes 24.., base offset 0
        self.assertEqual(output.header.crc, crc32c(encoded[24:]))
        self.assertEqual(output.header.base_offset, 0)

    def test_the_header_value_comes_from_the_config(self):
        PLUGIN.init(config({"by": "team-a"}))
        output = PLUGIN.transform(encode_batch([NewRecord("x")]))
        self.assertEqual(decode_batch(output).records[0].header("transformed-by"), b"team-a")
        line = '{{name}}: upper-casing values, header transformed-by: "team-a"'
        self.assertEqual(LOG, [("info", line)])

    def test_unknown_config_is_refused(self):
        message = refusal(PLUGIN.init, config({"bye": "x"}))
        self.assertEqual(message, "unknown config `bye` ({{name}} takes: by)")
        # and the previous settings are gone
        batch = encode_batch([NewRecord("x")])
        self.assertIn("before a successful init", refusal(PLUGIN.transform, batch))

    def test_a_malformed_batch_is_an_error_not_a_crash(self):
        PLUGIN.init(config())
        message = refusal(PLUGIN.transform, b"not a batch")
        self.assertTrue(message.startswith("input batch rejected"), message)


if __name__ == "__main__":
    unittest.main()
