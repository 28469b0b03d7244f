/**
 * Every parameter the protocol accepts is live (issue 15): one test per parameter, through a real WebSocket
 * client against the server on the embedded pack. A stream gets an `update` after UPDATE_AT frames; its later
 * outputs must differ from a stream that never got the update, and equal, byte for byte:
 * - for changes applied to the frames in flight (prompt, guidance, seed, UNet variant, fit): a fresh stream
 *   started with the new value and fed the same frames from the first (the rows in flight leave the buffer
 *   after steps - 1 frames; from then on both buffers hold the same rows);
 * - for changes that re-prime the buffer (steps, strength, t_index_list, size, aspect): a fresh stream
 *   started with the new value at the update, fed the same frames from there.
 * The similarity filter's settings are checked by the skip pattern they give on a still input.
 * Deterministic: fixed seeds, the filter off (except where it is the subject), the same input frames, and
 * every frame sent only after the previous output arrived.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { StreamClient, shapeFrame, type ReceivedFrame } from '../helpers/stream-client.ts';

const server = await startServer({ port: 0, maxStreams: 4 }, { engine: await Engine.load(EMBEDDED_PACK_DIR) });
after(() => server.close());

const BASE = { prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, guidance: 'self', seed: 7, similarity_threshold: 1 };
/** Frames sent before the update; the rest after it. */
const UPDATE_AT = 4;
/** A moving shape, square frames (the size follows the input's aspect: 128 x 128 here). */
const MOVING = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => shapeFrame({ x: 30 + i * 8, fg: i % 2 ? '#e0c020' : '#e02020' })));
/** 16:9 frames, for the fit and aspect checks. */
const WIDE = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => shapeFrame({ x: 40 + i * 12, width: 224, height: 126 })));

type Params = Record<string, unknown>;

interface Run {
  /** Outputs in order, one per input frame. */
  readonly outputs: ReceivedFrame[];
  /** The parameters the server confirmed with `updated`. */
  readonly confirmed: Params | undefined;
}

/** Streams `frames` one at a time (each after the previous output); sends `update` before frame `updateAt + 1`. */
async function run(start: Params, frames: readonly Buffer[], update?: Params, updateAt = UPDATE_AT): Promise<Run> {
  const client = await StreamClient.connect(server.url, { params: start });
  let confirmed: Params | undefined;
  try {
    for (const [i, frame] of frames.entries()) {
      if (update && i === updateAt) {
        client.send({ type: 'update', params: update });
        await client.until(() => client.messages.some((m) => m['type'] === 'updated') || client.errors.length > 0, 60_000);
        assert.deepEqual(client.errors, [], 'the update is accepted');
        confirmed = client.messages.find((m) => m['type'] === 'updated')!['params'] as Params;
      }
      await client.roundTrip(frame);
    }
    return { outputs: client.frames, confirmed };
  } finally {
    await client.close();
  }
}

/** Mean absolute difference of two JPEGs' pixels (0-255), for messages. */
async function pixelDifference(a: Buffer, b: Buffer): Promise<number> {
  const [x, y] = await Promise.all([a, b].map((j) => sharp(j).raw().toBuffer()));
  if (x!.length !== y!.length) return Infinity;
  let sum = 0;
  for (let i = 0; i < x!.length; i++) sum += Math.abs(x![i]! - y![i]!);
  return sum / x!.length;
}

const never = new Map<string, Promise<Run>>();
/** The never-updated stream (shared by the tests that start from the same parameters). */
function neverUpdated(start: Params, frames: readonly Buffer[]): Promise<Run> {
  const key = JSON.stringify([start, frames === WIDE]);
  if (!never.has(key)) never.set(key, run(start, frames));
  return never.get(key)!;
}

/** Outputs that show frames sent after the update. */
const afterUpdate = (r: Run) => r.outputs.filter((o) => o.meta.input_id! > UPDATE_AT);

async function assertDiffers(updated: Run, unchanged: Run, what: string): Promise<void> {
  const later = afterUpdate(updated);
  assert.ok(later.length >= 3, `outputs after the update: ${later.length}`);
  for (const out of later) {
    const same = unchanged.outputs.find((o) => o.meta.input_id === out.meta.input_id)!;
    assert.ok(!out.bytes.equals(same.bytes), `${what}: output of frame ${out.meta.input_id} is the never-updated stream's (the update was ignored)`);
  }
}

/** A change to the frames in flight: after steps - 1 frames the stream is a fresh stream with the new value. */
async function checkInFlight(start: Params, update: Params, frames: readonly Buffer[] = MOVING): Promise<void> {
  const updated = await run(start, frames, update);
  const fresh = await run({ ...start, ...update }, frames);
  await assertDiffers(updated, await neverUpdated(start, frames), Object.keys(update).join(', '));
  // every frame sent after the update ran all its steps with the new value (the older rows beside it in the
  // UNet batch do not change its result)
  for (const out of afterUpdate(updated)) {
    const twin = fresh.outputs.find((o) => o.meta.input_id === out.meta.input_id)!;
    assert.ok(out.bytes.equals(twin.bytes), `frame ${out.meta.input_id}: differs from a fresh stream started with the new value by ${(await pixelDifference(out.bytes, twin.bytes)).toFixed(2)}`);
  }
}

/** A change that re-primes: from the update on, the stream is a fresh stream started there with the new value. */
async function checkReprimed(start: Params, update: Params, frames: readonly Buffer[] = MOVING): Promise<Run> {
  const updated = await run(start, frames, update);
  const fresh = await run({ ...start, ...update }, frames.slice(UPDATE_AT));
  await assertDiffers(updated, await neverUpdated(start, frames), Object.keys(update).join(', '));
  const later = updated.outputs.slice(UPDATE_AT);
  assert.equal(later.length, fresh.outputs.length);
  for (const [i, out] of later.entries()) {
    const twin = fresh.outputs[i]!;
    assert.equal(out.meta.input_id, twin.meta.input_id! + UPDATE_AT, 'the same lag as a fresh stream (re-primed)');
    assert.deepEqual([out.meta['width'], out.meta['height']], [twin.meta['width'], twin.meta['height']]);
    assert.ok(out.bytes.equals(twin.bytes), `output ${i} after the update differs from a fresh stream by ${(await pixelDifference(out.bytes, twin.bytes)).toFixed(2)}`);
  }
  return updated;
}

test('prompt', () => checkInFlight(BASE, { prompt: 'a small yellow triangle at the top on a black background' }));

test('prompt_blend', () =>
  checkInFlight(
    { ...BASE, prompt: [{ text: 'a large red circle in the centre on a blue background', weight: 1 }, { text: 'a small white square on the left on a green background', weight: 1 }] },
    { prompt_blend: 'slerp' },
  ));

test('negative_prompt', () => checkInFlight({ ...BASE, guidance: 'full', guidance_scale: 2 }, { negative_prompt: 'a red circle' }));

test('guidance', () => checkInFlight(BASE, { guidance: 'full' }));

test('guidance_scale', () => checkInFlight(BASE, { guidance_scale: 2.5 }));

test('delta', () => checkInFlight(BASE, { delta: 0.4 }));

test('seed', () => checkInFlight(BASE, { seed: 12345 }));

test('seed blend', () => checkInFlight(BASE, { seed: [{ seed: 7, weight: 1 }, { seed: 99, weight: 1 }] }));

test('budget', () => checkInFlight(BASE, { budget: 0.5 }));

test('expert', () => checkInFlight(BASE, { expert: 'expert_060' }));

test('adapters', () => checkInFlight(BASE, { adapters: [{ name: 'heart', weight: 1 }] }));

test('fit', () => checkInFlight({ ...BASE, width: 128, height: 128 }, { fit: 'pad' }, WIDE));

test('steps', async () => void (await checkReprimed(BASE, { steps: 3 })));

test('strength', async () => void (await checkReprimed(BASE, { strength: 0.85 })));

test('t_index_list', async () => void (await checkReprimed(BASE, { t_index_list: [15, 30, 40] })));

test('width', async () => {
  const r = await checkReprimed(BASE, { width: 96 });
  assert.deepEqual([r.outputs.at(-1)!.meta['width'], r.outputs.at(-1)!.meta['height']], [96, 96], 'the other side follows the input aspect (1:1)');
});

test('height', async () => {
  const r = await checkReprimed({ ...BASE, width: 128 }, { height: 64 });
  assert.deepEqual([r.outputs.at(-1)!.meta['width'], r.outputs.at(-1)!.meta['height']], [128, 64]);
});

test('aspect', async () => {
  const r = await checkReprimed(BASE, { aspect: 16 / 9 });
  assert.deepEqual([r.outputs.at(-1)!.meta['width'], r.outputs.at(-1)!.meta['height']], [160, 96]);
});

/** Skipped flags after the first processed output (the filter's steady pattern on a still input). */
function pattern(outputs: readonly ReceivedFrame[]): boolean[] {
  const first = outputs.findIndex((o) => !o.meta.skipped);
  return outputs.slice(first + 1).map((o) => o.meta.skipped);
}

/** A filter setting on a still input: after the update, the skip pattern of a fresh stream with the new value. */
async function checkFilter(start: Params, update: Params): Promise<void> {
  const still = new Array<Buffer>(UPDATE_AT + 12).fill(MOVING[0]!);
  const updated = await run(start, still, update);
  const unchanged = await run(start, still);
  const fresh = await run({ ...start, ...update }, still.slice(UPDATE_AT));
  const later = pattern(updated.outputs.slice(UPDATE_AT));
  const expected = pattern(fresh.outputs).slice(0, later.length);
  assert.deepEqual(later, expected, 'the skip pattern of a fresh stream with the new value');
  assert.notDeepEqual(pattern(unchanged.outputs.slice(UPDATE_AT)).slice(0, later.length), later, 'and not the never-updated one');
  for (const [i, out] of updated.outputs.entries()) {
    if (out.meta.skipped) assert.ok(out.bytes.equals(updated.outputs[i - 1]!.bytes), 'a skipped output repeats the previous one');
  }
}

test('similarity_threshold', () => checkFilter({ ...BASE, max_skip_frames: 3 }, { similarity_threshold: 0.9 }));

test('max_skip_frames', () => checkFilter({ ...BASE, similarity_threshold: 0.9, max_skip_frames: 2 }, { max_skip_frames: 5 }));

test('frame_buffer_size is not live: a live stream takes one frame per call, and says so', async () => {
  const client = await StreamClient.connect(server.url, { params: BASE });
  client.send({ type: 'update', params: { frame_buffer_size: 2 } });
  await client.until(() => client.errors.length === 1);
  assert.equal(client.errors[0]!['field'], 'frame_buffer_size');
  await client.close();
});
