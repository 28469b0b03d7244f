/**
 * UNet latency of expert graphs with onnxruntime-node (CPU), batch 1, 16x16 latents (128x128 images):
 * the graphs run interleaved round by round (so machine load hits all alike) and each reports its median.
 *   npx tsx models/train/experts/measure_latency.ts [--threads 1] [--rounds 300] a/model.onnx b/model.onnx ...
 * Prints {"latency_ms": [...], "threads", "rounds"} as JSON (export_experts.py writes it into the manifest).
 */
import { parseArgs } from 'node:util';
import { Unet } from '../../components.ts';
import { DEFAULT_SESSION_OPTIONS, OnnxModel } from '../../runtime/onnx.ts';

const LATENT = 16;
const WARMUP = 20;

const { values, positionals } = parseArgs({
  options: { threads: { type: 'string', default: '1' }, rounds: { type: 'string', default: '300' } },
  allowPositionals: true,
});
const threads = Number(values.threads);
const rounds = Number(values.rounds);
const unets = await Promise.all(positionals.map(async (path) => new Unet(await OnnxModel.load(path, { ...DEFAULT_SESSION_OPTIONS, threads, label: path }))));
const d = Number(unets[0]!.model.input('encoder_hidden_states')!.dims[2]);
let s = 1;
const rand = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
const row = { sample: Float32Array.from({ length: 4 * LATENT * LATENT }, rand), timestep: 499, context: Float32Array.from({ length: 77 * d }, rand) };
const times: number[][] = unets.map(() => []);
for (let r = 0; r < WARMUP + rounds; r++) {
  for (let k = 0; k < unets.length; k++) {
    const i = (k + r) % unets.length; // rotate the order every round
    const t0 = performance.now();
    await unets[i]!.predict([row], LATENT, LATENT);
    if (r >= WARMUP) times[i]!.push(performance.now() - t0);
  }
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
console.log(JSON.stringify({ latency_ms: times.map((t) => Number(median(t).toFixed(4))), threads, rounds }));
