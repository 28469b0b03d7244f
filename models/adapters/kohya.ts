/**
 * kohya LoRA files (REFERENCE §4) and their mapping onto exported UNets and text encoders.
 *   <prefix><module path with _>.lora_down.weight  [r, in] (Linear) or [r, in, kh, kw] (Conv)
 *   <prefix><module path with _>.lora_up.weight    [out, r] or [out, r, 1, 1]
 *   <prefix><module path with _>.alpha             scalar (absent: alpha = r)
 *   dW = weight * (alpha / r) * up @ down           [out, in] (Conv: [out, in * kh * kw])
 * Prefixes: lora_unet_ (UNet), lora_te_ (the text encoder), lora_te1_ / lora_te2_ (SDXL's two encoders).
 * ONNX node names from torch / optimum follow module paths: /down_blocks.1/attentions.0/.../attn1/to_q/MatMul,
 * /text_model/encoder/layers.0/self_attn/q_proj/MatMul. Replacing "/" and "." by "_" gives
 * `<module>_MatMul | _Gemm | _Conv`, the node whose weight input gets dW. SDXL LoRAs from kohya's sd-scripts name
 * UNet modules the LDM way (input_blocks_4_1_...); ldm-names.ts maps those onto the same nodes.
 * A file may also bundle learned token embeddings for its trigger words, under AUTOMATIC1111's keys
 *   bundle_emb.<word>.string_to_param.*              [n, D] (n vectors replace the word in a prompt)
 * (Mix-of-Show's ED-LoRA and textual inversion train these; see models/adapters/concept-tokens.ts).
 */
import { ServiceError } from '../errors.ts';
import { ldmAliases } from './ldm-names.ts';
import type { OnnxGraphIndex, OnnxNode } from './onnx-graph.ts';
import type { SafetensorsFile, Tensor } from './safetensors.ts';

export const KOHYA_UNET_PREFIX = 'lora_unet_';

/** The models a kohya file can patch. */
export type LoraTarget = 'unet' | 'text_encoder' | 'text_encoder_2';
/** Key prefixes and the model each patches (lora_te_ is SD 1.x/2.x's single encoder, lora_te1_ SDXL's first). */
const PREFIXES: readonly (readonly [string, LoraTarget])[] = [
  [KOHYA_UNET_PREFIX, 'unet'],
  ['lora_te1_', 'text_encoder'],
  ['lora_te2_', 'text_encoder_2'],
  ['lora_te_', 'text_encoder'],
];
const DOWN = '.lora_down.weight';
const UP = '.lora_up.weight';
const ALPHA = '.alpha';
/** Ops whose second input is a weight an adapter can patch. */
export const PATCHABLE_OPS = ['MatMul', 'Gemm', 'Conv'] as const;

export interface LoraLayer {
  /** kohya key without suffix, e.g. lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q */
  readonly key: string;
  /** The model it patches and the module key there, without the prefix (down_blocks_1_attentions_0_...). */
  readonly target: LoraTarget;
  readonly module: string;
  readonly rank: number;
  readonly alpha: number;
  /** [r, inFlat] row-major (Conv kernels flattened in, kh, kw). */
  readonly down: Float32Array;
  /** [out, r] row-major. */
  readonly up: Float32Array;
  readonly outFeatures: number;
  /** in (Linear) or in * kh * kw (Conv). */
  readonly inFeatures: number;
  /** [kh, kw] for Conv-shaped downs, undefined for Linear. */
  readonly kernel: readonly [number, number] | undefined;
}

/** A learned embedding for a prompt word: `count` vectors of `dim` values, row-major. */
export interface BundledEmbedding {
  readonly word: string;
  readonly vectors: Float32Array;
  readonly count: number;
  readonly dim: number;
}

export interface KohyaAdapter {
  readonly layers: readonly LoraLayer[];
  /** Token embeddings bundled with the LoRA, sorted by word (none for most files). */
  readonly embeddings: readonly BundledEmbedding[];
  /** Keys that are not LoRA keys of a known model (unknown tensors): ignored. */
  readonly ignored: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
}

function bad(label: string, message: string): ServiceError {
  return new ServiceError('model_invalid', `${label}: ${message}`);
}

const BUNDLED_EMBEDDING = /^bundle_emb\.(.+)\.string_to_param\.\*$/;
/** Trigger words are single words (letters only, as the tokenizer's pre-tokenizer splits a prompt). */
export const TRIGGER_WORD = /^\p{L}{1,64}$/u;

function readEmbedding(word: string, tensor: Tensor, label: string): BundledEmbedding {
  if (!TRIGGER_WORD.test(word)) throw bad(label, `bundled embedding "${word}": the word must be letters only (1-64)`);
  const s = tensor.shape;
  if (!(s.length === 1 || s.length === 2) || s.some((d) => d === 0)) throw bad(label, `bundled embedding "${word}" has shape [${s.join(', ')}]; expected [n, dim] or [dim]`);
  if (!tensor.data.every(Number.isFinite)) throw bad(label, `bundled embedding "${word}" has non-finite values`);
  const dim = s[s.length - 1]!;
  return { word: word.toLowerCase(), vectors: tensor.data, count: tensor.data.length / dim, dim };
}

/** Groups a safetensors file into LoRA layers (checking that down, up and alpha agree) and bundled embeddings. */
export function readKohyaAdapter(file: SafetensorsFile, label = 'adapter'): KohyaAdapter {
  const groups = new Map<string, { down?: Tensor; up?: Tensor; alpha?: Tensor }>();
  const ignored: string[] = [];
  const embeddings: BundledEmbedding[] = [];
  for (const [name, tensor] of file.tensors) {
    const bundled = BUNDLED_EMBEDDING.exec(name);
    if (bundled) {
      embeddings.push(readEmbedding(bundled[1]!, tensor, label));
      continue;
    }
    const suffix = [DOWN, UP, ALPHA].find((s) => name.endsWith(s));
    if (!PREFIXES.some(([p]) => name.startsWith(p)) || !suffix) {
      ignored.push(name);
      continue;
    }
    const key = name.slice(0, -suffix.length);
    const g = groups.get(key) ?? {};
    if (suffix === DOWN) g.down = tensor;
    else if (suffix === UP) g.up = tensor;
    else g.alpha = tensor;
    groups.set(key, g);
  }
  const layers: LoraLayer[] = [];
  for (const [key, g] of groups) {
    if (!g.down || !g.up) throw bad(label, `${key} has ${g.down ? 'no lora_up.weight' : 'no lora_down.weight'}`);
    const ds = g.down.shape;
    const us = g.up.shape;
    const conv = ds.length === 4;
    if (!(ds.length === 2 || conv)) throw bad(label, `${key}.lora_down.weight has shape [${ds.join(', ')}]; expected [r, in] or [r, in, kh, kw]`);
    const upOk = conv ? us.length === 4 && us[2] === 1 && us[3] === 1 : us.length === 2;
    if (!upOk) throw bad(label, `${key}.lora_up.weight has shape [${us.join(', ')}]; expected ${conv ? '[out, r, 1, 1]' : '[out, r]'}`);
    const rank = ds[0]!;
    if (rank === 0 || us[1] !== rank) throw bad(label, `${key}: lora_down rank ${rank} and lora_up rank ${us[1]} differ`);
    if (g.alpha && g.alpha.data.length !== 1) throw bad(label, `${key}.alpha is not a scalar`);
    const alpha = g.alpha ? g.alpha.data[0]! : rank;
    if (!Number.isFinite(alpha)) throw bad(label, `${key}.alpha is not finite`);
    for (const [what, t] of [['lora_down', g.down], ['lora_up', g.up]] as const) {
      if (!t.data.every(Number.isFinite)) throw bad(label, `${key}.${what}.weight has non-finite values`);
    }
    const [prefix, target] = PREFIXES.find(([p]) => key.startsWith(p))!;
    layers.push({
      key,
      target,
      module: key.slice(prefix.length),
      rank,
      alpha,
      down: g.down.data,
      up: g.up.data,
      outFeatures: us[0]!,
      inFeatures: g.down.data.length / rank,
      kernel: conv ? [ds[2]!, ds[3]!] : undefined,
    });
  }
  if (layers.length === 0) throw bad(label, 'no LoRA weights (lora_unet_* / lora_te_* .lora_down.weight and .lora_up.weight)');
  layers.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  embeddings.sort((a, b) => (a.word < b.word ? -1 : a.word > b.word ? 1 : 0));
  for (let i = 1; i < embeddings.length; i++) {
    if (embeddings[i]!.word === embeddings[i - 1]!.word) throw bad(label, `two bundled embeddings for the word "${embeddings[i]!.word}"`);
  }
  return { layers, embeddings, ignored, metadata: file.metadata };
}

/** The module path of a patchable node ("/a.0/b/MatMul" -> "a.0.b"), or undefined for other ops. */
export function modulePathOfNode(node: Pick<OnnxNode, 'name' | 'opType'>): string | undefined {
  if (!(PATCHABLE_OPS as readonly string[]).includes(node.opType)) return undefined;
  const suffix = `/${node.opType}`;
  if (!node.name.endsWith(suffix)) return undefined;
  return node.name.slice(0, -suffix.length).replace(/^\//, '').replace(/\//g, '.');
}

/** kohya key of an ONNX UNet node ("/a.0/b/MatMul" -> "lora_unet_a_0_b"), or undefined for other ops. */
export function kohyaKeyOfNode(node: Pick<OnnxNode, 'name' | 'opType'>): string | undefined {
  const path = modulePathOfNode(node);
  return path === undefined ? undefined : kohyaKeyOfModule(path);
}

/**
 * Every patchable node of a graph by its module key (module path with "_"); a UNet's nodes also under their LDM
 * names (input_blocks_4_1_...), derived from the blocks the graph has.
 */
export function moduleNodeTable(index: OnnxGraphIndex): Map<string, OnnxNode> {
  const table = new Map<string, OnnxNode>();
  const paths = new Map<string, OnnxNode>();
  for (const node of index.nodes) {
    const path = modulePathOfNode(node);
    if (path === undefined || paths.has(path)) continue;
    paths.set(path, node);
    table.set(path.replace(/\./g, '_'), node);
  }
  for (const [alias, path] of ldmAliases([...paths.keys()])) {
    if (!table.has(alias)) table.set(alias, paths.get(path)!);
  }
  return table;
}

/** Every patchable node of a UNet graph by its kohya key (lora_unet_...). */
export function kohyaNodeTable(index: OnnxGraphIndex): Map<string, OnnxNode> {
  return new Map([...moduleNodeTable(index)].map(([module, node]) => [KOHYA_UNET_PREFIX + module, node] as const));
}

/** The kohya key of a torch module path ("down_blocks.1.attentions.0.proj_in" -> "lora_unet_down_blocks_1_attentions_0_proj_in"). */
export function kohyaKeyOfModule(path: string): string {
  return KOHYA_UNET_PREFIX + path.replace(/\./g, '_');
}
