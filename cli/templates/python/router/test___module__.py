"""Unit tests of {{name}}, run natively with `python3 -m unittest` (no build, no wasm).
plugin_testing (imported first) stands in for the bindings that exist only inside the component.
"""

import unittest

from plugin_testing import LOG, config, refusal  # first: installs the binding stand-ins

import {{module}} as plugin  # noqa: E402
from quiver_batch import NewRecord, encode_batch  # noqa: E402

PLUGIN = plugin.WitWorld()


def per_record(routes):
    """Routes -> the topic names of each record, to compare against."""
    names, at = [], 0
    for count in routes.counts:
        names.append([routes.topics[i] for i in routes.targets[at : at + count]])
        at += count
    return names


class RouterTest(unittest.TestCase):
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

    def test_tagged_records_go_to_the_topic_and_the_rest_is_dropped(self):
        PLUGIN.init(config({"to": "vip-orders"}))
        routes = PLUGIN.route(self.BATCH)
        self.assertEqual(per_record(routes), [["vip-orders"], [], ["vip-orders"], []])
        self.assertEqual(routes.topics, ["vip-orders"])  # each topic named once
        line = '{{name}}: records tagged "vip" -> vip-orders, others -> dropped'
        self.assertEqual(LOG, [("info", line)])

    def test_the_rest_goes_to_rest_when_set(self):
        PLUGIN.init(config({"to": "gold-orders", "tag": "gold", "rest": "other"}))
        routes = PLUGIN.route(self.BATCH)
        self.assertEqual(per_record(routes), [["other"], ["other"], ["other"], ["gold-orders"]])
        self.assertEqual(routes.topics, ["other", "gold-orders"])

    def test_bad_config_is_refused(self):
        self.assertEqual(
            refusal(PLUGIN.init, config()),
            "missing required config `to` (attach with --config to=...)",
        )
        self.assertEqual(
            refusal(PLUGIN.init, config({"to": "t", "too": "t"})),
            "unknown config `too` ({{name}} takes: to, tag, rest)",
        )
        for bad in ("", "no spaces", "x" * 250, "é"):
            self.assertIn("is not a topic name", refusal(PLUGIN.init, config({"to": bad})))
        self.assertIn("config `rest`", refusal(PLUGIN.init, config({"to": "t", "rest": "a/b"})))
        self.assertIn("before a successful init", refusal(PLUGIN.route, self.BATCH))

    def test_a_malformed_batch_is_an_error_not_a_crash(self):
        PLUGIN.init(config({"to": "vip-orders"}))
        self.assertTrue(refusal(PLUGIN.route, b"not a batch").startswith("input batch rejected"))


if __name__ == "__main__":
    unittest.main()
