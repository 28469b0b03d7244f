import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { txt2img } from '../../pipelines/generate.ts';
import { encodeImage } from '../../pipelines/codecs/image.ts';
import { StreamBatch } from '../../pipelines/stream-batch.ts';
import { denoiseSequential } from '../../pipelines/sequential.ts';
import { makeGuidance } from '../../pipelines/rcfg.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';

const engine = await Engine.load(BASE_PACK);

test('same pack, params and seed give byte-identical images; another seed another image', async () => {
  const params = parseParams({ prompt: 'a blue square', steps: 2, seed: 11 });
  const png = async (p: typeof params) => {
    const [img] = await txt2img(engine, p, 1);
    return encodeImage(img!.data, img!.width, img!.height, 'png');
  };
  const a = await png(params);
  const b = await png(params);
  assert.ok(a.equals(b));
  assert.ok(!a.equals(await png({ ...params, seed: 12 })));
});

test('image j of a batch equals a single render with seed + j', async () => {
  const params = parseParams({ prompt: 'a green triangle', steps: 2, seed: 5 });
  const batch = await txt2img(engine, params, 3, { lanesPerCall: 3 });
  const single = await txt2img(engine, { ...params, seed: 7 }, 1);
  assert.equal(batch[2]!.seed, 7);
  const diff = batch[2]!.data.reduce((m, v, i) => Math.max(m, Math.abs(v - single[0]!.data[i]!)), 0);
  assert.ok(diff < 1e-4, `max diff ${diff}`);
});

for (const [n, list] of [
  [1, [20]],
  [2, [32, 45]],
  [4, [0, 16, 32, 45]],
] as const) {
  test(`real UNet, n=${n}, RCFG self: stream batch output for frame k equals the sequential denoise of frame k`, async () => {
    const size = engine.size({ width: 128, height: 128 });
    const c = engine.scheduler.coefficients([...list]);
    const g = makeGuidance('self', 1.4, 0.9);
    const params = parseParams({ prompt: 'a red circle', seed: 3 });
    const prompt = await engine.encodePrompt(params);
    const noise = engine.noise(params, n, 1, size, false);
    const runner = engine.unetRunner(size);
    const latents = Array.from({ length: 6 }, (_, i) => engine.noise({ seed: 100 + i }, 1, 1, size, false).rows[0]!);
    const stream = new StreamBatch(c, g, noise);
    for (let k = 0; k < latents.length; k++) {
      const [out] = await stream.process([latents[k]!], prompt, runner);
      const [expected] = await denoiseSequential([latents[Math.max(0, k - (n - 1))]!], c, g, prompt, noise, runner);
      const diff = out!.reduce((m, v, i) => Math.max(m, Math.abs(v - expected![i]!)), 0);
      assert.ok(diff < 1e-4, `frame ${k}: max diff ${diff}`);
    }
  });
}
