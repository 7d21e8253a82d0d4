// {{name}}: a Quiver router plugin. Records that carry a tag (config `tag`, default `vip`) go to the
// topic `to` (required); the others go to `rest`, or are dropped when `rest` is not set. Change
// `destinations` to pick topics from anything a record has: a record may go to several or to none.
//
// Built into a WebAssembly component for the `router` world of wit/quiver-plugin.wit by build.mjs;
// `npm test` runs {{name}}.test.mjs natively, without building.

import { log } from 'quiver:plugin/host@0.1.0';
import { decodeBatch } from './batch.js';

/** The settings of the attachment (`quiver topic attach … --config to=vip-orders`); null before init. */
let settings = null;

/** A valid topic name (1-249 characters of `A-Za-z0-9._-`, as the broker requires), or throws. */
function topicName(key, name) {
  if (!/^[A-Za-z0-9._-]{1,249}$/.test(name)) {
    throw `config \`${key}\`: ${JSON.stringify(name)} is not a topic name (1-249 characters of A-Za-z0-9._-)`;
  }
  return name;
}

/** WIT `init: func(config: list<config-entry>) -> result<_, string>`: once, before any batch. */
export function init(entries) {
  settings = null; // a refused init must not leave the previous settings running
  const config = new Map(entries.map(({ key, value }) => [key, value]));
  for (const key of config.keys()) {
    // Refused, not ignored: a typo fails the attach instead of silently doing the default.
    if (!['to', 'tag', 'rest'].includes(key)) throw `unknown config \`${key}\` ({{name}} takes: to, tag, rest)`;
  }
  // Topic names are checked here so that a typo fails the attach instead of every batch.
  if (!config.has('to')) throw 'missing required config `to` (attach with --config to=TOPIC)';
  const to = topicName('to', config.get('to'));
  const rest = config.has('rest') ? topicName('rest', config.get('rest')) : null;
  const tag = config.get('tag') ?? 'vip';
  settings = { tag, tagBytes: new TextEncoder().encode(tag), to, rest };
  log('info', `{{name}}: records tagged ${JSON.stringify(tag)} -> ${to}, others -> ${rest ?? 'dropped'}`);
}

/** The topics one record goes to (an empty list drops it). */
function destinations(record) {
  if (record.hasTag(settings.tagBytes)) return [settings.to];
  return settings.rest === null ? [] : [settings.rest];
}

/**
 * WIT `route: func(batch: list<u8>) -> result<routes, string>`. `routes` is flat: `topics` names
 * each destination once, `counts[i]` is how many topics record i goes to, and `targets` lists their
 * indexes into `topics`, record after record.
 */
export function route(batch) {
  if (settings === null) throw 'the plugin was called before a successful init';
  const decoded = decodeBatch(batch);
  if (decoded.error !== undefined) throw decoded.error; // a string: the batch fails, no trap
  const topics = [];
  const index = new Map(); // topic name -> its index in `topics`
  const counts = [];
  const targets = [];
  for (const record of decoded.records) {
    const names = new Set(destinations(record)); // a topic named twice for one record gets it once
    counts.push(names.size);
    for (const name of names) {
      if (!index.has(name)) index.set(name, topics.push(name) - 1);
      targets.push(index.get(name));
    }
  }
  return { topics, counts, targets };
}
