/**
 * How large an adapter's update may be, checked before an upload is stored (kohya.ts has already refused
 * non-finite values). Each layer's dW = (alpha / r) up @ down must stay within MAX_UPDATE_RATIO times what the
 * base layer itself does:
 *
 *   |dW|_F <= MAX_UPDATE_RATIO * sqrt(r) * rms(W) * (sqrt(out) + sqrt(in))
 *
 * A weight W [out, in] whose entries have RMS s acts with a spectral norm of about s (sqrt(out) + sqrt(in)) (a
 * random matrix's largest singular value; trained layers sit near it). A rank-r update that moved the layer by c
 * times that in each of its r directions has |dW|_F = c sqrt(r) s (sqrt(out) + sqrt(in)), so the bound says: no
 * direction of the update may outweigh the layer more than MAX_UPDATE_RATIO-fold. The adapters trained here reach
 * c = 1.23 at most (0.3-0.6 on average); 16 leaves room for strong styles and refuses updates that swamp the layer
 * (up-weights of 1e37, which render black images, give c ~ 1e38).
 * |dW|_F is exact and cheap: |U D|_F^2 = sum_ij (U^T U)_ij (D D^T)_ij, two r x r Gram matrices.
 */
import { ServiceError } from '../errors.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';
import { moduleNodeTable, type KohyaAdapter, type LoraLayer, type LoraTarget } from './kohya.ts';
import { resolveTarget } from './merge.ts';
import { ONNX_FLOAT, ONNX_FLOAT16, type OnnxGraphIndex, type OnnxInitializer } from './onnx-graph.ts';

/** How many times the base layer's own scale one direction of an update may reach (see the module comment). */
export const MAX_UPDATE_RATIO = 16;

/** |(alpha / r) up @ down|_F, exactly, through r x r Gram matrices. */
export function updateNorm(layer: LoraLayer): number {
  const { rank: r, outFeatures: out, inFeatures: inn, up, down } = layer;
  let sum = 0;
  for (let i = 0; i < r; i++) {
    for (let j = i; j < r; j++) {
      let gu = 0;
      for (let o = 0; o < out; o++) gu += up[o * r + i]! * up[o * r + j]!;
      let gd = 0;
      for (let k = 0; k < inn; k++) gd += down[i * inn + k]! * down[j * inn + k]!;
      sum += (i === j ? 1 : 2) * gu * gd; // both Grams are symmetric
    }
  }
  return (Math.sqrt(Math.max(0, sum)) * Math.abs(layer.alpha)) / r;
}

/** RMS of an initializer's values, or undefined when they are not in the bytes (external data) or not float. */
function rmsOf(bytes: Uint8Array, init: OnnxInitializer): number | undefined {
  if (init.storage === 'external') return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset + init.offset, init.length);
  let values: Float32Array;
  if (init.dataType === ONNX_FLOAT) {
    values = new Float32Array(init.length / 4);
    for (let i = 0; i < values.length; i++) values[i] = view.getFloat32(4 * i, true);
  } else if (init.dataType === ONNX_FLOAT16 && init.storage === 'raw') {
    const half = new Uint16Array(init.length / 2);
    for (let i = 0; i < half.length; i++) half[i] = view.getUint16(2 * i, true);
    values = float16ToFloat32(half);
  } else return undefined;
  let sum = 0;
  for (const v of values) sum += v * v;
  return values.length > 0 ? Math.sqrt(sum / values.length) : undefined;
}

/**
 * Refuses (model_invalid, naming the layer) an adapter with a layer for `target` (default the UNet) whose update
 * exceeds the bound against that model's weights (`bytes`, `index`). Layers that match no node, or whose weights are external, are left
 * to the merge's own checks and the probe.
 */
export function checkUpdateBounds(bytes: Uint8Array, index: OnnxGraphIndex, adapter: KohyaAdapter, label: string, target: LoraTarget = 'unet'): void {
  const table = moduleNodeTable(index);
  for (const layer of adapter.layers.filter((l) => l.target === target)) {
    const resolved = resolveTarget(index, table, layer, label);
    if (!resolved) continue;
    const rms = rmsOf(bytes, resolved.initializer);
    if (rms === undefined) continue;
    const norm = updateNorm(layer);
    const limit = MAX_UPDATE_RATIO * Math.sqrt(layer.rank) * rms * (Math.sqrt(layer.outFeatures) + Math.sqrt(layer.inFeatures));
    if (!(norm <= limit)) {
      throw new ServiceError(
        'model_invalid',
        `${label}: ${layer.key} changes its layer by |dW| = ${norm.toPrecision(3)}, over the bound ${limit.toPrecision(3)} ` +
          `(${MAX_UPDATE_RATIO} x sqrt(rank ${layer.rank}) x the base weights' RMS ${rms.toPrecision(3)} x (sqrt(${layer.outFeatures}) + sqrt(${layer.inFeatures}))): ` +
          'an update this large swamps the model',
        { field: 'body' },
      );
    }
  }
}
