/**
 * Loads a model pack: a folder in the diffusers/optimum ONNX layout (REFERENCE §5), described by its own files.
 *   model_index.json, scheduler/scheduler_config.json, tokenizer/, text_encoder/, unet/, vae_encoder/,
 *   vae_decoder/ (each <component>/model.onnx, weights may sit beside it as external data), and optionally
 *   taesd_encoder/ + taesd_decoder/ (a tiny VAE, scale factor 1) used instead of the full VAE when asked.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClipTextEncoder, Unet, VaeDecoder, VaeEncoder } from './components.ts';
import { ServiceError } from './errors.ts';
import { exists, readJsonObject } from './files.ts';
import { OnnxModel, DEFAULT_SESSION_OPTIONS, type Provider } from './runtime/onnx.ts';
import { packDefaults, packKind, type PackDefaults, type PackKind } from './pack-kinds.ts';
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
  readonly tokenizer: ClipTokenizer;
  readonly textEncoder: ClipTextEncoder;
  readonly unet: Unet;
  readonly vaeEncoder: VaeEncoder | undefined;
  readonly vaeDecoder: VaeDecoder;
  /** The image size the model was trained at (width = height), from the pack's configs. */
  readonly defaultImageSize: number;
  /** Latent down-sampling factor of the VAE (8 for SD). */
  readonly vaeScale: number;
  /** Width and height must be multiples of this (VAE factor x the UNet's own down-sampling). */
  readonly sizeMultiple: number;
  /** The ranges of guidance scale and image size the model renders well in (pack-kinds.ts). */
  readonly defaults: PackDefaults;
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
  const kind = packKind(modelIndex);
  const schedulerConfig = await readJsonObject(join(root, 'scheduler', 'scheduler_config.json'), 'scheduler/scheduler_config.json');
  const tokenizer = await loadClipTokenizer(join(root, 'tokenizer'));
  const missing = [];
  for (const folder of kind.required) if (!(await exists(join(root, folder, 'model.onnx')))) missing.push(`${folder}/model.onnx`);
  if (missing.length > 0) throw new ServiceError('model_invalid', `model pack ${root} is missing ${missing.join(', ')}`);
  // 2. sessions, opened together
  const useTiny = options.tinyVae && (await exists(join(root, 'taesd_decoder', 'model.onnx')));
  const encoderDir = useTiny ? 'taesd_encoder' : 'vae_encoder';
  const decoderDir = useTiny ? 'taesd_decoder' : 'vae_decoder';
  const hasEncoder = kind.optional.includes(encoderDir) && (await exists(join(root, encoderDir, 'model.onnx')));
  const [textModel, unetModel, encoderModel, decoderModel] = await Promise.all([
    loadSession(root, 'text_encoder', options),
    loadSession(root, 'unet', options),
    hasEncoder ? loadSession(root, encoderDir, options) : Promise.resolve(undefined),
    loadSession(root, decoderDir, options),
  ]);
  // 3. configs: the VAE's scaling factor (a tiny VAE works on scaled latents: factor 1) and down-sampling factor
  const vaeConfig = await readOptionalJson(join(root, 'vae_decoder', 'config.json'), 'vae_decoder/config.json');
  const unetConfig = await readOptionalJson(join(root, 'unet', 'config.json'), 'unet/config.json');
  const factor = useTiny ? 1 : scalingFactor(vaeConfig, SD_SCALING_FACTOR);
  const sampleSize = typeof unetConfig['sample_size'] === 'number' ? unetConfig['sample_size'] : SD_SAMPLE_SIZE;
  const vaeScale = vaeScaleOf(vaeConfig);
  // The UNet halves the latent once per down block but the last: SD's 4 blocks need latents in multiples of 8.
  const blocks = Array.isArray(unetConfig['block_out_channels']) ? unetConfig['block_out_channels'].length : 4;
  const latentMultiple = typeof unetConfig['latent_multiple'] === 'number' ? unetConfig['latent_multiple'] : 2 ** (blocks - 1);
  return {
    dir: root,
    name: typeof modelIndex['name'] === 'string' ? modelIndex['name'] : (root.split(/[\\/]/).pop() ?? 'model'),
    kind,
    modelIndex,
    schedulerConfig,
    tokenizer,
    textEncoder: new ClipTextEncoder(textModel),
    unet: new Unet(unetModel),
    vaeEncoder: encoderModel ? new VaeEncoder(encoderModel, factor) : undefined,
    vaeDecoder: new VaeDecoder(decoderModel, factor),
    defaultImageSize: sampleSize * vaeScale,
    vaeScale,
    sizeMultiple: vaeScale * latentMultiple,
    defaults: packDefaults(modelIndex, sampleSize * vaeScale),
  };
}
