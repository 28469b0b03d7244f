/**
 * Images at the runtime boundary: interleaved RGB bytes [B, H, W, 3] (what codecs and video decoders give and
 * take) <-> planar floats [B, 3, H, W] in [-1, 1] (what VAEs take and give), scaling and layout in one pass.
 * The session's thread does it (a worker, in the service), so frames cross threads as bytes.
 */

/** RGB bytes [count, H, W, 3] -> [count, 3, H, W] in [-1, 1]. */
export function rgb8ToPlanar(rgb: Uint8Array, count: number, height: number, width: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(count * 3 * plane);
  for (let b = 0; b < count; b++) {
    const src = b * 3 * plane;
    const dst = b * 3 * plane;
    for (let p = 0; p < plane; p++) {
      out[dst + p] = rgb[src + 3 * p]! / 127.5 - 1;
      out[dst + plane + p] = rgb[src + 3 * p + 1]! / 127.5 - 1;
      out[dst + 2 * plane + p] = rgb[src + 3 * p + 2]! / 127.5 - 1;
    }
  }
  return out;
}

/** [count, 3, H, W] in [-1, 1] -> RGB bytes [count, H, W, 3], clamped and rounded. */
export function planarToRgb8(data: Float32Array, count: number, height: number, width: number): Uint8Array {
  const plane = width * height;
  const out = new Uint8Array(count * 3 * plane);
  for (let b = 0; b < count; b++) {
    const base = b * 3 * plane;
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        const v = Math.round((data[base + c * plane + p]! + 1) * 127.5);
        out[base + 3 * p + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return out;
}
