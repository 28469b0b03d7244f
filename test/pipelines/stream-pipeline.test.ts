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
import { StreamPipeline, type FrameResult } from '../../pipelines/stream-pipeline.ts';
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
  assert.deepEqual(out!.rgb, new Uint8Array(tensorToRgb8(rendered!.data, 128, 128)), 'a txt2img stream starts from pure noise, as txt2img does');
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

test('frames handed over before the previous ones finish give the same outputs, in order, as one at a time', async () => {
  const one = await StreamPipeline.create(engine, parseParams(base));
  const overlapped = await StreamPipeline.create(engine, parseParams({ ...base }));
  const expected: FrameResult[] = [];
  for (const [i, f] of frames.entries()) expected.push((await one.process([f], i))[0]!);
  // all eight at once, as RGB bytes (the server's lean path): no float image is made on the way in
  const settled: number[] = [];
  const got = await Promise.all(
    frames.map((f, i) =>
      overlapped.process([new Uint8Array(tensorToRgb8(f, 128, 128))], i, true).then((r) => {
        settled.push(i);
        return r[0]!;
      }),
    ),
  );
  assert.deepEqual(settled, [0, 1, 2, 3, 4, 5, 6, 7], 'results settle in the order frames came');
  assert.deepEqual(got.map((r) => r.source), expected.map((r) => r.source));
  got.forEach((r, i) => assert.deepEqual(r.rgb, expected[i]!.rgb, `frame ${i}`));
});

test("a frame's VAE encode runs while the previous frame's UNet call is still running", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let unetCalls = 0;
  const runners: RunnerFactory = (size, variant) => async (rows) => {
    if (++unetCalls === 1) await gate; // frame 0's call waits until we say so
    return variant.unet.predict(rows, size.latentHeight, size.latentWidth);
  };
  const encoded: number[] = [];
  const spy = Object.create(engine) as Engine;
  spy.encodeImages = async (...args: Parameters<Engine['encodeImages']>) => {
    const latents = await engine.encodeImages(...args);
    encoded.push(encoded.length);
    return latents;
  };
  const stream = await StreamPipeline.create(spy, parseParams({ ...base, steps: 1 }), runners);
  const first = stream.process([frames[0]!], 0);
  await stream.room();
  const second = stream.process([frames[1]!], 1);
  const bothEncoded = (async () => {
    while (encoded.length < 2) await new Promise((r) => setTimeout(r, 5));
  })();
  const winner = await Promise.race([bothEncoded.then(() => 'encoded'), new Promise((r) => setTimeout(() => r('timed out'), 20_000))]);
  assert.equal(winner, 'encoded', 'the second frame must be encoded while the first is in the UNet');
  assert.equal(unetCalls, 1, 'the second frame waits for the first one\'s step');
  release();
  const [a, b] = await Promise.all([first, second]);
  assert.deepEqual([a[0]!.source, b[0]!.source], [0, 1]);
});

test('with the filter off, frames are not even looked at', async () => {
  const stream = await StreamPipeline.create(engine, parseParams(base));
  let checks = 0;
  const check = stream.filter.check.bind(stream.filter);
  stream.filter.check = (input) => (checks++, check(input));
  await stream.process([frames[0]!], 0);
  assert.equal(checks, 0);
  await stream.update({ similarity_threshold: 0.98 });
  await stream.process([frames[1]!], 1);
  assert.equal(checks, 1);
});

test('an update reaches the frames already waiting in the pipeline: each step takes the parameters current when it starts', async () => {
  // reference, one frame at a time: frame 0, then the update, then frames 1-3
  const reference = await StreamPipeline.create(engine, parseParams(base));
  const expected = [(await reference.process([frames[0]!], 0))[0]!];
  await reference.update({ prompt: 'a small green triangle on the left on a white background', guidance: 'full', guidance_scale: 1.6 });
  for (const i of [1, 2, 3]) expected.push((await reference.process([frames[i]!], i))[0]!);
  // pipelined: frame 0's step is held in the UNet while frame 1 waits; the update lands between the two steps
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const inUnet = new Promise<void>((r) => (reached = r));
  let held = false;
  const runners: RunnerFactory = (size, variant) => async (rows) => {
    if (!held) {
      held = true;
      reached();
      await gate;
    }
    return variant.unet.predict(rows, size.latentHeight, size.latentWidth);
  };
  const stream = await StreamPipeline.create(engine, parseParams(base), runners);
  const first = stream.process([frames[0]!], 0);
  await stream.room();
  const second = stream.process([frames[1]!], 1);
  await inUnet; // frame 0's step has started (its first UNet call waits)
  await stream.update({ prompt: 'a small green triangle on the left on a white background', guidance: 'full', guidance_scale: 1.6 });
  release();
  const got = [(await first)[0]!, (await second)[0]!];
  for (const i of [2, 3]) got.push((await stream.process([frames[i]!], i))[0]!);
  got.forEach((r, i) => assert.deepEqual(r.rgb, expected[i]!.rgb, `frame ${i}`));
});
