// Native tests of tag-filter-js: `node test.mjs` (no build, no wasm). Batches are hand-encoded here
// following docs/batch-format.md, CRC32C included, and checked against bytes the Rust encoder
// produced, so the decoder is tested against the real format, not only against this encoder.
//
// tag-filter.js imports `quiver:plugin/host@0.1.0`, which exists only inside the component; a
// resolve hook maps it to a stub that records the log lines.
import assert from 'node:assert/strict';
import { register } from 'node:module';
import test from 'node:test';

const hostStub =
  'data:text/javascript,' +
  encodeURIComponent(
    'export function log(level, message) { (globalThis.quiverLog ??= []).push([level, message]); }\n' +
      'export function nowMs() { return BigInt(Date.now()); }\n',
  );
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier === 'quiver:plugin/host@0.1.0') return { url: ${JSON.stringify(hostStub)}, shortCircuit: true };
  return next(specifier, context);
}`;
register('data:text/javascript,' + encodeURIComponent(hooks));

const { decodeBatch, HEADER_LEN, FLAG_SPARSE } = await import('./batch.js');
const { init, filter } = await import('./tag-filter.js');

// --- an encoder, the mirror image of batch.js ---

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32C (Castagnoli), reflected, as in the `crc32c` crate. */
function crc32c(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC32C_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const utf8 = (s) => new TextEncoder().encode(s);
const bytesOf = (v) => (typeof v === 'string' ? utf8(v) : v);

/**
 * Encodes records `{ timestamp, key?, value, tags?, headers? }` as one batch. `offsets` (for a sparse
 * batch) gives each record's offset delta; by default they are dense.
 */
function encodeBatch(records, { baseOffset = 0n, flags = 0, offsets } = {}) {
  const parts = [];
  const baseTs = records[0].timestamp;
  records.forEach((r, index) => {
    const body = [];
    const u32 = (n) => {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, n, true);
      body.push(b);
    };
    const u16 = (n) => {
      const b = new Uint8Array(2);
      new DataView(b.buffer).setUint16(0, n, true);
      body.push(b);
    };
    u32(offsets ? offsets[index] : index);
    u32((r.timestamp - baseTs) >>> 0);
    const tags = r.tags ?? [];
    body.push(Uint8Array.of(tags.length));
    for (const t of tags) {
      const b = utf8(t);
      body.push(Uint8Array.of(b.length), b);
    }
    if (r.key === undefined || r.key === null) {
      u32(0xffffffff);
    } else {
      const k = bytesOf(r.key);
      u32(k.length);
      body.push(k);
    }
    const v = bytesOf(r.value);
    u32(v.length);
    body.push(v);
    const headers = r.headers ?? [];
    u16(headers.length);
    for (const [name, value] of headers) {
      const n = utf8(name);
      const hv = bytesOf(value);
      u16(n.length);
      body.push(n);
      u32(hv.length);
      body.push(hv);
    }
    const bodyLen = body.reduce((sum, b) => sum + b.length, 0);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, bodyLen, true);
    parts.push(len, ...body);
  });
  const length = HEADER_LEN + parts.reduce((sum, b) => sum + b.length, 0);
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  out.set(utf8('QVRB'), 0);
  out[4] = 1;
  out[5] = flags;
  view.setUint32(8, length, true);
  view.setBigUint64(12, BigInt(baseOffset), true);
  view.setBigInt64(24, BigInt(baseTs), true);
  view.setBigInt64(32, BigInt(Math.max(...records.map((r) => r.timestamp))), true);
  view.setUint32(40, records.length, true);
  let at = HEADER_LEN;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  view.setUint32(20, crc32c(out.subarray(24)), true);
  return out;
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const text = (bytes) => new TextDecoder().decode(bytes);

// These three records, encoded by the Rust encoder (quiver_proto::BatchBuilder, via the hostile
// fixture in `pass` mode), are exactly these bytes.
const SAMPLE = [
  { timestamp: 1700000000000, key: 'k1', value: 'one', tags: ['a'] },
  { timestamp: 1700000000005, value: 'two', tags: ['b', 'c'], headers: [['h', 'v']] },
  { timestamp: 1699999999990, value: '' },
];
const SAMPLE_HEX =
  '51565242010000009300000000000000000000004944c8740068e5cf8b0100000568e5cf' +
  '8b010000030000000000000000000000000000001a000000000000000000000001016102' +
  '0000006b31030000006f6e6500002200000001000000050000000201620163ffffffff03' +
  '00000074776f010001006801000000761300000002000000f6ffffff00ffffffff000000' +
  '000000';

/** The tags of each record, as strings, for readable assertions. */
const tagsOf = (batch) => decodeBatch(batch).records.map((r) => r.tags.map(text));

// --- the tests ---

test('crc32c matches the standard check value', () => {
  assert.equal(crc32c(utf8('123456789')), 0xe3069283);
});

test('the encoder here produces the bytes the Rust encoder produces', () => {
  assert.equal(hex(encodeBatch(SAMPLE)), SAMPLE_HEX);
});

test('decodeBatch reads every field', () => {
  const decoded = decodeBatch(Uint8Array.from(Buffer.from(SAMPLE_HEX, 'hex')));
  assert.equal(decoded.error, undefined);
  assert.equal(decoded.header.recordCount, 3);
  assert.equal(decoded.header.baseTimestamp, 1700000000000);
  assert.equal(decoded.header.maxTimestamp, 1700000000005);
  const [r0, r1, r2] = decoded.records;
  assert.deepEqual([r0.offset, r1.offset, r2.offset], [0, 1, 2]);
  assert.deepEqual([r0.timestamp, r1.timestamp, r2.timestamp], SAMPLE.map((r) => r.timestamp));
  assert.equal(text(r0.key), 'k1');
  assert.equal(r1.key, null);
  assert.deepEqual([text(r0.value), text(r1.value), r2.value.length], ['one', 'two', 0]);
  assert.deepEqual(r1.headers.map(([n, v]) => [text(n), text(v)]), [['h', 'v']]);
  assert.deepEqual(tagsOf(encodeBatch(SAMPLE)), [['a'], ['b', 'c'], []]);
});

test('decodeBatch reads a batch inside a larger buffer and a sparse batch', () => {
  const batch = encodeBatch(SAMPLE, { baseOffset: 1000n });
  const padded = new Uint8Array(batch.length + 10);
  padded.set(batch, 7);
  const decoded = decodeBatch(padded.subarray(7, 7 + batch.length));
  assert.deepEqual(decoded.records.map((r) => r.offset), [1000, 1001, 1002]);
  const sparse = encodeBatch(SAMPLE, { flags: FLAG_SPARSE, offsets: [0, 4, 9] });
  assert.deepEqual(decodeBatch(sparse).records.map((r) => r.offset), [0, 4, 9]);
  const unordered = encodeBatch(SAMPLE, { flags: FLAG_SPARSE, offsets: [0, 4, 4] });
  assert.match(decodeBatch(unordered).error, /malformed record 2: offset deltas/);
  const notDense = encodeBatch(SAMPLE, { offsets: [0, 2, 3] });
  assert.match(decodeBatch(notDense).error, /malformed record 1: offset deltas/);
  // A batch with a delay header carries FLAG_DELAYED (2): a read filter sees such batches.
  const delayed = encodeBatch(SAMPLE, { flags: 2 });
  assert.equal(decodeBatch(delayed).records.length, 3);
});

test('malformed input is an error string, never an exception', () => {
  const good = encodeBatch(SAMPLE);
  const cases = {
    empty: new Uint8Array(0),
    'not bytes': 'QVRB',
    magic: Uint8Array.from(good).fill(0x58, 0, 1),
    version: Uint8Array.from(good).fill(2, 4, 5),
    flags: Uint8Array.from(good).fill(6, 5, 6),
    'trailing bytes': Uint8Array.of(...good, 0),
  };
  // A record count that could not fit in the bytes.
  cases['record count'] = Uint8Array.from(good);
  new DataView(cases['record count'].buffer).setUint32(40, 1_000_000, true);
  // Every truncation: the length field then disagrees with the buffer, or the records run short.
  for (let n = 0; n < good.length; n++) cases[`first ${n} bytes`] = good.subarray(0, n);
  // A truncated batch whose length field was fixed up: only the record bounds checks can catch it.
  for (let n = HEADER_LEN; n < good.length; n++) {
    const cut = Uint8Array.from(good.subarray(0, n));
    new DataView(cut.buffer).setUint32(8, n, true);
    cases[`relabelled ${n} bytes`] = cut;
  }
  for (const [name, input] of Object.entries(cases)) {
    const decoded = decodeBatch(input);
    assert.equal(typeof decoded.error, 'string', name);
    assert.match(decoded.error, /^input batch rejected: /, name);
  }
  assert.match(decodeBatch(cases.magic).error, /bad magic/);
  assert.match(decodeBatch(cases['trailing bytes']).error, /header says 147 bytes but 148/);
});

test('corrupted bytes never throw', () => {
  const good = encodeBatch(SAMPLE);
  let seed = 42;
  const random = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed;
  };
  for (let i = 0; i < 5000; i++) {
    const bad = Uint8Array.from(good);
    for (let flips = 1 + (random() % 4); flips > 0; flips--) {
      bad[HEADER_LEN + (random() % (bad.length - HEADER_LEN))] = random() & 0xff;
    }
    const decoded = decodeBatch(bad);
    assert.ok(decoded.error !== undefined || decoded.records.length === 3);
  }
});

const RECORDS = [[], ['a'], ['b', 'c'], ['a', 'b']].map((tags) => ({ timestamp: 1, value: 'v', tags }));
const cfg = (pairs) => Object.entries(pairs).map(([key, value]) => ({ key, value }));

test('any of the tags (the default)', () => {
  init(cfg({ tags: 'a, b' }));
  assert.deepEqual(filter(encodeBatch(RECORDS)), [false, true, true, true]);
  init(cfg({ tags: 'c', mode: 'any' }));
  assert.deepEqual(filter(encodeBatch(RECORDS)), [false, false, true, false]);
});

test('all of the tags', () => {
  init(cfg({ tags: 'a,b', mode: 'all' }));
  assert.deepEqual(filter(encodeBatch(RECORDS)), [false, false, false, true]);
});

test('tags compare as UTF-8 bytes', () => {
  init(cfg({ tags: 'été,b' }));
  const batch = encodeBatch([
    { timestamp: 1, value: 'v', tags: ['été'] },
    { timestamp: 1, value: 'v', tags: ['ete'] },
    { timestamp: 1, value: 'v', tags: ['ét', 'étéé', 'xété'] },
    { timestamp: 1, value: 'v', tags: ['x', 'b'] },
  ]);
  assert.deepEqual(filter(batch), [true, false, false, true]);
});

test('init refuses missing, empty or unknown settings and forgets the old ones', () => {
  init(cfg({ tags: 'a' }));
  assert.throws(() => init([]), (e) => e === 'missing required config `tags` (attach with --config tags=...)');
  assert.throws(() => init(cfg({ tags: ' , ' })), (e) => e === 'config `tags` is empty (attach with --config tags=...)');
  assert.throws(
    () => init(cfg({ tags: 'a', mode: 'some' })),
    (e) => e === 'config `mode` has invalid value "some": expected one of any, all',
  );
  // A refused init leaves no previous configuration running.
  assert.throws(() => filter(encodeBatch(RECORDS)), (e) => e === 'the plugin was called before a successful init');
  // A key set twice keeps its last value.
  init([...cfg({ tags: 'zzz' }), ...cfg({ tags: 'a' })]);
  assert.deepEqual(filter(encodeBatch(RECORDS)), [false, true, false, true]);
});

test('a malformed batch fails the call with a string error', () => {
  init(cfg({ tags: 'a' }));
  const bad = encodeBatch(RECORDS).subarray(0, 70);
  assert.throws(() => filter(bad), (e) => typeof e === 'string' && e.startsWith('input batch rejected'));
  assert.throws(() => filter(new Uint8Array(0)), (e) => typeof e === 'string');
});

test('init logs its configuration once', () => {
  globalThis.quiverLog = [];
  init(cfg({ tags: 'x' }));
  assert.deepEqual(globalThis.quiverLog, [['info', 'tag-filter-js: keeping records with any of ["x"]']]);
});
