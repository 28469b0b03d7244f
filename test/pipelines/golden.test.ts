/**
 * Golden outputs: a fixed set of renders and a recorded stream on the embedded pack, compared with the
 * outputs recorded in test/fixtures/golden/. Refactors must not change what the pipelines compute.
 *
 *   node --import tsx --test test/pipelines/golden.test.ts                 # 8-bit images within 2/255 (any CPU)
 *   GOLDEN_EXACT=1 node --import tsx --test test/pipelines/golden.test.ts  # float outputs bit for bit (same machine)
 *   GOLDEN_UPDATE=1 node --import tsx --test test/pipelines/golden.test.ts # record anew (after a deliberate change)
 *
 * The tolerant mode exists because onnxruntime's CPU kernels may round differently on another processor;
 * the exact mode is how a refactor is proven to change nothing.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams, type GenerationParamsInput } from '../../pipelines/params.ts';
import { img2img, txt2img } from '../../pipelines/generate.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { decodeImage, tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { loadSceneSpec } from '../../pipelines/evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { drawScenePng } from '../helpers/scenes.ts';
import { FIXTURES } from '../helpers/fixtures.ts';

const GOLDEN_DIR = join(FIXTURES, 'golden');
const HASHES = join(GOLDEN_DIR, 'hashes.json');
const UPDATE = process.env['GOLDEN_UPDATE'] === '1';
const EXACT = process.env['GOLDEN_EXACT'] === '1';
/** Largest per-channel difference (of 255) allowed in the tolerant mode. */
const TOLERANCE = 2;

const engine = await Engine.load(EMBEDDED_PACK_DIR);
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);
const hashes: Record<string, string> = UPDATE ? {} : (JSON.parse(await readFile(HASHES, 'utf8')) as Record<string, string>);
const SIZE = 128;

function sha(data: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest('hex');
}

/** Compares one output [3, H, W] with its recording (or records it). */
async function check(name: string, data: Float32Array): Promise<void> {
  const png = join(GOLDEN_DIR, `${name}.png`);
  const rgb = tensorToRgb8(data, SIZE, SIZE);
  if (UPDATE) {
    await mkdir(GOLDEN_DIR, { recursive: true });
    await writeFile(png, await sharp(rgb, { raw: { width: SIZE, height: SIZE, channels: 3 } }).png().toBuffer());
    hashes[name] = sha(data);
    return;
  }
  if (EXACT) {
    assert.equal(sha(data), hashes[name], `${name}: float output differs from the recording`);
    return;
  }
  const recorded = await sharp(await readFile(png)).raw().toBuffer();
  let worst = 0;
  for (let i = 0; i < rgb.length; i++) worst = Math.max(worst, Math.abs(rgb[i]! - recorded[i]!));
  assert.ok(worst <= TOLERANCE, `${name}: a pixel differs by ${worst}/255 from the recording (allowed ${TOLERANCE})`);
}

const CIRCLE = 'a large red circle in the centre on a blue background';

const RENDERS: { name: string; params: GenerationParamsInput; count?: number }[] = [
  { name: 'txt2img-full-4', params: { prompt: CIRCLE, seed: 7, steps: 4, guidance: 'full', guidance_scale: 2 } },
  { name: 'txt2img-self-2', params: { prompt: 'a small yellow triangle at the top on a black background', seed: 11, steps: 2 }, count: 2 },
  { name: 'txt2img-initialize-3', params: { prompt: 'a large green square on the left on a white background', seed: 5, steps: 3, guidance: 'initialize', guidance_scale: 1.5, delta: 0.7 } },
  {
    name: 'txt2img-blends',
    params: {
      prompt: [
        { text: CIRCLE, weight: 1 },
        { text: 'a large purple square in the centre on a orange background', weight: 1 },
      ],
      prompt_blend: 'slerp',
      seed: [
        { seed: 1, weight: 1 },
        { seed: 2, weight: 0.5 },
      ],
      steps: 2,
      guidance: 'none',
    },
  },
  { name: 'txt2img-budget-06', params: { prompt: CIRCLE, seed: 3, steps: 2, budget: 0.6 } },
  { name: 'txt2img-adapter', params: { prompt: 'a large yellow heart in the centre on a blue background', seed: 4, steps: 2, guidance: 'full', guidance_scale: 2, adapters: [{ name: 'heart', weight: 1 }] } },
];

test('batch renders match their recordings', async () => {
  for (const r of RENDERS) {
    const images = await txt2img(engine, parseParams(r.params), r.count ?? 1);
    for (const [j, img] of images.entries()) await check(`${r.name}-${j}`, img.data);
  }
});

async function drawnFrame(color: string, position: string): Promise<Float32Array> {
  const attrs = { background: { kind: 'plain' as const, color: 'blue' }, objects: [{ shape: 'square' as const, color, size: 'large' as const, position }] };
  return (await decodeImage(await drawScenePng(spec, attrs), SIZE, SIZE)).data;
}

test('img2img matches its recording', async () => {
  const input = await drawnFrame('red', 'centre');
  const [out] = await img2img(engine, parseParams({ prompt: 'a large yellow square in the centre on a blue background', strength: 0.6, steps: 2, guidance: 'full', guidance_scale: 2, seed: 3 }), [input]);
  await check('img2img-recolour', out!.data);
});

test('a recorded stream with a prompt change matches its recording', async () => {
  const frames = await Promise.all(['centre', 'left', 'centre', 'right', 'top', 'centre', 'bottom', 'centre'].map((p) => drawnFrame('red', p)));
  const stream = await StreamPipeline.create(engine, parseParams({ prompt: 'a large red square in the centre on a blue background', steps: 3, seed: 9, similarity_threshold: 1 }));
  for (const [i, frame] of frames.entries()) {
    if (i === 4) await stream.update({ prompt: 'a large green square in the centre on a blue background' });
    const [out] = await stream.process([frame], i);
    await check(`stream-${i}`, out!.image);
  }
});

after(async () => {
  if (UPDATE) await writeFile(HASHES, JSON.stringify(hashes, null, 1) + '\n');
});
