/**
 * One live stream (pipelines/stream-pipeline.ts) on the embedded pack: outputs lag by steps - 1 and say which
 * input they show, the similarity filter repeats an output without running a model, a txt2img stream draws its
 * prompt, and live updates either change nothing (invalid) or make the stream what a stream started with the
 * new values gives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams, type GenerationParamsInput } from '../../pipelines/params.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { txt2img } from '../../pipelines/generate.ts';
import type { RunnerFactory } from '../../pipelines/plan.ts';
import { decodeImage, tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { loadSceneSpec, scoreImage, type SceneAttributes } from '../../pipelines/evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { drawScenePng } from '../helpers/scenes.ts';

const engine = await Engine.load(EMBEDDED_PACK_DIR);
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);

async function frame(color: string, position: string): Promise<Float32Array> {
  const attrs: SceneAttributes = { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'square', color, size: 'large', position }] };
  return (await decodeImage(await drawScenePng(spec, attrs), 128, 128)).data;
}
const frames = await Promise.all(['centre', 'left', 'right', 'top', 'bottom', 'centre', 'left', 'right'].map((p) => frame('red', p)));

/** A runner factory that counts UNet calls. */
function counting(): { runners: RunnerFactory; calls: () => number } {
  let calls = 0;
  return {
    runners: (size, variant) => (rows) => {
      calls++;
      return variant.unet.predict(rows, size.latentHeight, size.latentWidth);
    },
    calls: () => calls,
  };
}

const base: GenerationParamsInput = { prompt: 'a large yellow square in the centre on a blue background', steps: 3, seed: 4, similarity_threshold: 1 };

async function run(stream: StreamPipeline, inputs: readonly Float32Array[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const [i, f] of inputs.entries()) out.push((await stream.process([f], i))[0]!.image);
  return out;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('outputs lag by steps - 1 and carry the tag of the input they show; priming repeats the first', async () => {
  const stream = await StreamPipeline.create(engine, parseParams(base));
  assert.equal(stream.lag, 2);
  const tags = [];
  for (const [i, f] of frames.slice(0, 5).entries()) tags.push((await stream.process([f], i))[0]!.source);
  assert.deepEqual(tags, [0, 0, 0, 1, 2]);
});

test('a near-identical frame repeats the previous output and runs no model', async () => {
  const { runners, calls } = counting();
  const stream = await StreamPipeline.create(engine, parseParams({ ...base, similarity_threshold: 0.5, max_skip_frames: 3 }), runners);
  const [first] = await stream.process([frames[0]!]);
  const before = calls();
  const results = [];
  for (let i = 0; i < 4; i++) results.push((await stream.process([frames[0]!]))[0]!);
  // the filter's coin may process a frame now and then, but never more than max_skip_frames skips in a row
  assert.ok(results.some((r) => r.skipped), 'some repeats should be skipped');
  const skippedRun = results.findIndex((r) => !r.skipped);
  assert.ok(skippedRun === -1 || skippedRun <= 3);
  for (const r of results.filter((r) => r.skipped)) assert.equal(r.image, first!.image);
  assert.equal(calls() - before, results.filter((r) => !r.skipped).length, 'a skipped frame must run no UNet call');
});

test('a txt2img stream draws its prompt: its first frame is the txt2img render of the same parameters', async () => {
  const params = parseParams({ prompt: 'a large red circle in the centre on a blue background', steps: 2, seed: 8 });
  const stream = await StreamPipeline.create(engine, params, undefined, 'txt2img');
  const [out] = await stream.generate();
  const [rendered] = await txt2img(engine, params, 1);
  assert.ok(maxDiff(out!.image, rendered!.data) < 1e-5, 'a txt2img stream starts from pure noise, as txt2img does');
  const expected: SceneAttributes = { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'centre' }] };
  const score = scoreImage(spec, { data: tensorToRgb8(out!.image, 128, 128), width: 128, height: 128 }, expected);
  assert.ok(score.background && score.objects[0]!.color && score.objects[0]!.position, JSON.stringify(score));
});

test('an invalid update throws and changes nothing', async () => {
  const stream = await StreamPipeline.create(engine, parseParams(base));
  const reference = await StreamPipeline.create(engine, parseParams(base));
  await assert.rejects(stream.update({ expert: 'no-such-expert' }), /unknown expert/);
  await assert.rejects(stream.update({ width: 100 }), /multiple of/);
  await assert.rejects(stream.update({ steps: 0 }), /steps/);
  assert.deepEqual(stream.params, reference.params);
  const [a, b] = [await run(stream, frames), await run(reference, frames)];
  a.forEach((img, i) => assert.equal(maxDiff(img, b[i]!), 0, `frame ${i}`));
});

/** Updates applied after frame 2; the outputs must then be those of a stream started with the new values. */
const UPDATES: { name: string; update: GenerationParamsInput; settle: number }[] = [
  // a new schedule or size re-primes: the very next output is the fresh stream's
  { name: 'steps', update: { steps: 2 }, settle: 0 },
  { name: 'strength', update: { strength: 0.8 }, settle: 0 },
  { name: 't_index_list', update: { t_index_list: [10, 30, 45] }, settle: 0 },
  // guidance and seed apply to the frames in flight: equal once every frame in the buffer entered after the update
  { name: 'seed', update: { seed: 77 }, settle: 2 },
  { name: 'guidance', update: { guidance: 'full', guidance_scale: 1.8 }, settle: 2 },
  { name: 'delta', update: { delta: 0.5 }, settle: 2 },
];

for (const { name, update, settle } of UPDATES) {
  test(`a live ${name} update makes the stream a fresh stream with the new value`, async () => {
    const stream = await StreamPipeline.create(engine, parseParams(base));
    const untouched = await run(await StreamPipeline.create(engine, parseParams(base)), frames);
    const before = await run(stream, frames.slice(0, 3));
    await stream.update(update);
    const after = await run(stream, frames.slice(3));
    const fresh = await StreamPipeline.create(engine, parseParams({ ...base, ...update }));
    // the fresh stream sees the frames from the update on (its priming is the update's re-priming)
    const expected = await run(fresh, settle === 0 ? frames.slice(3) : frames);
    const expectedAfter = settle === 0 ? expected : expected.slice(3);
    before.forEach((img, i) => assert.equal(maxDiff(img, untouched[i]!), 0, `frame ${i} is before the update`));
    for (let i = settle; i < after.length; i++) assert.ok(maxDiff(after[i]!, expectedAfter[i]!) < 1e-5, `frame ${3 + i} differs from a fresh stream`);
    assert.ok(after.some((img, i) => maxDiff(img, untouched[3 + i]!) > 1e-3), 'the update must change the output');
  });
}

test('a live size update re-primes at the new size', async () => {
  const stream = await StreamPipeline.create(engine, parseParams(base));
  await run(stream, frames.slice(0, 2));
  await stream.update({ width: 96, height: 160 });
  assert.deepEqual([stream.frameSize.width, stream.frameSize.height], [96, 160]);
  const resized = await Promise.all(frames.map(async (f) => (await decodeImage(await (await import('sharp')).default(tensorToRgb8(f, 128, 128), { raw: { width: 128, height: 128, channels: 3 } }).png().toBuffer(), 96, 160)).data));
  const after = await run(stream, resized.slice(2));
  const expected = await run(await StreamPipeline.create(engine, parseParams({ ...base, width: 96, height: 160 })), resized.slice(2));
  after.forEach((img, i) => assert.ok(maxDiff(img, expected[i]!) < 1e-5, `frame ${i}`));
});
