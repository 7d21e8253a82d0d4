"""Unit tests of {{name}}, run natively with `python3 -m unittest` (no build, no wasm).
plugin_testing (imported first) stands in for the bindings that exist only inside the component.
"""

import unittest

from plugin_testing import LOG, config, refusal  # first: installs the binding stand-ins

import {{module}} as plugin  # noqa: E402
from quiver_batch import NewRecord, encode_batch  # noqa: E402

PLUGIN = plugin.WitWorld()


class FilterTest(unittest.TestCase):
    BATCH = encode_batch(
        [
            NewRecord("order 1", tags=["vip"]),
            NewRecord("order 2"),
            NewRecord("order 3", tags=["eu", "vip"]),
            NewRecord("order 4", tags=["gold"]),
        ]
    )

    def setUp(self):
        del LOG[:]

    def test_keeps_the_records_with_the_tag(self):
        PLUGIN.init(config())
        self.assertEqual(PLUGIN.filter(self.BATCH), [True, False, True, False])
        PLUGIN.init(config({"tag": "gold"}))
        self.assertEqual(PLUGIN.filter(self.BATCH), [False, False, False, True])

    def test_init_logs_what_it_will_do(self):
        PLUGIN.init(config({"tag": "gold"}))
        self.assertEqual(LOG, [("info", '{{name}}: keeping records tagged "gold"')])

    def test_unknown_config_is_refused(self):
        message = refusal(PLUGIN.init, config({"tags": "gold"}))
        self.assertEqual(message, "unknown config `tags` ({{name}} takes: tag)")
        # and the previous settings are gone
        self.assertIn("before a successful init", refusal(PLUGIN.filter, self.BATCH))

    def test_a_malformed_batch_is_an_error_not_a_crash(self):
        PLUGIN.init(config())
        self.assertTrue(refusal(PLUGIN.filter, b"not a batch").startswith("input batch rejected"))
        self.assertTrue(refusal(PLUGIN.filter, self.BATCH[:-3]).startswith("input batch rejected"))


if __name__ == "__main__":
    unittest.main()
