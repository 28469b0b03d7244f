import { test } from 'node:test';
import assert from 'node:assert/strict';
import { float16ToFloat32, float32ToFloat16 } from '../../../models/runtime/float16.ts';

test('float16 conversion: exact values, rounding to nearest even, subnormals, inf and nan', () => {
  const values = Float32Array.of(0, -0, 1, -2, 0.5, 65504, 1e-7, 6.1e-5, 70000, Infinity, -Infinity, 1 + 2 ** -11, 1 + 3 * 2 ** -11);
  const half = float32ToFloat16(values);
  assert.deepEqual([...half.slice(0, 6)], [0x0000, 0x8000, 0x3c00, 0xc000, 0x3800, 0x7bff]);
  assert.equal(half[6], 0x0002); // 1e-7 ~ 1.68 * 2^-24 -> subnormal 2
  assert.equal(half[8], 0x7c00); // overflow -> inf
  assert.equal(half[11], 0x3c00); // halfway between 1 and 1+2^-10: ties to even (1)
  assert.equal(half[12], 0x3c02); // halfway between 1+2^-10 and 1+2^-9: ties to even (1+2^-9)
  const back = float16ToFloat32(half);
  assert.deepEqual([...back.slice(0, 6)], [0, -0, 1, -2, 0.5, 65504]);
  assert.equal(back[9], Infinity);
  assert.equal(back[10], -Infinity);
  assert.ok(Number.isNaN(float16ToFloat32(float32ToFloat16(Float32Array.of(NaN)))[0]));
});
