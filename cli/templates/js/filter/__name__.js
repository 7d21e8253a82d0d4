// {{name}}: a Quiver filter plugin. Keeps the records that carry one tag (config `tag`, default
// `vip`) and drops the rest. Change `keep` to filter on anything else a record has: its key, value,
// tags, headers or timestamp (batch.js describes a record).
//
// Built into a WebAssembly component for the `filter` world of wit/quiver-plugin.wit by build.mjs;
// `npm test` runs {{name}}.test.mjs natively, without building.

import { log } from 'quiver:plugin/host@0.1.0';
import { decodeBatch } from './batch.js';

/** The settings of the attachment (`quiver topic attach … --config tag=gold`); null before init. */
let settings = null;

/** WIT `init: func(config: list<config-entry>) -> result<_, string>`: once, before any batch. */
export function init(entries) {
  settings = null; // a refused init must not leave the previous settings running
  const config = new Map(entries.map(({ key, value }) => [key, value]));
  for (const key of config.keys()) {
    // Refused, not ignored: a typo fails the attach instead of silently doing the default.
    if (key !== 'tag') throw `unknown config \`${key}\` ({{name}} takes: tag)`;
  }
  const tag = config.get('tag') ?? 'vip';
  // Tags are compared as UTF-8 bytes in place in the batch, so encode the wanted one once here.
  settings = { tag, tagBytes: new TextEncoder().encode(tag) };
  log('info', `{{name}}: keeping records tagged ${JSON.stringify(tag)}`);
}

/** The verdict for one record: `true` keeps it. */
function keep(record) {
  return record.hasTag(settings.tagBytes);
}

/** WIT `filter: func(batch: list<u8>) -> result<list<bool>, string>`: one verdict per record. */
export function filter(batch) {
  if (settings === null) throw 'the plugin was called before a successful init';
  const decoded = decodeBatch(batch);
  if (decoded.error !== undefined) throw decoded.error; // a string: the batch fails, no trap
  return decoded.records.map(keep);
}
