// tag-filter-js: the JavaScript twin of plugins/tag-filter. A filter plugin (world `filter` of
// wit/quiver-plugin.wit) that keeps records carrying any of the configured tags, or all of them
// with `mode=all`. Built into a WebAssembly component by componentize-js (build.mjs); the batch
// bytes are decoded by batch.js.
//
// Config: `tags=a,b` (required, non-empty), `mode=any|all` (default `any`).
//
// Binding conventions (componentize-js): `list<config-entry>` arrives as an array of
// `{ key, value }`, `list<u8>` as a Uint8Array, `list<bool>` is returned as an array of booleans.
// For a `result<T, string>` export, returning gives `ok(T)` and throwing a *string* gives
// `err(string)`; throwing an `Error` traps the instance instead, so every error below is a string.

import { log } from 'quiver:plugin/host@0.1.0';
import { decodeBatch } from './batch.js';

/** The validated configuration, set by `init`; `null` until an init succeeds. */
let state = null;

const encoder = new TextEncoder();

/** Splits a list setting on `,`, trims the items and drops empty ones (like the Rust SDK). */
function splitList(value) {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

/** Validates the attachment's settings; returns the state or an error message. */
function configure(entries) {
  // A key set twice keeps its last value, as a command line would.
  const config = new Map();
  for (const { key, value } of entries) {
    config.set(key, value);
  }
  if (!config.has('tags')) {
    return { error: 'missing required config `tags` (attach with --config tags=...)' };
  }
  const tags = splitList(config.get('tags'));
  if (tags.length === 0) {
    return { error: 'config `tags` is empty (attach with --config tags=...)' };
  }
  const mode = config.has('mode') ? config.get('mode') : 'any';
  if (mode !== 'any' && mode !== 'all') {
    return {
      error: `config \`mode\` has invalid value ${JSON.stringify(mode)}: expected one of any, all`,
    };
  }
  return { mode, tags, wanted: tags.map((t) => encoder.encode(t)) };
}

/** The verdict for one record: tags are compared as UTF-8 bytes, in place in the batch. */
function keep(config, record) {
  const wanted = config.wanted;
  if (config.mode === 'all') {
    for (let i = 0; i < wanted.length; i++) if (!record.hasTag(wanted[i])) return false;
    return true;
  }
  for (let i = 0; i < wanted.length; i++) if (record.hasTag(wanted[i])) return true;
  return false;
}

/** WIT `init: func(config: list<config-entry>) -> result<_, string>`. */
export function init(entries) {
  // A failed init must not leave a previous configuration running.
  state = null;
  const configured = configure(entries);
  if (configured.error !== undefined) {
    throw configured.error;
  }
  state = configured;
  log('info', `tag-filter-js: keeping records with ${state.mode} of ${JSON.stringify(state.tags)}`);
}

/** WIT `filter: func(batch: list<u8>) -> result<list<bool>, string>`. */
export function filter(batch) {
  if (state === null) {
    throw 'the plugin was called before a successful init';
  }
  let decoded;
  try {
    decoded = decodeBatch(batch);
  } catch (e) {
    // decodeBatch bounds-checks every read and should never throw; if it does, fail the batch with
    // a message instead of trapping the instance.
    throw `input batch rejected: ${e}`;
  }
  if (decoded.error !== undefined) {
    throw decoded.error;
  }
  const verdicts = new Array(decoded.records.length);
  for (let i = 0; i < verdicts.length; i++) {
    verdicts[i] = keep(state, decoded.records[i]);
  }
  return verdicts;
}
