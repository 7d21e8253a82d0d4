// Unit tests of {{name}}.js, run natively by `npm test` (node --test): no build, no wasm. Batches
// are made with the encoder in batch.js; host-stub.mjs stands in for the broker's `log`.
import assert from 'node:assert/strict';
import test from 'node:test';
import { config, logLines } from './host-stub.mjs';
import { encodeBatch } from './batch.js';

// Imported after host-stub.mjs has mapped the `quiver:plugin/host` import.
const { init, filter } = await import('./{{name}}.js');

const batch = encodeBatch([
  { timestamp: 1700000000000, value: 'order 1', tags: ['vip'] },
  { timestamp: 1700000000001, value: 'order 2' },
  { timestamp: 1700000000002, value: 'order 3', tags: ['eu', 'vip'] },
  { timestamp: 1700000000003, value: 'order 4', tags: ['eu'] },
]);

test('keeps the records tagged vip by default', () => {
  init(config());
  assert.deepEqual(logLines(), [['info', '{{name}}: keeping records tagged "vip"']]);
  assert.deepEqual(filter(batch), [true, false, true, false]);
});

test('the tag comes from the config', () => {
  init(config({ tag: 'eu' }));
  assert.deepEqual(filter(batch), [false, false, true, true]);
});

test('unknown config keys are refused', () => {
  assert.throws(() => init(config({ tags: 'vip' })), (e) => e === 'unknown config `tags` ({{name}} takes: tag)');
  // and the refused init left no settings behind
  assert.throws(() => filter(batch), (e) => e === 'the plugin was called before a successful init');
});

test('a malformed batch fails with a message, never an exception', () => {
  init(config());
  assert.throws(() => filter(batch.subarray(0, 70)), (e) => typeof e === 'string' && e.startsWith('input batch rejected'));
  assert.throws(() => filter(new Uint8Array(0)), (e) => typeof e === 'string');
});
