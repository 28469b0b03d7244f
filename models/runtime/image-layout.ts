/**
 * Images at the runtime boundary: interleaved RGB bytes [B, H, W, 3] (what codecs and video decoders give and
 * take) <-> planar floats [B, 3, H, W] in [-1, 1] (what VAEs take and give), scaling and layout in one pass.
 * The session's thread does it (a worker, in the service), so frames cross threads as bytes.
 */

/** v / 127.5 - 1 for every byte value, as the float32 a tensor stores. */
const PIXEL = Float32Array.from({ length: 256 }, (_, v) => v / 127.5 - 1);

/** RGB bytes [count, H, W, 3] -> [count, 3, H, W] in [-1, 1]. */
export function rgb8ToPlanar(rgb: Uint8Array, count: number, height: number, width: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(count * 3 * plane);
  for (let b = 0; b < count; b++) {
    const base = b * 3 * plane;
    for (let c = 0; c < 3; c++) {
      const dst = base + c * plane;
      for (let p = 0, i = base + c; p < plane; p++, i += 3) out[dst + p] = PIXEL[rgb[i]!]!;
    }
  }
  return out;
}

/** [count, 3, H, W] in [-1, 1] -> RGB bytes [count, H, W, 3], clamped and rounded (half up, as Math.round). */
export function planarToRgb8(data: Float32Array, count: number, height: number, width: number): Uint8Array {
  const plane = width * height;
  const out = new Uint8Array(count * 3 * plane);
  for (let b = 0; b < count; b++) {
    const base = b * 3 * plane;
    for (let c = 0; c < 3; c++) {
      const src = base + c * plane;
      for (let p = 0, o = base + c; p < plane; p++, o += 3) {
        const t = (data[src + p]! + 1) * 127.5;
        out[o] = t <= 0 ? 0 : t >= 255 ? 255 : (t + 0.5) | 0; // floor(t + 0.5) = Math.round(t) for t > 0
      }
    }
  }
  return out;
}
