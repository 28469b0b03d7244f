/**
 * The camera's shape is kept (issue 15): a stream whose parameters set no size takes the largest size with
 * the input's aspect within the model's pixel budget (tiny-shapes: 128 x 128 pixels' worth in multiples of 32,
 * so 16:9 -> 160 x 96, 3:4 -> 96 x 128), from `aspect` in start or from the frames themselves; the non-square
 * output still follows the prompt (the pack's evaluator judges it).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { loadSceneSpec, scoreImage, type SceneAttributes } from '../../pipelines/evaluation/evaluator.ts';
import { StreamClient } from '../helpers/stream-client.ts';

const server = await startServer({ port: 0 }, { engine: await Engine.load(EMBEDDED_PACK_DIR) });
after(() => server.close());
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);

const PROMPT = 'a large red circle in the centre on a blue background';
const WANTED: SceneAttributes = { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'centre' }] };
// a fixed seed: a stream without one draws a random seed
const params = { prompt: PROMPT, steps: 2, strength: 0.9, guidance: 'full', guidance_scale: 2, similarity_threshold: 1, seed: 2 };

/** A camera frame of another scene (a small white triangle on green) at width x height. */
function cameraFrame(width: number, height: number): Promise<Buffer> {
  const r = Math.min(width, height) * 0.12;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="rgb(40,170,60)"/><polygon points="${width * 0.3},${height / 2 - r} ${width * 0.3 - r},${height / 2 + r} ${width * 0.3 + r},${height / 2 + r}" fill="white"/></svg>`;
  return sharp(Buffer.from(svg)).jpeg({ quality: 90 }).toBuffer();
}

async function score(bytes: Buffer) {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { size: [info.width, info.height], score: scoreImage(spec, { data, width: info.width, height: info.height }, WANTED) };
}

test('a 16:9 camera without a size: the frames decide, 160 x 96, and the output follows the prompt', async () => {
  const client = await StreamClient.connect(server.url, { params });
  const frame = await cameraFrame(1280, 720);
  for (let i = 0; i < 4; i++) await client.roundTrip(frame);
  const last = client.frames.at(-1)!;
  assert.deepEqual([last.meta['width'], last.meta['height']], [160, 96]);
  const { size, score: s } = await score(last.bytes);
  assert.deepEqual(size, [160, 96]);
  assert.ok(s.background && s.objects[0]!.color, JSON.stringify(s));
  await client.close();
});

test('aspect in start: started already says the size; a portrait camera gets a portrait stream', async () => {
  const wide = await StreamClient.connect(server.url, { params: { ...params, aspect: 16 / 9 } });
  assert.deepEqual([wide.started!['width'], wide.started!['height']], [160, 96]);
  await wide.close();
  const tall = await StreamClient.connect(server.url, { params });
  for (let i = 0; i < 3; i++) await tall.roundTrip(await cameraFrame(480, 640));
  const last = tall.frames.at(-1)!;
  assert.deepEqual([last.meta['width'], last.meta['height']], [96, 128]);
  const { score: s } = await score(last.bytes);
  assert.ok(s.background && s.objects[0]!.color, JSON.stringify(s));
  await tall.close();
});

test('a size in the parameters wins over the input shape (the rest is cropped)', async () => {
  const client = await StreamClient.connect(server.url, { params: { ...params, width: 128, height: 128 } });
  await client.roundTrip(await cameraFrame(1280, 720));
  assert.deepEqual([client.frames[0]!.meta['width'], client.frames[0]!.meta['height']], [128, 128]);
  await client.close();
});
