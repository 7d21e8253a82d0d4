// {{name}}: a Quiver scheduler plugin. Delays each record by `delay-ms` (default 1000) before the
// broker appends it, except records that carry the tag `urgent-tag` (default `urgent`), which are
// delivered at once. Change `delay` to compute the delay from anything a record has.
//
// Built into a WebAssembly component for the `scheduler` world of wit/quiver-plugin.wit by
// build.mjs; `npm test` runs {{name}}.test.mjs natively, without building.

import { log } from 'quiver:plugin/host@0.1.0';
import { decodeBatch } from './batch.js';

/** The settings of the attachment (`quiver topic attach … --config delay-ms=60000`); null before init. */
let settings = null;

/** WIT `init: func(config: list<config-entry>) -> result<_, string>`: once, before any batch. */
export function init(entries) {
  settings = null; // a refused init must not leave the previous settings running
  const config = new Map(entries.map(({ key, value }) => [key, value]));
  for (const key of config.keys()) {
    // Refused, not ignored: a typo fails the attach instead of silently doing the default.
    if (!['delay-ms', 'urgent-tag'].includes(key)) {
      throw `unknown config \`${key}\` ({{name}} takes: delay-ms, urgent-tag)`;
    }
  }
  const text = config.get('delay-ms') ?? '1000';
  // Digits only: Number() would also take '', '1e3', '0x10' or ' 5 '. BigInt because `u64`.
  if (!/^[0-9]+$/.test(text) || BigInt(text) > 0xffffffffffffffffn) {
    throw `config \`delay-ms\`: ${JSON.stringify(text)} is not a whole number of milliseconds`;
  }
  const urgentTag = config.get('urgent-tag') ?? 'urgent';
  settings = { delayMs: BigInt(text), urgentTag: new TextEncoder().encode(urgentTag) };
  log('info', `{{name}}: delaying records by ${text} ms, except those tagged ${JSON.stringify(urgentTag)}`);
}

/** The delay of one record in milliseconds, as a BigInt (0n delivers it now). */
function delay(record) {
  return record.hasTag(settings.urgentTag) ? 0n : settings.delayMs;
}

/** WIT `schedule: func(batch: list<u8>) -> result<list<u64>, string>`: one delay per record. */
export function schedule(batch) {
  if (settings === null) throw 'the plugin was called before a successful init';
  const decoded = decodeBatch(batch);
  if (decoded.error !== undefined) throw decoded.error; // a string: the batch fails, no trap
  return BigUint64Array.from(decoded.records, delay);
}
