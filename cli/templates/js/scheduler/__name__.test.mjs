// Unit tests of {{name}}.js, run natively by `npm test` (node --test): no build, no wasm. Batches
// are made with the encoder in batch.js; host-stub.mjs stands in for the broker's `log`.
import assert from 'node:assert/strict';
import test from 'node:test';
import { config, logLines } from './host-stub.mjs';
import { encodeBatch } from './batch.js';

// Imported after host-stub.mjs has mapped the `quiver:plugin/host` import.
const { init, schedule } = await import('./{{name}}.js');

const batch = encodeBatch([
  { timestamp: 1700000000000, value: 'reminder: pay order 1' },
  { timestamp: 1700000000001, value: 'fraud check for order 2', tags: ['urgent'] },
  { timestamp: 1700000000002, value: 'reminder: pay order 3', tags: ['later'] },
]);

test('delays records by 1000 ms, urgent ones by 0', () => {
  init(config());
  assert.deepEqual(logLines(), [['info', '{{name}}: delaying records by 1000 ms, except those tagged "urgent"']]);
  assert.deepEqual([...schedule(batch)], [1000n, 0n, 1000n]);
});

test('the delay and the urgent tag come from the config', () => {
  init(config({ 'delay-ms': '60000', 'urgent-tag': 'later' }));
  assert.deepEqual([...schedule(batch)], [60000n, 60000n, 0n]);
  init(config({ 'delay-ms': '0' }));
  assert.deepEqual([...schedule(batch)], [0n, 0n, 0n]);
});

test('a delay-ms that is not a whole number and unknown keys are refused', () => {
  for (const bad of ['', '-1', '1.5', '1e3', ' 5', 'soon', '18446744073709551616']) {
    assert.throws(
      () => init(config({ 'delay-ms': bad })),
      (e) => e === `config \`delay-ms\`: ${JSON.stringify(bad)} is not a whole number of milliseconds`,
      bad,
    );
  }
  assert.throws(() => init(config({ delay: '5' })), (e) => e === 'unknown config `delay` ({{name}} takes: delay-ms, urgent-tag)');
  assert.throws(() => schedule(batch), (e) => e === 'the plugin was called before a successful init');
});

test('a malformed batch fails with a message, never an exception', () => {
  init(config());
  assert.throws(() => schedule(batch.subarray(0, 70)), (e) => typeof e === 'string' && e.startsWith('input batch rejected'));
  assert.throws(() => schedule(new Uint8Array(0)), (e) => typeof e === 'string');
});
