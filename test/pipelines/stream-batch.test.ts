import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StreamBatch } from '../../pipelines/stream-batch.ts';
import { denoiseSequential } from '../../pipelines/sequential.ts';
import { makeGuidance, type Guidance } from '../../pipelines/rcfg.ts';
import { LcmScheduler, type StepCoefficients } from '../../pipelines/schedulers/lcm.ts';
import { Generator } from '../../pipelines/random.ts';
import type { NoiseTable, PromptContext } from '../../pipelines/denoise-step.ts';
import { fakeEps, fakeRunner } from '../helpers/fake-unet.ts';

const SIZE = 12; // a tiny "latent"
const prompt: PromptContext = { cond: new Generator(100).randn(5), uncond: new Generator(101).randn(5) };
const frames = Array.from({ length: 10 }, (_, i) => new Generator(200 + i).randn(SIZE));
const schedules: Record<number, number[]> = { 1: [25], 2: [32, 45], 4: [0, 16, 32, 45] };

function noiseTable(n: number, lanes = 1): NoiseTable {
  const g = new Generator(7);
  return { rows: Array.from({ length: n * lanes }, () => g.randn(SIZE)), lanes };
}

function assertClose(a: Float32Array, b: Float32Array, tol = 1e-5): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= tol, `index ${i}: ${a[i]} vs ${b[i]}`);
}

/**
 * StreamDiffusion's batched algorithm written out directly (pipeline.py's predict_x0_batch + unet_step,
 * frame_buffer_size 1), with its zero-initialised buffer and stock noise. Used as the reference.
 */
function originalStream(c: StepCoefficients, g: Guidance, init: Float32Array[]) {
  const n = c.timesteps.length;
  let buffer: Float32Array[] = Array.from({ length: n - 1 }, () => new Float32Array(SIZE));
  let stock: Float32Array[] = Array.from({ length: n }, () => new Float32Array(SIZE));
  const scale = g.kind === 'none' ? 1 : g.scale;
  const delta = g.kind === 'self' || g.kind === 'initialize' ? g.delta : 0;
  return (z: Float32Array): Float32Array => {
    const x = [Float32Array.from(z, (v, j) => c.alpha[0]! * v + c.beta[0]! * init[0]![j]!), ...buffer];
    stock = [init[0]!, ...stock.slice(0, -1)];
    const cond = x.map((s, i) => fakeEps({ sample: s, timestep: c.timesteps[i]!, context: prompt.cond }));
    const unc = x.map((s, i) => fakeEps({ sample: s, timestep: c.timesteps[i]!, context: prompt.uncond }));
    if (g.kind === 'initialize') stock[0] = unc[0]!;
    const eps = x.map((_, i) =>
      Float32Array.from(cond[i]!, (ec, j) => {
        const eu = g.kind === 'full' ? unc[i]![j]! : g.kind === 'none' ? ec : delta * stock[i]![j]!;
        return eu + scale * (ec - eu);
      }),
    );
    const step = (i: number, xi: Float32Array) => Float32Array.from(xi, (v, j) => (c.cOut[i]! * (v - c.beta[i]! * eps[i]![j]!)) / c.alpha[i]! + c.cSkip[i]! * v);
    const denoised = x.map((xi, i) => step(i, xi));
    if (g.kind === 'self' || g.kind === 'initialize') {
      stock = stock.map((s, i) => {
        const d = step(i, Float32Array.from(s, (v) => c.beta[i]! * v));
        const factor = i === n - 1 ? 1 : c.alpha[i + 1]! / c.beta[i + 1]!;
        return Float32Array.from(d, (v, j) => init[(i + 1) % n]![j]! + factor * v);
      });
    }
    buffer = denoised.slice(0, -1).map((d, i) => Float32Array.from(d, (v, j) => c.alpha[i + 1]! * v + c.beta[i + 1]! * init[i + 1]![j]!));
    return denoised[n - 1]!;
  };
}

const guidances: Guidance[] = [makeGuidance('none'), makeGuidance('full', 1.5), makeGuidance('self', 1.5, 0.8), makeGuidance('initialize', 1.5, 0.8)];

for (const n of [1, 2, 4]) {
  for (const g of guidances) {
    test(`n=${n} ${g.kind}: after priming, frame k's output equals the original batched algorithm and the sequential denoise`, async () => {
      const c = new LcmScheduler().coefficients(schedules[n]!);
      const noise = noiseTable(n);
      const stream = new StreamBatch(c, g, noise);
      const original = originalStream(c, g, noise.rows as Float32Array[]);
      const runner = fakeRunner();
      for (let k = 0; k < frames.length; k++) {
        const [out] = await stream.process([frames[k]!], prompt, runner);
        const expectedOriginal = original(frames[k]!);
        const source = Math.max(0, k - (n - 1)); // output lags input by n - 1 frames; the first frame covers the lag
        const [sequential] = await denoiseSequential([frames[source]!], c, g, prompt, noise, runner);
        assertClose(out!, sequential!);
        if (k >= n - 1) assertClose(out!, expectedOriginal);
      }
    });
  }
}

test('one UNet call per frame after priming: N rows for self, 2N for full, N+1 for initialize', async () => {
  const c = new LcmScheduler().coefficients(schedules[4]!);
  const cases: [Guidance, number][] = [
    [makeGuidance('none'), 4],
    [makeGuidance('self', 1.5, 1), 4],
    [makeGuidance('full', 1.5), 8],
    [makeGuidance('initialize', 1.5, 1), 5],
  ];
  for (const [g, rows] of cases) {
    const calls: number[] = [];
    const stream = new StreamBatch(c, g, noiseTable(4));
    for (const f of frames.slice(0, 5)) await stream.process([f], prompt, fakeRunner(calls));
    // priming: 3 sequential calls on the first frame, then one call per frame
    assert.equal(calls.length, 3 + 5, g.kind);
    assert.deepEqual(calls.slice(3), [rows, rows, rows, rows, rows], g.kind);
  }
});

test('frame_buffer_size 2: each lane equals its own sequential denoise', async () => {
  const c = new LcmScheduler().coefficients(schedules[2]!);
  const g = makeGuidance('self', 1.3, 0.9);
  const noise = noiseTable(2, 2);
  const stream = new StreamBatch(c, g, noise);
  const runner = fakeRunner();
  const groups = [[frames[0]!, frames[1]!], [frames[2]!, frames[3]!], [frames[4]!, frames[5]!]];
  for (let k = 0; k < groups.length; k++) {
    const out = await stream.process(groups[k]!, prompt, runner);
    const source = groups[Math.max(0, k - 1)]!;
    const expected = await denoiseSequential(source, c, g, prompt, noise, runner);
    assertClose(out[0]!, expected[0]!);
    assertClose(out[1]!, expected[1]!);
  }
});
