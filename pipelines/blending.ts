/**
 * Prompt blending and seed blending (the Daydream/Livepeer StreamDiffusion fork's features): a stream can
 * ask for "70% cyberpunk city, 30% watercolour", or sit between two seeds, and move smoothly between them.
 */
import { cosineSimilarity } from '../models/vector.ts';
import { Generator } from './random.ts';

export interface Weighted<T> {
  readonly value: T;
  readonly weight: number;
}

export type BlendMethod = 'linear' | 'slerp';

/** Weighted mean of embeddings (weights normalised to sum 1). */
export function blendLinear(items: readonly Weighted<Float32Array>[]): Float32Array {
  const total = items.reduce((s, i) => s + i.weight, 0);
  if (!(total > 0)) throw new Error('blend weights must sum to more than 0');
  const out = new Float32Array(items[0]!.value.length);
  for (const { value, weight } of items) {
    for (let j = 0; j < out.length; j++) out[j]! += (weight / total) * value[j]!;
  }
  return out;
}

/** Spherical interpolation of two vectors at t in [0, 1]; falls back to linear when they are parallel. */
export function slerp(a: Float32Array, b: Float32Array, t: number): Float32Array {
  const cos = cosineSimilarity(a, b);
  const out = new Float32Array(a.length);
  if (Math.abs(cos) > 0.9995) {
    for (let i = 0; i < a.length; i++) out[i] = (1 - t) * a[i]! + t * b[i]!;
    return out;
  }
  const theta = Math.acos(Math.max(-1, Math.min(1, cos)));
  const wa = Math.sin((1 - t) * theta) / Math.sin(theta);
  const wb = Math.sin(t * theta) / Math.sin(theta);
  for (let i = 0; i < a.length; i++) out[i] = wa * a[i]! + wb * b[i]!;
  return out;
}

/** Slerp over a weighted list: fold left, each step moving toward the next item by its share of the weight so far. */
export function blendSlerp(items: readonly Weighted<Float32Array>[]): Float32Array {
  let acc = items[0]!.value;
  let accWeight = items[0]!.weight;
  for (const item of items.slice(1)) {
    const total = accWeight + item.weight;
    if (total > 0) acc = slerp(acc, item.value, item.weight / total);
    accWeight = total;
  }
  return acc;
}

export function blend(items: readonly Weighted<Float32Array>[], method: BlendMethod): Float32Array {
  if (items.length === 1) return items[0]!.value;
  return method === 'slerp' ? blendSlerp(items) : blendLinear(items);
}

/**
 * Initial noise for a weighted list of seeds: sum w_i n_i / sqrt(sum w_i^2), which keeps unit variance
 * (independent normals), so any blend is still a valid noise sample. `count` rows of `size` values.
 */
export function blendedNoise(seeds: readonly Weighted<number>[], count: number, size: number): Float32Array[] {
  const norm = Math.sqrt(seeds.reduce((s, x) => s + x.weight * x.weight, 0));
  if (!(norm > 0)) throw new Error('seed weights must not all be 0');
  const rows = Array.from({ length: count }, () => new Float32Array(size));
  for (const { value: seed, weight } of seeds) {
    const g = new Generator(seed);
    for (const r of rows) {
      for (let j = 0; j < size; j++) r[j]! += (weight / norm) * g.normal();
    }
  }
  return rows;
}
