/**
 * What every flow shares (pipelines/engine.ts): sizes checked against the pack, strength mapped onto LCM's grid,
 * initial noise per lane, cached prompt embeddings, and clear errors where the pack cannot do a thing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine, DEFAULT_IMG2IMG_STRENGTH } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { BASE_PACK, copyPack } from '../helpers/fixtures.ts';

const engine = await Engine.load(BASE_PACK);

test('sizes default to the pack\'s and must be multiples of its size multiple', () => {
  const size = engine.size({});
  assert.deepEqual(size, { width: 128, height: 128, latentWidth: 16, latentHeight: 16 });
  assert.deepEqual(engine.size({ width: 96, height: 160 }), { width: 96, height: 160, latentWidth: 12, latentHeight: 20 });
  assert.throws(() => engine.size({ width: 104 }), (e: Error & { field?: string }) => e.field === 'width' && /multiple of 16/.test(e.message));
});

test('strength picks the start on the 50-step grid, steps spread to its end; txt2img always starts at 999', () => {
  const timesteps = (p: object, mode: 'txt2img' | 'img2img') => engine.coefficients(parseParams(p), mode).timesteps;
  assert.deepEqual(timesteps({ steps: 2, strength: 1 }, 'img2img'), [999, 499]);
  assert.deepEqual(timesteps({ steps: 2, strength: 0.5 }, 'img2img'), timesteps({ steps: 2, strength: DEFAULT_IMG2IMG_STRENGTH }, 'img2img'));
  // strength 0.5: start index round(0.5 * 49) = 25 (t = 999 - 20 * 25 = 499), 2 steps over the 25 left
  assert.deepEqual(timesteps({ steps: 2, strength: 0.5 }, 'img2img'), [499, 259]);
  assert.deepEqual(timesteps({ steps: 2, strength: 0.5 }, 'txt2img'), [999, 499]);
  assert.deepEqual(timesteps({ t_index_list: [32, 45] }, 'img2img'), [359, 99]);
});

test('per-lane noise: lane j of a batch is the noise of seed + j alone', () => {
  const size = engine.size({});
  const batch = engine.noise({ seed: 10 }, 2, 3, size, true);
  const single = engine.noise({ seed: 12 }, 2, 1, size, true);
  assert.equal(batch.rows.length, 6);
  // rows are step-major: row (k, j) = rows[k * lanes + j]
  assert.deepEqual(batch.rows[2], single.rows[0]);
  assert.deepEqual(batch.rows[5], single.rows[1]);
  const stream = engine.noise({ seed: 10 }, 2, 1, size, false);
  assert.deepEqual(stream.rows[0], batch.rows[0]);
});

test('prompt embeddings are cached; all-zero prompt weights are refused', async () => {
  assert.equal(engine.embed('a red circle'), engine.embed('a red circle'));
  await assert.rejects(engine.encodePrompt(parseParams({ prompt: [{ text: 'a', weight: 0 }] })), /prompt weights must not all be 0/);
});

test('a pack without a VAE encoder renders txt2img but refuses img2img clearly', async () => {
  const dir = await copyPack();
  await rm(join(dir, 'vae_encoder'), { recursive: true });
  const noEncoder = await Engine.load(dir);
  await assert.rejects(noEncoder.encodeImages([new Float32Array(3 * 128 * 128)], noEncoder.size({})), /has no vae_encoder: img2img is not available/);
});
