// Unit tests of {{name}}.js, run natively by `npm test` (node --test): no build, no wasm. Batches
// are made with the encoder in batch.js; host-stub.mjs stands in for the broker's `log`.
import assert from 'node:assert/strict';
import test from 'node:test';
import { config, logLines } from './host-stub.mjs';
import { encodeBatch } from './batch.js';

// Imported after host-stub.mjs has mapped the `quiver:plugin/host` import.
const { init, route } = await import('./{{name}}.js');

const batch = encodeBatch([
  { timestamp: 1700000000000, value: 'order 1', tags: ['vip'] },
  { timestamp: 1700000000001, value: 'order 2' },
  { timestamp: 1700000000002, value: 'order 3', tags: ['eu', 'vip'] },
]);

/** Each record's topic names, unflattened from `routes`, for readable assertions. */
function perRecord({ topics, counts, targets }) {
  let next = 0;
  return Array.from(counts, (count) => Array.from(targets.slice(next, (next += count)), (t) => topics[t]));
}

test('tagged records go to `to`, the others are dropped', () => {
  init(config({ to: 'vip-orders' }));
  assert.deepEqual(logLines(), [['info', '{{name}}: records tagged "vip" -> vip-orders, others -> dropped']]);
  const routes = route(batch);
  assert.deepEqual(perRecord(routes), [['vip-orders'], [], ['vip-orders']]);
  assert.deepEqual([...routes.topics], ['vip-orders']); // each topic named once
});

test('the others go to `rest` when it is set; the tag comes from the config', () => {
  init(config({ to: 'vip-orders', rest: 'other-orders' }));
  assert.deepEqual(perRecord(route(batch)), [['vip-orders'], ['other-orders'], ['vip-orders']]);
  init(config({ to: 'eu-orders', tag: 'eu' }));
  assert.deepEqual(perRecord(route(batch)), [[], [], ['eu-orders']]);
});

test('a missing `to`, bad topic names and unknown keys are refused', () => {
  assert.throws(() => init(config()), (e) => e === 'missing required config `to` (attach with --config to=TOPIC)');
  assert.throws(() => init(config({ to: 'no spaces' })), (e) => typeof e === 'string' && e.includes('is not a topic name'));
  assert.throws(() => init(config({ to: 'a', rest: '' })), (e) => typeof e === 'string' && e.startsWith('config `rest`'));
  assert.throws(() => init(config({ to: 'x'.repeat(250) })), (e) => typeof e === 'string' && e.includes('is not a topic name'));
  assert.throws(() => init(config({ to: 't', too: 't' })), (e) => e === 'unknown config `too` ({{name}} takes: to, tag, rest)');
  assert.throws(() => route(batch), (e) => e === 'the plugin was called before a successful init');
});

test('a malformed batch fails with a message, never an exception', () => {
  init(config({ to: 'vip-orders' }));
  assert.throws(() => route(batch.subarray(0, 70)), (e) => typeof e === 'string' && e.startsWith('input batch rejected'));
  assert.throws(() => route(new Uint8Array(0)), (e) => typeof e === 'string');
});
