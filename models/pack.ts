/**
 * Loads a model pack: a folder in the diffusers/optimum ONNX layout (REFERENCE §5), described by its own files.
 *   model_index.json, scheduler/scheduler_config.json, tokenizer/ + text_encoder/ (SDXL also tokenizer_2/ +
 *   text_encoder_2/, see pack-kinds.ts), unet/, vae_encoder/, vae_decoder/ (each <component>/model.onnx, weights
 *   may sit beside it as external data: model.onnx_data, weights.pb), and optionally taesd_encoder/ +
 *   taesd_decoder/ (a tiny VAE, scale factor 1) used instead of the full VAE when asked.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { indexOnnxModel } from './adapters/onnx-graph.ts';
import { nodeField, replaceGraphFields } from './adapters/onnx-rewrite.ts';
import { ClipTextEncoder, Unet, VaeDecoder, VaeEncoder } from './components.ts';
import { ServiceError } from './errors.ts';
import { exists, readJsonObject } from './files.ts';
import { OnnxModel, DEFAULT_SESSION_OPTIONS, type Provider } from './runtime/onnx.ts';
import { packDefaults, packKind, type PackDefaults, type PackKind } from './pack-kinds.ts';
import { PromptEncoder } from './prompt-encoder.ts';
import { loadClipTokenizer, type ClipTokenizer } from './tokenizer.ts';

/** The pack the service runs when no model folder is given. */
export const EMBEDDED_PACK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), 'packs', 'tiny-shapes');

/** SD 1.x/2.x VAE scaling factor, used when a pack's VAE config does not say. */
const SD_SCALING_FACTOR = 0.18215;
/** SD's UNet sample_size (64 latents = 512 pixels), used when the UNet config does not say. */
const SD_SAMPLE_SIZE = 64;

export interface PackOptions {
  readonly provider: Provider;
  /** Intra-op threads per session; 0 = onnxruntime's default. */
  readonly threads: number;
  /** Use taesd_encoder / taesd_decoder instead of the full VAE when the pack has them. */
  readonly tinyVae: boolean;
}

export const DEFAULT_PACK_OPTIONS: PackOptions = Object.freeze({ provider: 'cpu', threads: 0, tinyVae: false });

export interface ModelPack {
  readonly dir: string;
  readonly name: string;
  readonly kind: PackKind;
  readonly modelIndex: Record<string, unknown>;
  readonly schedulerConfig: Record<string, unknown>;
  /** Prompt -> conditioning, over every text tower of the pack. */
  readonly prompts: PromptEncoder;
  /** The first tower's tokenizer and text encoder (the only ones of SD 1.x/2.x packs). */
  readonly tokenizer: ClipTokenizer;
  readonly textEncoder: ClipTextEncoder;
  /** Steps and guidance for requests that leave them out (pack-kinds.ts). */
  readonly defaults: PackDefaults;
  readonly unet: Unet;
  readonly vaeEncoder: VaeEncoder | undefined;
  readonly vaeDecoder: VaeDecoder;
  /** The image size the model was trained at (width = height), from the pack's configs. */
  readonly defaultImageSize: number;
  /** Latent down-sampling factor of the VAE (8 for SD). */
  readonly vaeScale: number;
  /** Width and height must be multiples of this (VAE factor x the UNet's own down-sampling). */
  readonly sizeMultiple: number;
}

async function readOptionalJson(path: string, what: string): Promise<Record<string, unknown>> {
  return (await exists(path)) ? readJsonObject(path, what) : {};
}

/** Latent down-sampling factor of a VAE: 2 per block but the last (diffusers' vae_scale_factor), 8 for SD. */
function vaeScaleOf(config: Record<string, unknown>): number {
  const factor = config['downsample_factor'];
  if (typeof factor === 'number' && factor > 0) return factor;
  const blocks = config['block_out_channels'];
  return Array.isArray(blocks) && blocks.length > 0 ? 2 ** (blocks.length - 1) : 8;
}

export async function loadSession(dir: string, component: string, options: PackOptions): Promise<OnnxModel> {
  const path = join(dir, component, 'model.onnx');
  if (!(await exists(path))) throw new ServiceError('model_invalid', `model pack ${dir} is missing ${component}/model.onnx`);
  return OnnxModel.load(path, { ...DEFAULT_SESSION_OPTIONS, provider: options.provider, threads: options.threads, label: component });
}

/**
 * A VAE encoder that outputs a posterior draw (latent_sample, as the diffusers script and optimum < 1.23 export it)
 * has a RandomNormalLike node whose unseeded draw would make every img2img run differ. It is loaded with that node
 * replaced by Sub(x, x) (zeros of the same shape; onnxruntime refuses a RandomNormalLike of scale 0): the latent is
 * the posterior mean, as with latent_parameters, and runs are repeatable.
 */
async function loadVaeEncoder(dir: string, component: string, options: PackOptions): Promise<OnnxModel> {
  const path = join(dir, component, 'model.onnx');
  const bytes = new Uint8Array(await readFile(path));
  const index = indexOnnxModel(bytes, component);
  const draws = index.nodes.filter((n) => n.opType === 'RandomNormalLike' && n.inputs.length === 1);
  if (draws.length === 0) return loadSession(dir, component, options);
  const edits = draws.map((n) => ({ range: n.field, replacement: nodeField({ name: n.name, opType: 'Sub', inputs: [n.inputs[0]!, n.inputs[0]!], outputs: n.outputs }) }));
  const base = { ...DEFAULT_SESSION_OPTIONS, provider: options.provider, threads: options.threads, label: component };
  return OnnxModel.load(replaceGraphFields(bytes, index, edits), { ...base, externalDataDir: join(dir, component) });
}

function scalingFactor(config: Record<string, unknown>, fallback: number): number {
  const v = config['scaling_factor'];
  return typeof v === 'number' && v > 0 ? v : fallback;
}

/** Opens every session of a pack and reads its contracts. Errors name the missing or broken part. */
export async function loadPack(dir: string = EMBEDDED_PACK_DIR, options: PackOptions = DEFAULT_PACK_OPTIONS): Promise<ModelPack> {
  const root = resolve(dir);
  if (!(await exists(root))) throw new ServiceError('model_invalid', `model folder ${root} does not exist`);
  // 1. the pack describes itself
  const modelIndex = await readJsonObject(join(root, 'model_index.json'), 'model_index.json');
  const kind = packKind(modelIndex, await exists(join(root, 'text_encoder_2', 'model.onnx')));
  const schedulerConfig = await readJsonObject(join(root, 'scheduler', 'scheduler_config.json'), 'scheduler/scheduler_config.json');
  const missing = [];
  for (const folder of kind.required) if (!(await exists(join(root, folder, 'model.onnx')))) missing.push(`${folder}/model.onnx`);
  if (missing.length > 0) throw new ServiceError('model_invalid', `model pack ${root} is missing ${missing.join(', ')}`);
  const tokenizers = await Promise.all(kind.towers.map((t) => loadClipTokenizer(join(root, t.tokenizer))));
  // 2. sessions, opened together
  const useTiny = options.tinyVae && (await exists(join(root, 'taesd_decoder', 'model.onnx')));
  const encoderDir = useTiny ? 'taesd_encoder' : 'vae_encoder';
  const decoderDir = useTiny ? 'taesd_decoder' : 'vae_decoder';
  const hasEncoder = kind.optional.includes(encoderDir) && (await exists(join(root, encoderDir, 'model.onnx')));
  const [unetModel, encoderModel, decoderModel, ...textModels] = await Promise.all([
    loadSession(root, 'unet', options),
    hasEncoder ? loadVaeEncoder(root, encoderDir, options) : Promise.resolve(undefined),
    loadSession(root, decoderDir, options),
    ...kind.towers.map((t) => loadSession(root, t.encoder, options)),
  ]);
  const towers = kind.towers.map((t, i) => ({ tokenizer: tokenizers[i]!, encoder: new ClipTextEncoder(textModels[i]!, t.layer) }));
  // 3. configs: the VAE's scaling factor (a tiny VAE works on scaled latents: factor 1) and down-sampling factor
  const vaeConfig = await readOptionalJson(join(root, 'vae_decoder', 'config.json'), 'vae_decoder/config.json');
  const unetConfig = await readOptionalJson(join(root, 'unet', 'config.json'), 'unet/config.json');
  const factor = useTiny ? 1 : scalingFactor(vaeConfig, SD_SCALING_FACTOR);
  const sampleSize = typeof unetConfig['sample_size'] === 'number' ? unetConfig['sample_size'] : SD_SAMPLE_SIZE;
  const vaeScale = vaeScaleOf(vaeConfig);
  // The UNet halves the latent once per down block but the last: SD's 4 blocks need latents in multiples of 8.
  const blocks = Array.isArray(unetConfig['block_out_channels']) ? unetConfig['block_out_channels'].length : 4;
  const latentMultiple = typeof unetConfig['latent_multiple'] === 'number' ? unetConfig['latent_multiple'] : 2 ** (blocks - 1);
  const unet = new Unet(unetModel);
  const schedulerClass = typeof schedulerConfig['_class_name'] === 'string' ? schedulerConfig['_class_name'] : '';
  return {
    dir: root,
    name: typeof modelIndex['name'] === 'string' ? modelIndex['name'] : (root.split(/[\\/]/).pop() ?? 'model'),
    kind,
    modelIndex,
    schedulerConfig,
    prompts: new PromptEncoder(towers, modelIndex['force_zeros_for_empty_prompt'] === true),
    tokenizer: towers[0]!.tokenizer,
    textEncoder: towers[0]!.encoder,
    defaults: packDefaults(modelIndex, schedulerClass, unet),
    unet,
    vaeEncoder: encoderModel ? new VaeEncoder(encoderModel, factor) : undefined,
    vaeDecoder: new VaeDecoder(decoderModel, factor),
    defaultImageSize: sampleSize * vaeScale,
    vaeScale,
    sizeMultiple: vaeScale * latentMultiple,
  };
}
