import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeSafetensors, parseSafetensors, DEFAULT_SAFETENSORS_LIMITS } from '../../../models/adapters/safetensors.ts';
import { ServiceError } from '../../../models/errors.ts';

const tensors = new Map([
  ['a.lora_down.weight', { shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) }],
  ['a.alpha', { shape: [], data: Float32Array.of(2) }],
]);

/** A file from a raw header object and a data buffer (to build broken files on purpose). */
function raw(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function rejects(bytes: Uint8Array, pattern: RegExp, code = 'model_invalid', limits = DEFAULT_SAFETENSORS_LIMITS): void {
  assert.throws(
    () => parseSafetensors(bytes, 'adapter t', limits),
    (e: unknown) => e instanceof ServiceError && e.code === code && pattern.test(e.message) && e.message.startsWith('adapter t'),
  );
}

test('round trip: tensors, shapes and metadata survive encode + parse', () => {
  const file = parseSafetensors(encodeSafetensors(tensors, { method: 'orthogonal', column_block: '1' }));
  assert.deepEqual(file.metadata, { method: 'orthogonal', column_block: '1' });
  assert.deepEqual([...file.tensors.get('a.lora_down.weight')!.data], [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(file.tensors.get('a.lora_down.weight')!.shape, [2, 3]);
  assert.deepEqual(file.tensors.get('a.alpha')!.shape, []);
});

test('F16 tensors are converted to float32', () => {
  const data = new Uint8Array(4);
  new DataView(data.buffer).setUint16(0, 0x3c00, true); // 1.0
  new DataView(data.buffer).setUint16(2, 0xc000, true); // -2.0
  const file = parseSafetensors(raw({ h: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, data));
  assert.deepEqual([...file.tensors.get('h')!.data], [1, -2]);
});

test('truncated files: no length, header past the end, data cut short', () => {
  const good = encodeSafetensors(tensors);
  rejects(good.subarray(0, 5), /truncated: 5 bytes/);
  rejects(good.subarray(0, 20), /truncated: the header claims/);
  rejects(good.subarray(0, good.length - 4), /ends at byte 24 but the data buffer has 20 bytes|bytes after the last tensor|truncated/);
});

test('header length sanity: too small, over the limit', () => {
  rejects(raw('{}', undefined, 1n), /header length 1 is too small/);
  rejects(raw('{}', undefined, 2n ** 40n), /header length \d+ is over the limit/);
});

test('the header must be a JSON object of well-formed entries', () => {
  rejects(raw('{not json'), /header is not UTF-8 JSON/);
  rejects(raw('[1,2]'), /header is not a JSON object/);
  rejects(raw({ x: 3 }), /tensor "x" is not an object/);
  rejects(raw({ x: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)), /dtype "I64"; only F32 and F16/);
  rejects(raw({ x: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)), /shape \[-1\]/);
  rejects(raw({ x: { dtype: 'F32', shape: [1], data_offsets: [0] } }, new Uint8Array(4)), /data_offsets \[0\]/);
  rejects(raw({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4], extra: 1 } }, new Uint8Array(4)), /unknown fields extra/);
  rejects(raw({ __metadata__: { a: 1 } }), /__metadata__\.a is not a string/);
});

test('shape products must match byte ranges; ranges must not overlap, leave holes or trail', () => {
  rejects(raw({ x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /needs 12 bytes but its range \[0, 8\] has 8/);
  rejects(raw({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), /overlaps/);
  rejects(raw({ x: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)), /a hole of 4 bytes/);
  rejects(raw({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(12)), /8 bytes after the last tensor/);
  rejects(raw({ x: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, new Uint8Array(8)), /begin after end/);
});

test('files over the size limit are refused before parsing', () => {
  rejects(encodeSafetensors(tensors), /over the limit of 16 bytes/, 'too_large', { ...DEFAULT_SAFETENSORS_LIMITS, maxBytes: 16 });
});
