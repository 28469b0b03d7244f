/**
 * Checks exported packs through the service's own loader (models/pack.ts -> models/runtime/onnx.ts): every
 * contract is read from metadata, each model runs at batch 2 and a non-square size (latent 12x16 = image
 * 96x128), outputs must have the right shapes and be finite. With --parity, onnxruntime's outputs are compared
 * with the torch reference that evaluate.py writes (logs/parity.json); with --bench, per-call times are printed.
 *   npx tsx models/train/verify-onnx.ts [--parity models/train/logs/parity.json] [--bench] PACK_DIR [PACK_DIR ...]
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { loadPack, DEFAULT_PACK_OPTIONS, type ModelPack } from '../pack.ts';

/** Largest torch/onnxruntime difference the parity check accepts. */
const PARITY_TOLERANCE = 1e-3;
const BATCH = 2;
const LATENT = { h: 12, w: 16 };

/** A deterministic pseudo-random fill in about [-0.8, 0.8]. */
const fill = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.8);

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`${what} is wrong`);
}

const finite = (data: Float32Array) => data.every(Number.isFinite);

async function verify(pack: ModelPack): Promise<void> {
  console.log(pack.dir);
  const ids = pack.tokenizer.encode('a large red circle in the centre on a blue background');
  // 1. text encoder
  const [embedding] = await pack.textEncoder.encode([ids, ids]);
  console.log(`  text_encoder  ${pack.textEncoder.model.describeContract()} -> hidden ${embedding!.hidden.length}, pooled ${embedding!.pooled.length}`);
  check(finite(embedding!.hidden) && embedding!.hidden.length % pack.tokenizer.options.maxLength === 0, 'text encoder output');
  // 2. UNet, per-row timesteps
  const latent = pack.unet.latentChannels * LATENT.h * LATENT.w;
  const rows = [999, 499].map((timestep) => ({ sample: fill(latent), timestep, context: embedding!.hidden }));
  const eps = await pack.unet.predict(rows, LATENT.h, LATENT.w);
  console.log(`  unet          ${pack.unet.model.describeContract()} -> ${eps.length} x ${eps[0]!.length}`);
  check(eps.length === BATCH && eps.every((e) => e.length === latent && finite(e)), 'unet output');
  // 3. VAE encoder and decoder
  const h = LATENT.h * pack.vaeScale;
  const w = LATENT.w * pack.vaeScale;
  if (pack.vaeEncoder) {
    const latents = await pack.vaeEncoder.encode([fill(3 * h * w), fill(3 * h * w)], h, w);
    console.log(`  vae_encoder   ${pack.vaeEncoder.model.describeContract()} -> ${latents.length} x ${latents[0]!.length}`);
    check(latents.every((l) => l.length === latent && finite(l)), 'vae encoder output');
  }
  const decoded = await pack.vaeDecoder.decode([fill(latent), fill(latent)], LATENT.h, LATENT.w);
  console.log(`  vae_decoder   ${pack.vaeDecoder.model.describeContract()} -> ${decoded.images.length} x ${decoded.height}x${decoded.width}`);
  check(decoded.height === h && decoded.width === w && decoded.images.every(finite), 'vae decoder output');
  console.log('  OK');
}

interface ParityReference {
  input_ids: number[];
  pooler_output: number[];
  sample: number[];
  sample_dims: [number, number, number, number];
  timestep: number;
  out_sample: number[];
  decoder_out_first64: number[];
  encoder_in: number[];
  encoder_in_dims: [number, number, number, number];
  encoder_out: number[];
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** onnxruntime against the torch reference outputs; the VAE works on unscaled latents in the reference. */
async function parity(pack: ModelPack, file: string): Promise<void> {
  const p = JSON.parse(await readFile(file, 'utf8')) as ParityReference;
  const [embedding] = await pack.textEncoder.encode([Int32Array.from(p.input_ids)]);
  const [, , lh, lw] = p.sample_dims;
  const [eps] = await pack.unet.predict([{ sample: Float32Array.from(p.sample), timestep: p.timestep, context: embedding!.hidden }], lh, lw);
  const scaled = Float32Array.from(p.sample, (v) => v * pack.vaeDecoder.scalingFactor);
  const decoded = await pack.vaeDecoder.decode([scaled], lh, lw);
  const [, , h, w] = p.encoder_in_dims;
  const [encoded] = await pack.vaeEncoder!.encode([Float32Array.from(p.encoder_in)], h, w);
  const unscaled = encoded!.map((v) => v / pack.vaeEncoder!.scalingFactor);
  const diffs = {
    pooler: maxDiff(embedding!.pooled, p.pooler_output),
    unet: maxDiff(eps!, p.out_sample),
    decoder: maxDiff(decoded.images[0]!.subarray(0, 64), p.decoder_out_first64),
    encoder: maxDiff(unscaled, p.encoder_out),
  };
  console.log(`parity ${pack.dir}: ${Object.entries(diffs).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(' ')}`);
  if (Math.max(...Object.values(diffs)) > PARITY_TOLERANCE) throw new Error('parity failed');
}

/** Median per-call time of `run`, after a warm-up. */
async function timeIt(name: string, run: () => Promise<unknown>, calls = 30): Promise<void> {
  for (let i = 0; i < 5; i++) await run();
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(`  ${name}: ${times[times.length >> 1]!.toFixed(2)} ms`);
}

async function bench(pack: ModelPack): Promise<void> {
  const [embedding] = await pack.textEncoder.encode([pack.tokenizer.encode('')]);
  const side = pack.defaultImageSize / pack.vaeScale;
  const latent = pack.unet.latentChannels * side * side;
  await timeIt('text_encoder B=1', () => pack.textEncoder.encode([pack.tokenizer.encode('a red circle')]));
  for (const b of [1, 2, 4]) {
    const rows = Array.from({ length: b }, () => ({ sample: fill(latent), timestep: 999, context: embedding!.hidden }));
    await timeIt(`unet B=${b} ${side}x${side}`, () => pack.unet.predict(rows, side, side));
  }
  const px = pack.defaultImageSize;
  if (pack.vaeEncoder) await timeIt(`vae_encoder ${px}x${px}`, () => pack.vaeEncoder!.encode([fill(3 * px * px)], px, px));
  await timeIt(`vae_decoder ${px}x${px}`, () => pack.vaeDecoder.decode([fill(latent)], side, side));
}

const { values, positionals } = parseArgs({ options: { parity: { type: 'string' }, bench: { type: 'boolean' }, threads: { type: 'string', default: '0' } }, allowPositionals: true });
if (positionals.length === 0) throw new Error('usage: verify-onnx.ts [--parity FILE] [--bench] [--threads N] PACK_DIR ...');
for (const dir of positionals) {
  const pack = await loadPack(dir, { ...DEFAULT_PACK_OPTIONS, threads: Number(values.threads) });
  await verify(pack);
  if (values.bench) await bench(pack);
  if (values.parity && dir === positionals[0]) await parity(pack, values.parity);
}
