// The Quiver batch format, version 1 (docs/batch-format.md), in plain JavaScript with no
// dependencies: `decodeBatch` reads the `list<u8>` the broker passes to every plugin, `encodeBatch`
// writes one (a transform's output, and the batches of the unit tests). You rarely need to edit it.
//
// All integers are little-endian. A 56-byte header, then `record_count` records back to back:
//
//   u32 body_length | u32 offset_delta | i32 timestamp_delta | u8 tag_count, tags (u8 len, bytes)
//   | u32 key_length (0xFFFFFFFF = no key), key | u32 value_length, value
//   | u16 header_count, headers (u16 name len, name, u32 value len, value)
//
// `decodeBatch` never throws on bad input: every read is bounds-checked first and a malformed batch
// comes back as `{ error: "input batch rejected: ..." }`. It does not check the CRC32C: the broker
// verified it before calling the plugin. Records are `Record` views holding positions into the
// input: keys, values, tags and headers are `subarray` views made only when asked for (no copies),
// and tags and header names stay UTF-8 bytes (the broker checked they are UTF-8), so a filter
// compares them against pre-encoded bytes without decoding a string per record.

export const HEADER_LEN = 56;
export const FLAG_SPARSE = 1;
/** Set when a record carries `quiver-deliver-at` or `quiver-delay-ms`: the broker then holds it. */
export const FLAG_DELAYED = 2;
const MAGIC = [0x51, 0x56, 0x52, 0x42]; // "QVRB"
const VERSION = 1;
const NO_KEY = 0xffffffff;
// Smallest record: body_length, offset and timestamp deltas, tag count, key length, value length
// and header count (4 + 4 + 4 + 1 + 4 + 4 + 2).
const MIN_RECORD_LEN = 23;

/** `{ error }` with the prefix the Rust SDK uses for a batch it cannot read. */
function rejected(reason) {
  return { error: `input batch rejected: ${reason}` };
}

/**
 * Decodes one encoded batch.
 *
 * @param {Uint8Array} input exactly one batch
 * @returns {{ header: object, records: Record[] } | { error: string }} each `Record` has
 *   `offset` and `timestamp` (Numbers), `hasTag(bytes)`, and the getters `tags` (Uint8Array[]),
 *   `key` (Uint8Array or null), `value` (Uint8Array) and `headers` ([Uint8Array, Uint8Array][]).
 */
export function decodeBatch(input) {
  // The component bindings hand over a Uint8Array that fails `instanceof Uint8Array` in this module
  // (apparently made in another realm), so accept any ArrayBuffer view and wrap it without copying.
  if (!ArrayBuffer.isView(input)) {
    return rejected('expected the batch as bytes (a Uint8Array)');
  }
  const bytes =
    input instanceof Uint8Array
      ? input
      : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  const len = bytes.length;
  if (len < 12) {
    return rejected(`batch truncated: need 12 bytes, have ${len}`);
  }
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== MAGIC[i]) {
      return rejected('not a Quiver batch: bad magic bytes');
    }
  }
  if (bytes[4] !== VERSION) {
    return rejected(`unsupported batch version ${bytes[4]} (this plugin reads version ${VERSION})`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const flags = bytes[5];
  if (view.getUint16(6, true) !== 0) {
    return rejected('batch header field reserved is not 0');
  }
  const length = view.getUint32(8, true);
  if (length < HEADER_LEN) {
    return rejected(`batch header field length has invalid value ${length}`);
  }
  if (len < HEADER_LEN) {
    return rejected(`batch truncated: need ${HEADER_LEN} bytes, have ${len}`);
  }
  if (length !== len) {
    return rejected(`batch header says ${length} bytes but ${len} were passed`);
  }
  if ((flags & ~(FLAG_SPARSE | FLAG_DELAYED)) !== 0) {
    return rejected(`batch header field flags has invalid value ${flags}`);
  }
  const header = {
    flags,
    length,
    baseOffset: Number(view.getBigUint64(12, true)),
    crc: view.getUint32(20, true),
    baseTimestamp: Number(view.getBigInt64(24, true)),
    maxTimestamp: Number(view.getBigInt64(32, true)),
    recordCount: view.getUint32(40, true),
    producerId: view.getBigUint64(44, true), // a BigInt: ids use all 64 bits
    baseSequence: view.getUint32(52, true),
  };
  const count = header.recordCount;
  if (count === 0) {
    return rejected('a batch must hold at least one record');
  }
  // A hostile count cannot drive work or allocation: the records must fit in the bytes.
  if (count * MIN_RECORD_LEN > length - HEADER_LEN) {
    return rejected(`batch header field record_count has invalid value ${count}`);
  }
  const sparse = (flags & FLAG_SPARSE) !== 0;
  const records = new Array(count);
  let pos = HEADER_LEN;
  let minDelta = 0;
  for (let index = 0; index < count; index++) {
    if (pos + 4 > len) return badRecord(index, 'record length runs past the batch');
    const bodyLen = view.getUint32(pos, true);
    const start = pos + 4;
    const end = start + bodyLen;
    if (end > len) return badRecord(index, 'record runs past the batch');
    if (bodyLen < 9) return badRecord(index, 'record shorter than its fixed fields');
    const offsetDelta = view.getUint32(start, true);
    const tsDelta = view.getInt32(start + 4, true);
    if (sparse ? offsetDelta < minDelta : offsetDelta !== index) {
      const reason = 'offset deltas are not dense (or, in a sparse batch, not increasing)';
      return badRecord(index, reason);
    }
    minDelta = offsetDelta + 1;
    let at = start + 8;

    const tagCount = bytes[at++];
    const tagsAt = at;
    for (let t = 0; t < tagCount; t++) {
      if (at + 1 > end || at + 1 + bytes[at] > end) {
        return badRecord(index, 'tag runs past the record');
      }
      at += 1 + bytes[at];
    }

    if (at + 4 > end) return badRecord(index, 'missing key length');
    let keyLen = view.getUint32(at, true);
    at += 4;
    const keyAt = keyLen === NO_KEY ? -1 : at;
    if (keyLen === NO_KEY) {
      keyLen = 0;
    } else if (at + keyLen > end) {
      return badRecord(index, 'key runs past the record');
    }
    at += keyLen;

    if (at + 4 > end) return badRecord(index, 'missing value length');
    const valueLen = view.getUint32(at, true);
    at += 4;
    const valueAt = at;
    if (at + valueLen > end) return badRecord(index, 'value runs past the record');
    at += valueLen;

    if (at + 2 > end) return badRecord(index, 'missing header count');
    const headerCount = view.getUint16(at, true);
    at += 2;
    const headersAt = at;
    for (let h = 0; h < headerCount; h++) {
      if (at + 6 > end) return badRecord(index, 'header runs past the record');
      const nameLen = view.getUint16(at, true);
      if (at + 6 + nameLen > end) return badRecord(index, 'header runs past the record');
      const valueStart = at + 6 + nameLen;
      const headerValueLen = view.getUint32(at + 2 + nameLen, true);
      if (valueStart + headerValueLen > end) {
        return badRecord(index, 'header value runs past the record');
      }
      at = valueStart + headerValueLen;
    }
    if (at !== end) return badRecord(index, 'record length does not match its fields');

    records[index] = new Record(
      bytes,
      header.baseOffset + offsetDelta,
      header.baseTimestamp + tsDelta,
      tagCount,
      tagsAt,
      keyAt,
      keyLen,
      valueAt,
      valueLen,
      headerCount,
      headersAt,
    );
    pos = end;
  }
  if (pos !== len) {
    return rejected(`malformed record ${count}: trailing bytes after last record`);
  }
  return { header, records };
}

function badRecord(index, reason) {
  return rejected(`malformed record ${index}: ${reason}`);
}

/**
 * One record of a decoded batch: positions into the batch bytes, already bounds-checked. Nothing is
 * copied or sliced until a field is asked for, so a filter that only tests tags (`hasTag`) creates
 * no byte arrays at all (in the component's interpreter, eager `subarray`s cost a third more).
 */
export class Record {
  constructor(
    bytes,
    offset,
    timestamp,
    tagCount,
    tagsAt,
    keyAt,
    keyLen,
    valueAt,
    valueLen,
    headerCount,
    headersAt,
  ) {
    this.bytes = bytes;
    /** Number: `base_offset` + the record's offset delta. */
    this.offset = offset;
    /** Number: milliseconds since the Unix epoch. */
    this.timestamp = timestamp;
    this.tagCount = tagCount;
    this.tagsAt = tagsAt;
    this.keyAt = keyAt;
    this.keyLen = keyLen;
    this.valueAt = valueAt;
    this.valueLen = valueLen;
    this.headerCount = headerCount;
    this.headersAt = headersAt;
  }

  /** Whether one of the record's tags is exactly these UTF-8 bytes (compared in place). */
  hasTag(wanted) {
    const bytes = this.bytes;
    const n = wanted.length;
    let at = this.tagsAt;
    for (let t = 0; t < this.tagCount; t++) {
      const len = bytes[at];
      if (len === n) {
        let i = 0;
        while (i < n && bytes[at + 1 + i] === wanted[i]) i++;
        if (i === n) return true;
      }
      at += 1 + len;
    }
    return false;
  }

  /** The tags as UTF-8 byte views. */
  get tags() {
    const tags = new Array(this.tagCount);
    let at = this.tagsAt;
    for (let t = 0; t < this.tagCount; t++) {
      const len = this.bytes[at];
      tags[t] = this.bytes.subarray(at + 1, at + 1 + len);
      at += 1 + len;
    }
    return tags;
  }

  /** The key, or `null` when the record has none. */
  get key() {
    return this.keyAt < 0 ? null : this.bytes.subarray(this.keyAt, this.keyAt + this.keyLen);
  }

  get value() {
    return this.bytes.subarray(this.valueAt, this.valueAt + this.valueLen);
  }

  /** `[name, value]` pairs of UTF-8 name bytes and value bytes, in order. */
  get headers() {
    const bytes = this.bytes;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headers = new Array(this.headerCount);
    let at = this.headersAt;
    for (let h = 0; h < this.headerCount; h++) {
      const nameLen = view.getUint16(at, true);
      const valueStart = at + 6 + nameLen;
      const valueLen = view.getUint32(at + 2 + nameLen, true);
      headers[h] = [
        bytes.subarray(at + 2, at + 2 + nameLen),
        bytes.subarray(valueStart, valueStart + valueLen),
      ];
      at = valueStart + valueLen;
    }
    return headers;
  }
}

// --- encoding ---

const utf8 = new TextEncoder();

/** A field as bytes: strings are encoded as UTF-8, byte arrays (any realm) are used as they are. */
function toBytes(v, what) {
  if (typeof v === 'string') return utf8.encode(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw `cannot encode the output batch: ${what} must be a string or a Uint8Array`;
}

/**
 * Encodes records as one batch: base offset 0 and dense offsets (the broker assigns the real ones),
 * producer id 0, CRC32C filled in. This is what a transform returns.
 *
 * Each record is `{ timestamp, value, key?, tags?, headers? }`: `timestamp` a Number (ms since the
 * epoch), `value` and `key` (`null`/absent = no key) strings or Uint8Arrays, `tags` an array of
 * strings or Uint8Arrays, `headers` an array of `[name, value]` pairs. A decoded `Record` has exactly
 * these fields, so it can be passed through as it is, or spread and changed:
 * `{ ...fields(record), value: newValue }` (see `fields`).
 *
 * No records give an empty array, which a transform returns to drop the whole batch (the format has
 * no batch of zero records). A record the format cannot hold (a tag over 255 bytes, timestamps more
 * than ±24 days apart, ...) throws a string, which from a WIT export becomes the batch's `err`.
 *
 * @param {Iterable<object>} records
 * @returns {Uint8Array}
 */
export function encodeBatch(records) {
  // First pass: every field as bytes, and the total length, so the batch is written into one buffer.
  const prepared = [];
  let length = HEADER_LEN;
  let baseTs = 0;
  let maxTs = 0;
  for (const r of records) {
    const index = prepared.length;
    const ts = r.timestamp;
    if (!Number.isSafeInteger(ts)) {
      throw `cannot encode the output batch: record ${index} has no integer timestamp`;
    }
    if (index === 0) baseTs = maxTs = ts;
    if (ts - baseTs < -0x80000000 || ts - baseTs > 0x7fffffff) {
      throw `cannot encode the output batch: record ${index} timestamp ${ts} is more than 24 days from the first record's ${baseTs}`;
    }
    if (ts > maxTs) maxTs = ts;
    const tags = Array.from(r.tags ?? [], (t) => toBytes(t, 'a tag'));
    if (tags.length > 255) throw `cannot encode the output batch: record ${index} has over 255 tags`;
    const key = r.key === undefined || r.key === null ? null : toBytes(r.key, 'the key');
    const value = toBytes(r.value, 'the value');
    const headers = Array.from(r.headers ?? [], ([n, v]) => [toBytes(n, 'a header name'), toBytes(v, 'a header value')]);
    if (headers.length > 0xffff) throw `cannot encode the output batch: record ${index} has over 65535 headers`;
    // offset delta, timestamp delta, tag count, key length, value length, header count
    let body = 4 + 4 + 1 + 4 + (key ? key.length : 0) + 4 + value.length + 2;
    for (const t of tags) {
      if (t.length > 255) throw `cannot encode the output batch: record ${index} has a tag over 255 bytes`;
      body += 1 + t.length;
    }
    for (const [n, v] of headers) {
      if (n.length > 0xffff) throw `cannot encode the output batch: record ${index} has a header name over 65535 bytes`;
      body += 2 + n.length + 4 + v.length;
    }
    prepared.push({ ts, tags, key, value, headers, body });
    length += 4 + body;
  }
  if (prepared.length === 0) return new Uint8Array(0);
  if (length > 0xffffffff) throw 'cannot encode the output batch: over 4 GiB';

  // Second pass: write it.
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  let flags = 0;
  let at = HEADER_LEN;
  const put = (bytes) => {
    out.set(bytes, at);
    at += bytes.length;
  };
  prepared.forEach((r, index) => {
    view.setUint32(at, r.body, true);
    view.setUint32(at + 4, index, true); // offset delta: dense
    view.setInt32(at + 8, r.ts - baseTs, true);
    out[at + 12] = r.tags.length;
    at += 13;
    for (const t of r.tags) {
      out[at++] = t.length;
      put(t);
    }
    view.setUint32(at, r.key ? r.key.length : NO_KEY, true);
    at += 4;
    if (r.key) put(r.key);
    view.setUint32(at, r.value.length, true);
    at += 4;
    put(r.value);
    view.setUint16(at, r.headers.length, true);
    at += 2;
    for (const [n, v] of r.headers) {
      view.setUint16(at, n.length, true);
      at += 2;
      put(n);
      view.setUint32(at, v.length, true);
      at += 4;
      put(v);
      if (isDelayHeader(n)) flags |= FLAG_DELAYED;
    }
  });

  out.set(MAGIC, 0);
  out[4] = VERSION;
  out[5] = flags;
  view.setUint32(8, length, true);
  // base_offset (12..20), producer_id (44..52) and base_sequence (52..56) stay 0.
  view.setBigInt64(24, BigInt(baseTs), true);
  view.setBigInt64(32, BigInt(maxTs), true);
  view.setUint32(40, prepared.length, true);
  view.setUint32(20, crc32c(out.subarray(24)), true);
  return out;
}

/**
 * The fields of a decoded record as a plain object that `encodeBatch` takes, to copy a record with
 * some fields changed: `encodeBatch([{ ...fields(record), value: 'new' }])`. (Spreading a `Record`
 * itself would miss its fields: they are getters.)
 */
export function fields(record) {
  return {
    timestamp: record.timestamp,
    key: record.key,
    value: record.value,
    tags: record.tags,
    headers: record.headers,
  };
}

const DELAY_HEADERS = ['quiver-deliver-at', 'quiver-delay-ms'].map((h) => utf8.encode(h));

/** Whether a header name asks the broker to hold the record (then the batch needs FLAG_DELAYED). */
function isDelayHeader(name) {
  return DELAY_HEADERS.some((h) => h.length === name.length && h.every((b, i) => b === name[i]));
}

// Built when the module loads, which for a component is at build time: the table is part of the
// snapshot componentize-js takes, so instances do not rebuild it.
const CRC_TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  CRC_TABLE[n] = c >>> 0;
}

/** CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as the broker checks it. */
export function crc32c(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
