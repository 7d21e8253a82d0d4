// Unit tests of {{name}}.js, run natively by `npm test` (node --test): no build, no wasm. Batches
// are made with the encoder in batch.js; host-stub.mjs stands in for the broker's `log`.
import assert from 'node:assert/strict';
import test from 'node:test';
import { config, logLines } from './host-stub.mjs';
import { decodeBatch, encodeBatch } from './batch.js';

// Imported after host-stub.mjs has mapped the `quiver:plugin/host` import.
const { init, transform } = await import('./{{name}}.js');

const text = (bytes) => (bytes === null ? null : new TextDecoder().decode(bytes));

/** The records of an encoded batch as plain objects of strings, for readable assertions. */
function readBack(batch) {
  const decoded = decodeBatch(batch);
  assert.equal(decoded.error, undefined);
  return decoded.records.map((r) => ({
    offset: r.offset,
    timestamp: r.timestamp,
    key: text(r.key),
    value: r.value,
    tags: r.tags.map(text),
    headers: r.headers.map(([n, v]) => [text(n), text(v)]),
  }));
}

const binary = Uint8Array.of(0x00, 0x01, 0x02, 0xff); // not UTF-8
const batch = encodeBatch([
  { timestamp: 1700000000000, key: 'greeting', value: 'hello, quiver', tags: ['demo'] },
  { timestamp: 1700000000001, key: 'c-42', value: 'order 2: café', headers: [['trace', 'abc']] },
  { timestamp: 1700000000002, value: binary },
]);

test('upper-cases text values and adds the header, keeping everything else', () => {
  init(config());
  assert.deepEqual(logLines(), [
    ['info', '{{name}}: upper-casing text values, header transformed-by="{{name}}"'],
  ]);
  const [a, b, c] = readBack(transform(batch));
  assert.deepEqual({ ...a, value: text(a.value) }, {
    offset: 0,
    timestamp: 1700000000000,
    key: 'greeting',
    value: 'HELLO, QUIVER',
    tags: ['demo'],
    headers: [['transformed-by', '{{name}}']],
  });
  assert.equal(text(b.value), 'ORDER 2: CAFÉ');
  assert.deepEqual(b.headers, [['trace', 'abc'], ['transformed-by', '{{name}}']]);
  assert.equal(b.offset, 1);
  assert.deepEqual(c.value, binary); // binary values pass unchanged
  assert.equal(c.key, null);
});

test('the header value comes from the config', () => {
  init(config({ by: 'me' }));
  const [a] = readBack(transform(batch));
  assert.deepEqual(a.headers, [['transformed-by', 'me']]);
});

test('unknown config keys are refused', () => {
  assert.throws(() => init(config({ bye: 'me' })), (e) => e === 'unknown config `bye` ({{name}} takes: by)');
  assert.throws(() => transform(batch), (e) => e === 'the plugin was called before a successful init');
});

test('a malformed batch fails with a message, never an exception', () => {
  init(config());
  assert.throws(() => transform(batch.subarray(0, 70)), (e) => typeof e === 'string' && e.startsWith('input batch rejected'));
  assert.throws(() => transform(new Uint8Array(0)), (e) => typeof e === 'string');
});
