// Tests of batch.js, the batch codec, run by `npm test`: checked against bytes the broker's own
// encoder (Rust, quiver_proto::BatchBuilder) writes, so both halves are tested against the real
// format and not only against each other. Nothing to change here unless you change batch.js.
import assert from 'node:assert/strict';
import test from 'node:test';
import { crc32c, decodeBatch, encodeBatch, fields, FLAG_DELAYED, HEADER_LEN } from './batch.js';

const utf8 = (s) => new TextEncoder().encode(s);
const text = (bytes) => new TextDecoder().decode(bytes);

const SAMPLE = [
  { timestamp: 1700000000000, key: 'k1', value: 'one', tags: ['a'] },
  { timestamp: 1700000000005, value: 'two', tags: ['b', 'c'], headers: [['h', 'v']] },
  { timestamp: 1699999999990, value: '' },
];
// SAMPLE as quiver_proto::BatchBuilder encodes it.
const SAMPLE_HEX =
  '51565242010000009300000000000000000000004944c8740068e5cf8b0100000568e5cf' +
  '8b010000030000000000000000000000000000001a000000000000000000000001016102' +
  '0000006b31030000006f6e6500002200000001000000050000000201620163ffffffff03' +
  '00000074776f010001006801000000761300000002000000f6ffffff00ffffffff000000' +
  '000000';

test('crc32c matches the standard check value', () => {
  assert.equal(crc32c(utf8('123456789')), 0xe3069283);
});

test('encodeBatch writes the bytes the broker writes, CRC32C included', () => {
  assert.equal(Buffer.from(encodeBatch(SAMPLE)).toString('hex'), SAMPLE_HEX);
  assert.equal(encodeBatch([]).length, 0); // no records: the empty list that drops a batch
});

test('decodeBatch reads every field, and records encode back to the same bytes', () => {
  const decoded = decodeBatch(Uint8Array.from(Buffer.from(SAMPLE_HEX, 'hex')));
  assert.equal(decoded.error, undefined);
  const [r0, r1, r2] = decoded.records;
  assert.deepEqual(decoded.records.map((r) => r.offset), [0, 1, 2]);
  assert.deepEqual(decoded.records.map((r) => r.timestamp), SAMPLE.map((r) => r.timestamp));
  assert.deepEqual([text(r0.key), r1.key], ['k1', null]);
  assert.deepEqual([text(r0.value), text(r1.value), r2.value.length], ['one', 'two', 0]);
  assert.deepEqual(decoded.records.map((r) => r.tags.map(text)), [['a'], ['b', 'c'], []]);
  assert.deepEqual(r1.headers.map(([n, v]) => [text(n), text(v)]), [['h', 'v']]);
  assert.ok(r1.hasTag(utf8('c')) && !r1.hasTag(utf8('a')));
  // Records pass through the encoder as they are, or via `fields` with a change.
  assert.equal(Buffer.from(encodeBatch(decoded.records)).toString('hex'), SAMPLE_HEX);
  const changed = decodeBatch(encodeBatch([{ ...fields(r0), value: 'uno' }])).records[0];
  assert.deepEqual([text(changed.key), text(changed.value), changed.tags.map(text)], ['k1', 'uno', ['a']]);
});

test('a delay header sets the flag that makes the broker hold the record', () => {
  const plain = encodeBatch([{ timestamp: 1, value: 'v', headers: [['quiver-delayed', '5']] }]);
  const held = encodeBatch([{ timestamp: 1, value: 'v', headers: [['quiver-delay-ms', '5']] }]);
  assert.equal(plain[5], 0);
  assert.equal(held[5], FLAG_DELAYED);
  assert.equal(decodeBatch(held).error, undefined);
});

test('what the format cannot hold is a string error', () => {
  const tooFar = [{ timestamp: 0, value: '' }, { timestamp: 30 * 86_400_000, value: '' }];
  assert.throws(() => encodeBatch(tooFar), (e) => typeof e === 'string' && e.includes('24 days'));
  assert.throws(() => encodeBatch([{ timestamp: 0, value: 5 }]), (e) => typeof e === 'string');
  assert.throws(() => encodeBatch([{ timestamp: 0, value: '', tags: ['x'.repeat(256)] }]), (e) => typeof e === 'string');
});

test('malformed or corrupted input is an error string, never an exception', () => {
  const good = encodeBatch(SAMPLE);
  const cases = [new Uint8Array(0), 'QVRB', Uint8Array.of(...good, 0)];
  for (let n = 0; n < good.length; n++) cases.push(good.subarray(0, n));
  // Truncated, with the length field fixed up: only the record bounds checks catch these.
  for (let n = HEADER_LEN; n < good.length; n++) {
    const cut = Uint8Array.from(good.subarray(0, n));
    new DataView(cut.buffer).setUint32(8, n, true);
    cases.push(cut);
  }
  for (const input of cases) {
    assert.match(decodeBatch(input).error, /^input batch rejected: /);
  }
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0);
  for (let i = 0; i < 2000; i++) {
    const bad = Uint8Array.from(good);
    bad[HEADER_LEN + (random() % (bad.length - HEADER_LEN))] = random() & 0xff;
    const decoded = decodeBatch(bad);
    assert.ok(decoded.error !== undefined || decoded.records.length === 3);
  }
});
