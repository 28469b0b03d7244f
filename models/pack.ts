/**
 * Loads a model pack: a folder in the diffusers/optimum ONNX layout (REFERENCE §5), described by its own files.
 *   model_index.json, scheduler/scheduler_config.json, tokenizer/ + text_encoder/ (SDXL also tokenizer_2/ +
 *   text_encoder_2/, see pack-kinds.ts), unet/, vae_encoder/, vae_decoder/ (each <component>/model.onnx, weights
 *   may sit beside it as external data: model.onnx_data, weights.pb), and optionally
 *   taesd_encoder/ + taesd_decoder/ (a tiny VAE on scaled latents, scale factor 1), loaded beside the full VAE:
 *   each request chooses one (pipelines/plan.ts). Sessions live where models/sessions.ts places them.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { indexOnnxModel } from './adapters/onnx-graph.ts';
import { nodeField, replaceGraphFields } from './adapters/onnx-rewrite.ts';
import { ClipTextEncoder, Unet, VaeDecoder, VaeEncoder } from './components.ts';
import { ServiceError } from './errors.ts';
import { exists, readJsonObject } from './files.ts';
import type { Model, Provider } from './runtime/contract.ts';
import { packDefaults, packKind, type ComponentFolder, type PackDefaults, type PackKind } from './pack-kinds.ts';
import { PromptEncoder } from './prompt-encoder.ts';
import { ModelSessions, type Role } from './sessions.ts';
import { loadClipTokenizer, type ClipTokenizer } from './tokenizer.ts';

/** The pack the service runs when no model folder is given. */
export const EMBEDDED_PACK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), 'packs', 'tiny-shapes');

/** SD 1.x/2.x VAE scaling factor, used when a pack's VAE config does not say. */
const SD_SCALING_FACTOR = 0.18215;
/** SD's UNet sample_size (64 latents = 512 pixels), used when the UNet config does not say. */
const SD_SAMPLE_SIZE = 64;

export interface PackOptions {
  readonly provider: Provider;
  /** Intra-op threads per session; 0 = chosen per stage from the cores (models/sessions.ts). */
  readonly threads: number;
  /** Worker threads holding the sessions: undefined = the process's shared pool, 0 = none (the calling thread). */
  readonly workers?: number | undefined;
}

export const DEFAULT_PACK_OPTIONS: PackOptions = Object.freeze({ provider: 'cpu', threads: 0 });

/** A VAE: its encoder (absent in txt2img-only packs) and decoder, on the same latent scale. */
export interface Vae {
  readonly encoder: VaeEncoder | undefined;
  readonly decoder: VaeDecoder;
}

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
  readonly unet: Unet;
  /** The full VAE. */
  readonly vaeEncoder: VaeEncoder | undefined;
  readonly vaeDecoder: VaeDecoder;
  /** The tiny VAE (taesd_*) when the pack has one: a few times cheaper, slightly softer. */
  readonly tinyVae: Vae | undefined;
  /** Where the sessions live; opens the pack's experts and merged UNets too. close() releases them all. */
  readonly sessions: ModelSessions;
  /** The image size the model was trained at (width = height), from the pack's configs. */
  readonly defaultImageSize: number;
  /** Latent down-sampling factor of the VAE (8 for SD). */
  readonly vaeScale: number;
  /** Width and height must be multiples of this (VAE factor x the UNet's own down-sampling). */
  readonly sizeMultiple: number;
  /**
   * The ranges of guidance scale and image size the model renders well in, and steps and guidance for requests
   * that leave them out (pack-kinds.ts).
   */
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

/** The stage each component folder is placed by. */
const ROLE: Record<ComponentFolder, Role> = {
  text_encoder: 'text_encoder',
  text_encoder_2: 'text_encoder',
  unet: 'unet',
  vae_encoder: 'vae_encoder',
  taesd_encoder: 'vae_encoder',
  vae_decoder: 'vae_decoder',
  taesd_decoder: 'vae_decoder',
};

async function loadSession(sessions: ModelSessions, dir: string, component: ComponentFolder): Promise<Model> {
  const path = join(dir, component, 'model.onnx');
  if (!(await exists(path))) throw new ServiceError('model_invalid', `model pack ${dir} is missing ${component}/model.onnx`);
  return sessions.open(path, ROLE[component], component);
}

/**
 * A VAE encoder that outputs a posterior draw (latent_sample, as the diffusers script and optimum < 1.23 export it)
 * has a RandomNormalLike node whose unseeded draw would make every img2img run differ. It is loaded with that node
 * replaced by Sub(x, x) (zeros of the same shape; onnxruntime refuses a RandomNormalLike of scale 0): the latent is
 * the posterior mean, as with latent_parameters, and runs are repeatable.
 */
async function loadVaeEncoder(sessions: ModelSessions, dir: string, component: 'vae_encoder' | 'taesd_encoder'): Promise<Model> {
  const path = join(dir, component, 'model.onnx');
  const bytes = new Uint8Array(await readFile(path));
  const index = indexOnnxModel(bytes, component);
  const draws = index.nodes.filter((n) => n.opType === 'RandomNormalLike' && n.inputs.length === 1);
  if (draws.length === 0) return loadSession(sessions, dir, component);
  const edits = draws.map((n) => ({ range: n.field, replacement: nodeField({ name: n.name, opType: 'Sub', inputs: [n.inputs[0]!, n.inputs[0]!], outputs: n.outputs }) }));
  return sessions.open(replaceGraphFields(bytes, index, edits), ROLE[component], component, join(dir, component));
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
  // 2. sessions, opened together: the full VAE, and the tiny one beside it when the pack has both of its parts
  const sessions = new ModelSessions(options);
  const has = async (folder: ComponentFolder) => kind.optional.includes(folder) && (await exists(join(root, folder, 'model.onnx')));
  const [hasEncoder, hasTiny, hasTinyEncoder] = await Promise.all([has('vae_encoder'), has('taesd_decoder'), has('taesd_encoder')]);
  const optional = (present: boolean, folder: ComponentFolder) => (present ? loadSession(sessions, root, folder) : Promise.resolve(undefined));
  try {
    const loads = await Promise.allSettled([
      loadSession(sessions, root, 'unet'),
      hasEncoder ? loadVaeEncoder(sessions, root, 'vae_encoder') : Promise.resolve(undefined),
      loadSession(sessions, root, 'vae_decoder'),
      hasTiny && hasTinyEncoder ? loadVaeEncoder(sessions, root, 'taesd_encoder') : Promise.resolve(undefined),
      optional(hasTiny, 'taesd_decoder'),
      ...kind.towers.map((t) => loadSession(sessions, root, t.encoder)),
    ]);
    const failed = loads.find((l) => l.status === 'rejected');
    if (failed) throw failed.reason;
    const [unetModel, encoderModel, decoderModel, tinyEncoderModel, tinyDecoderModel, ...textModels] = loads.map((l) => (l as PromiseFulfilledResult<Model | undefined>).value);
    const towers = kind.towers.map((t, i) => ({ tokenizer: tokenizers[i]!, encoder: new ClipTextEncoder(textModels[i]!, t.layer) }));
    return await describePack(root, kind, modelIndex, schedulerConfig, towers, sessions, {
      unet: unetModel!,
      encoder: encoderModel,
      decoder: decoderModel!,
      tinyEncoder: tinyEncoderModel,
      tinyDecoder: tinyDecoderModel,
    });
  } catch (error) {
    await sessions.close(); // nothing half-loaded stays behind on the workers
    throw error;
  }
}

interface PackModels {
  readonly unet: Model;
  readonly encoder: Model | undefined;
  readonly decoder: Model;
  readonly tinyEncoder: Model | undefined;
  readonly tinyDecoder: Model | undefined;
}

async function describePack(
  root: string,
  kind: PackKind,
  modelIndex: Record<string, unknown>,
  schedulerConfig: Record<string, unknown>,
  towers: readonly { readonly tokenizer: ClipTokenizer; readonly encoder: ClipTextEncoder }[],
  sessions: ModelSessions,
  models: PackModels,
): Promise<ModelPack> {
  // 3. configs: the VAE's scaling factor (a tiny VAE works on scaled latents: factor 1) and down-sampling factor
  const vaeConfig = await readOptionalJson(join(root, 'vae_decoder', 'config.json'), 'vae_decoder/config.json');
  const unetConfig = await readOptionalJson(join(root, 'unet', 'config.json'), 'unet/config.json');
  const factor = scalingFactor(vaeConfig, SD_SCALING_FACTOR);
  const sampleSize = typeof unetConfig['sample_size'] === 'number' ? unetConfig['sample_size'] : SD_SAMPLE_SIZE;
  const vaeScale = vaeScaleOf(vaeConfig);
  // The UNet halves the latent once per down block but the last: SD's 4 blocks need latents in multiples of 8.
  const blocks = Array.isArray(unetConfig['block_out_channels']) ? unetConfig['block_out_channels'].length : 4;
  const latentMultiple = typeof unetConfig['latent_multiple'] === 'number' ? unetConfig['latent_multiple'] : 2 ** (blocks - 1);
  const unet = new Unet(models.unet);
  const schedulerClass = typeof schedulerConfig['_class_name'] === 'string' ? schedulerConfig['_class_name'] : '';
  const tinyVae = models.tinyDecoder && { encoder: models.tinyEncoder && new VaeEncoder(models.tinyEncoder, 1), decoder: new VaeDecoder(models.tinyDecoder, 1) };
  return {
    dir: root,
    name: typeof modelIndex['name'] === 'string' ? modelIndex['name'] : (root.split(/[\\/]/).pop() ?? 'model'),
    kind,
    modelIndex,
    schedulerConfig,
    prompts: new PromptEncoder(towers, modelIndex['force_zeros_for_empty_prompt'] === true),
    tokenizer: towers[0]!.tokenizer,
    textEncoder: towers[0]!.encoder,
    unet,
    vaeEncoder: models.encoder && new VaeEncoder(models.encoder, factor),
    vaeDecoder: new VaeDecoder(models.decoder, factor),
    tinyVae,
    sessions,
    defaultImageSize: sampleSize * vaeScale,
    vaeScale,
    sizeMultiple: vaeScale * latentMultiple,
    defaults: packDefaults(modelIndex, sampleSize * vaeScale, { schedulerClass, guidanceEmbedding: unet.guidanceEmbeddingSize > 0 }),
  };
}
