// {{name}}: a Quiver transform plugin. Upper-cases each record's value when it is UTF-8 text (other
// values pass unchanged) and adds a `transformed-by` header (config `by`, default `{{name}}`). Key,
// tags, the other headers and the timestamp are kept. Change `rewrite` to emit anything else: any
// number of records per input record, or none to drop it.
//
// Built into a WebAssembly component for the `transform` world of wit/quiver-plugin.wit by
// build.mjs; `npm test` runs {{name}}.test.mjs natively, without building.

import { log } from 'quiver:plugin/host@0.1.0';
import { decodeBatch, encodeBatch, fields } from './batch.js';

/** The settings of the attachment (`quiver topic attach … --config by=me`); null before init. */
let settings = null;

// `fatal: true` makes decoding fail on invalid UTF-8 instead of inserting U+FFFD, which is how a
// binary value is told apart from text.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** WIT `init: func(config: list<config-entry>) -> result<_, string>`: once, before any batch. */
export function init(entries) {
  settings = null; // a refused init must not leave the previous settings running
  const config = new Map(entries.map(({ key, value }) => [key, value]));
  for (const key of config.keys()) {
    // Refused, not ignored: a typo fails the attach instead of silently doing the default.
    if (key !== 'by') throw `unknown config \`${key}\` ({{name}} takes: by)`;
  }
  settings = { by: config.get('by') ?? '{{name}}' };
  log('info', `{{name}}: upper-casing text values, header transformed-by=${JSON.stringify(settings.by)}`);
}

/** The replacements of one record, pushed to `out` (push nothing to drop it, several to split it). */
function rewrite(record, out) {
  let value = record.value;
  try {
    value = strictUtf8.decode(value).toUpperCase();
  } catch {
    // not UTF-8 text: the value passes unchanged
  }
  const headers = [...record.headers, ['transformed-by', settings.by]];
  out.push({ ...fields(record), value, headers });
}

/** WIT `transform: func(batch: list<u8>) -> result<list<u8>, string>`: the replacement batch. */
export function transform(batch) {
  if (settings === null) throw 'the plugin was called before a successful init';
  const decoded = decodeBatch(batch);
  if (decoded.error !== undefined) throw decoded.error; // a string: the batch fails, no trap
  const out = [];
  for (const record of decoded.records) rewrite(record, out);
  // Offsets are renumbered from 0; no records at all encode as an empty list, which drops the batch.
  return encodeBatch(out);
}
