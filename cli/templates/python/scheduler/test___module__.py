"""Unit tests of {{name}}, run natively with `python3 -m unittest` (no build, no wasm).
plugin_testing (imported first) stands in for the bindings that exist only inside the component.
"""

import json
import unittest

from plugin_testing import LOG, config, refusal  # first: installs the binding stand-ins

import {{module}} as plugin  # noqa: E402
from quiver_batch import NewRecord, encode_batch  # noqa: E402

PLUGIN = plugin.WitWorld()


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
