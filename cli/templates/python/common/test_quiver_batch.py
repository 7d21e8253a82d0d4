"""Unit tests of quiver_batch.py, the batch codec, run natively with `python3 -m unittest`."""

import unittest

from quiver_batch import FLAG_DELAYED, NewRecord, decode_batch, encode_batch


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


if __name__ == "__main__":
    unittest.main()
