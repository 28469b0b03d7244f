/**
 * safetensors (huggingface/safetensors format): u64 little-endian header length N, N bytes of JSON
 * `{ "__metadata__": {string: string}, name: { dtype, shape, data_offsets: [begin, end] } }`, then the data
 * buffer, offsets relative to its start. The reader checks everything before it trusts a number: sizes,
 * header length, JSON shape, dtypes (F32 and F16 only), shape products against byte ranges, ranges inside
 * the buffer, no overlap and no holes. Any failure is a ServiceError 'model_invalid' (or 'too_large') that
 * says what is wrong, and nothing is returned.
 */
import { ServiceError } from '../errors.ts';
import { isRecord } from '../files.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';

export type SafetensorsDType = 'F32' | 'F16';

export interface Tensor {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Values converted to float32, row-major. */
  readonly data: Float32Array;
}

export interface SafetensorsFile {
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: ReadonlyMap<string, Tensor>;
}

export interface SafetensorsLimits {
  /** Largest file accepted, bytes. */
  readonly maxBytes: number;
  /** Largest JSON header, bytes (the reference implementation caps it at 100 MB; adapters need far less). */
  readonly maxHeaderBytes: number;
  /** Most tensors in one file (a full SD LoRA has ~800). */
  readonly maxTensors: number;
}

export const DEFAULT_SAFETENSORS_LIMITS: SafetensorsLimits = Object.freeze({
  maxBytes: 256 * 2 ** 20,
  maxHeaderBytes: 16 * 2 ** 20,
  maxTensors: 16384,
});

const BYTES_PER_ELEMENT: Record<SafetensorsDType, number> = { F32: 4, F16: 2 };
const HEADER_LENGTH_BYTES = 8;
const MAX_RANK = 8;
const ENTRY_KEYS = new Set(['dtype', 'shape', 'data_offsets']);

function invalid(label: string, message: string): ServiceError {
  return new ServiceError('model_invalid', `${label}: not a valid safetensors file: ${message}`);
}

function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and checks a whole safetensors file. `label` names the file in errors. */
export function parseSafetensors(bytes: Uint8Array, label = 'adapter', limits: SafetensorsLimits = DEFAULT_SAFETENSORS_LIMITS): SafetensorsFile {
  // 1. sizes and the header length
  if (bytes.length > limits.maxBytes) {
    throw new ServiceError('too_large', `${label}: ${bytes.length} bytes is over the limit of ${limits.maxBytes} bytes`);
  }
  if (bytes.length < HEADER_LENGTH_BYTES) throw invalid(label, `truncated: ${bytes.length} bytes, the 8-byte header length is missing`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength < 2n) throw invalid(label, `header length ${headerLength} is too small for a JSON object`);
  if (headerLength > BigInt(limits.maxHeaderBytes)) throw invalid(label, `header length ${headerLength} is over the limit of ${limits.maxHeaderBytes} bytes`);
  const dataStart = HEADER_LENGTH_BYTES + Number(headerLength);
  if (dataStart > bytes.length) throw invalid(label, `truncated: the header claims ${headerLength} bytes but the file has ${bytes.length - HEADER_LENGTH_BYTES} after the length`);
  // 2. the JSON header
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(HEADER_LENGTH_BYTES, dataStart)));
  } catch (cause) {
    throw new ServiceError('model_invalid', `${label}: not a valid safetensors file: the header is not UTF-8 JSON (${(cause as Error).message})`, { cause });
  }
  if (!isRecord(header)) throw invalid(label, 'the header is not a JSON object');
  const entries = Object.entries(header);
  if (entries.length > limits.maxTensors + 1) throw invalid(label, `${entries.length} header entries, more than the limit of ${limits.maxTensors}`);
  // 3. metadata: string -> string
  const metadata: Record<string, string> = {};
  const rawMeta = header['__metadata__'];
  if (rawMeta !== undefined) {
    if (!isRecord(rawMeta)) throw invalid(label, '__metadata__ is not an object');
    for (const [k, v] of Object.entries(rawMeta)) {
      if (typeof v !== 'string') throw invalid(label, `__metadata__.${k} is not a string`);
      metadata[k] = v;
    }
  }
  // 4. entries: dtype, shape, byte range consistent with the shape, inside the buffer
  const dataLength = bytes.length - dataStart;
  const ranges: { name: string; begin: number; end: number; dtype: SafetensorsDType; shape: number[] }[] = [];
  for (const [name, raw] of entries) {
    if (name === '__metadata__') continue;
    if (!isRecord(raw)) throw invalid(label, `tensor "${name}" is not an object`);
    const entry = raw;
    const extra = Object.keys(entry).filter((k) => !ENTRY_KEYS.has(k));
    if (extra.length > 0) throw invalid(label, `tensor "${name}" has unknown fields ${extra.join(', ')}`);
    const dtype = entry['dtype'];
    if (dtype !== 'F32' && dtype !== 'F16') throw invalid(label, `tensor "${name}" has dtype ${JSON.stringify(dtype)}; only F32 and F16 are accepted`);
    const shape = entry['shape'];
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every(isIndex)) {
      throw invalid(label, `tensor "${name}" has shape ${JSON.stringify(shape)}; expected at most ${MAX_RANK} non-negative integers`);
    }
    const offsets = entry['data_offsets'];
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      throw invalid(label, `tensor "${name}" has data_offsets ${JSON.stringify(offsets)}; expected [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw invalid(label, `tensor "${name}" has data_offsets [${begin}, ${end}] with begin after end`);
    if (end > dataLength) throw invalid(label, `tensor "${name}" ends at byte ${end} but the data buffer has ${dataLength} bytes (truncated?)`);
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = count * BYTES_PER_ELEMENT[dtype];
    if (end - begin !== expected) {
      throw invalid(label, `tensor "${name}" of shape [${shape.join(', ')}] ${dtype} needs ${expected} bytes but its range [${begin}, ${end}] has ${end - begin}`);
    }
    ranges.push({ name, begin, end, dtype, shape: shape as number[] });
  }
  // 5. ranges cover the buffer exactly: no overlap, no hole, nothing after the last tensor
  const sorted = [...ranges].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const r of sorted) {
    if (r.begin < cursor) throw invalid(label, `tensor "${r.name}" [${r.begin}, ${r.end}] overlaps the tensor before it (which ends at ${cursor})`);
    if (r.begin > cursor) throw invalid(label, `a hole of ${r.begin - cursor} bytes before tensor "${r.name}"`);
    cursor = r.end;
  }
  if (cursor !== dataLength) throw invalid(label, `${dataLength - cursor} bytes after the last tensor`);
  // 6. decode (little-endian, any alignment)
  const tensors = new Map<string, Tensor>();
  for (const r of ranges) {
    const count = (r.end - r.begin) / BYTES_PER_ELEMENT[r.dtype];
    const at = dataStart + r.begin;
    let data: Float32Array;
    if (r.dtype === 'F32') {
      data = new Float32Array(count);
      for (let i = 0; i < count; i++) data[i] = view.getFloat32(at + 4 * i, true);
    } else {
      const half = new Uint16Array(count);
      for (let i = 0; i < count; i++) half[i] = view.getUint16(at + 2 * i, true);
      data = float16ToFloat32(half);
    }
    tensors.set(r.name, { dtype: r.dtype, shape: r.shape, data });
  }
  return { metadata, tensors };
}

/** Writes float32 tensors (sorted by name) and string metadata as a safetensors file. */
export function encodeSafetensors(tensors: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  const names = [...tensors.keys()].sort();
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    header[name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + 4 * t.data.length] };
    offset += 4 * t.data.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20); // space-padded to 8
  headerBytes.set(json);
  const out = new Uint8Array(HEADER_LENGTH_BYTES + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, HEADER_LENGTH_BYTES);
  let at = HEADER_LENGTH_BYTES + headerBytes.length;
  for (const name of names) {
    for (const v of tensors.get(name)!.data) {
      view.setFloat32(at, v, true);
      at += 4;
    }
  }
  return out;
}
