import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { parseParams } from '../../pipelines/params.ts';
import { decodeImage, encodeImage } from '../../pipelines/codecs/image.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';

const engine = await Engine.load(BASE_PACK);
const server = await startServer({ port: 0, maxStreams: 4, maxStreamsPerClient: 3 }, { engine });
after(() => server.close());

const frames = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => shapeFrame({ x: 30 + i * 12 })));

test('frames come back with metadata, lagging by steps - 1', async () => {
  const client = await StreamClient.connect(server.url, { params: { prompt: 'a red circle', steps: 2, similarity_threshold: 1 } });
  const outputs = [];
  for (const f of frames.slice(0, 4)) outputs.push(await client.roundTrip(f));
  assert.deepEqual(outputs.map((o) => o.meta.input_id), [1, 1, 2, 3]);
  const meta = await sharp(outputs[3]!.bytes).metadata();
  assert.equal(meta.format, 'jpeg');
  assert.equal(meta.width, 128);
  assert.ok(outputs.every((o) => o.meta.latency_ms >= 0 && o.meta.skipped === false && o.meta.expert === 'full'));
  await client.close();
});

test('two concurrent streams never mix: each equals its own pipeline run alone', async () => {
  const paramsA = { prompt: 'a red circle', steps: 2, seed: 1, similarity_threshold: 1 };
  const paramsB = { prompt: 'a green square', steps: 2, seed: 2, similarity_threshold: 1, guidance: 'full', guidance_scale: 2 };
  const [a, b] = await Promise.all([StreamClient.connect(server.url, { params: paramsA }), StreamClient.connect(server.url, { params: paramsB })]);
  // interleave frames so rows of both streams share UNet calls
  for (const f of frames) {
    a.sendFrame(f);
    b.sendFrame(f);
    const [na, nb] = [a.frames.length, b.frames.length];
    await Promise.all([a.until(() => a.frames.length > na), b.until(() => b.frames.length > nb)]);
  }
  for (const [client, params] of [[a, paramsA], [b, paramsB]] as const) {
    const alone = await StreamPipeline.create(engine, parseParams(params));
    for (const [i, f] of frames.entries()) {
      const [expected] = await alone.process([(await decodeImage(f, 128, 128)).data]);
      const expectedJpeg = await encodeImage(expected!.image, 128, 128, 'jpeg', 80);
      assert.ok(client.frames[i]!.bytes.equals(expectedJpeg), `stream frame ${i} differs from its pipeline alone`);
    }
  }
  await Promise.all([a.close(), b.close()]);
});

test('a corrupt frame fails alone: an error naming the frame, then the stream goes on', async () => {
  const client = await StreamClient.connect(server.url, { params: { steps: 1 } });
  await client.roundTrip(frames[0]!);
  client.sendFrame(Buffer.from('definitely not a jpeg'));
  await client.until(() => client.errors.length === 1);
  assert.equal(client.errors[0]!['code'], 'bad_image');
  assert.equal(client.errors[0]!['input_id'], 2);
  const next = await client.roundTrip(frames[1]!);
  assert.equal(next.meta.input_id, 3);
  await client.close();
});

test('a live prompt change applies within steps frames with every frame intact', async () => {
  const client = await StreamClient.connect(server.url, { params: { prompt: 'a red circle', steps: 2, similarity_threshold: 1, seed: 2 } });
  for (const f of frames.slice(0, 3)) await client.roundTrip(f);
  client.send({ type: 'update', params: { prompt: 'a yellow triangle', seed: 9 } });
  await client.until(() => client.messages.some((m) => m['type'] === 'updated'));
  const after = [];
  for (const f of frames.slice(3, 6)) after.push(await client.roundTrip(f));
  for (const o of after) assert.equal((await sharp(o.bytes).stats()).channels.length, 3);
  // the reference: a pipeline that had the new prompt from the frame after the update on
  const ref = await StreamPipeline.create(engine, parseParams({ prompt: 'a red circle', steps: 2, similarity_threshold: 1, seed: 2 }));
  for (const f of frames.slice(0, 3)) await ref.process([(await decodeImage(f, 128, 128)).data]);
  await ref.update({ prompt: 'a yellow triangle', seed: 9 });
  for (const [i, f] of frames.slice(3, 6).entries()) {
    const [r] = await ref.process([(await decodeImage(f, 128, 128)).data]);
    assert.ok(after[i]!.bytes.equals(await encodeImage(r!.image, 128, 128, 'jpeg', 80)));
  }
  // a bad update is an error that changes nothing
  client.send({ type: 'update', params: { strength: 7 } });
  await client.until(() => client.errors.length === 1);
  assert.equal(client.errors[0]!['field'], 'strength');
  await client.close();
});

test('a client that stops reading does not make the server queue: one output held, the rest dropped', async () => {
  const client = await StreamClient.connect(server.url, { params: { steps: 1, similarity_threshold: 1 }, window: 1 });
  client.autoAck = false;
  await client.roundTrip(frames[0]!); // uses the only credit
  const heapBefore = process.memoryUsage().heapUsed;
  for (let i = 0; i < 60; i++) client.sendFrame(frames[i % frames.length]!);
  const session = server.streams.get(client.streamId);
  await client.until(() => session.stats.framesIn === 61, 30_000);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(client.frames.length, 1, 'no output without credit');
  assert.ok(session.stats.droppedInput + session.stats.droppedOutput >= 50, JSON.stringify(session.stats));
  assert.ok(process.memoryUsage().heapUsed - heapBefore < 50 * 1024 * 1024);
  client.send({ type: 'ack', frames: 1 });
  await client.until(() => client.frames.length === 2); // the held (newest) output arrives on credit
  await client.close();
});

test('a disconnect frees the stream; the stream limit per client is enforced', async () => {
  const clients = await Promise.all([1, 2, 3].map(() => StreamClient.connect(server.url, { params: {} })));
  assert.equal(server.streams.size, 3);
  await assert.rejects(StreamClient.connect(server.url, { params: {} }), /at most 3 streams per client/);
  await Promise.all(clients.map((c) => c.close()));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(server.streams.size, 0);
});

test('MJPEG output: multipart parts of JPEG frames, and a snapshot', async () => {
  const client = await StreamClient.connect(server.url, { params: { steps: 1 } });
  await client.roundTrip(frames[0]!);
  const res = await fetch(`${server.url}/v1/streams/${client.streamId}/mjpeg`);
  assert.equal(res.headers.get('content-type'), 'multipart/x-mixed-replace;boundary=frame');
  const reader = res.body!.getReader();
  const { value } = await reader.read();
  const head = Buffer.from(value!).subarray(0, 80).toString('latin1');
  assert.match(head, /^--frame\r\nContent-Type: image\/jpeg\r\nContent-Length: \d+\r\n\r\n/);
  await reader.cancel();
  const snap = await fetch(`${server.url}/v1/streams/${client.streamId}/snapshot`);
  assert.equal(snap.headers.get('content-type'), 'image/jpeg');
  assert.equal((await sharp(Buffer.from(await snap.arrayBuffer())).metadata()).format, 'jpeg');
  await client.close();
  assert.equal((await fetch(`${server.url}/v1/streams/nope/snapshot`)).status, 404);
});

test('health and Prometheus metrics', async () => {
  const health = (await (await fetch(`${server.url}/health`)).json()) as Record<string, unknown>;
  assert.equal(health['status'], 'ok');
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  for (const name of ['sd_frames_in_total', 'sd_frame_latency_seconds_bucket', 'sd_unet_batch_rows_bucket', 'sd_frames_dropped_total', 'sd_ssf_skips_total', 'sd_streams_active']) {
    assert.ok(metrics.includes(name), name);
  }
});

test('a stream without a seed gets a random one; started and updated carry notes on what was changed', async () => {
  const a = await StreamClient.connect(server.url, { params: { prompt: 'a red circle', steps: 1, guidance: 'full', guidance_scale: 5 } });
  const b = await StreamClient.connect(server.url, { params: { prompt: 'a red circle', steps: 1 } });
  try {
    const seed = a.started!['params'] as Record<string, unknown>;
    assert.ok(Number.isInteger(seed['seed']) && seed['seed'] !== (b.started!['params'] as Record<string, unknown>)['seed'], 'random seeds, reported');
    assert.match((a.started!['notes'] as string[]).join(), /guidance scale 5 is outside this model's recommended range 1-2: 2 is used/);
    assert.deepEqual(b.started!['notes'], []);
    b.send({ type: 'update', params: { negative_prompt: 'a blue background' } });
    await b.until(() => b.messages.some((m) => m['type'] === 'updated'));
    const updated = b.messages.find((m) => m['type'] === 'updated')!;
    assert.match((updated['notes'] as string[]).join(), /guidance self ignores it, so initialize guidance is used/);
  } finally {
    await a.close();
    await b.close();
  }
});
