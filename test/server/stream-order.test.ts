/**
 * Messages are processed in the order they arrive (server/PROTOCOL.md): frames sent right after `start`,
 * before `started`, wait for the stream (latest-frame-wins) instead of being refused, and a frame sent right
 * after an `update` is rendered with the update. A raw `ws` client sends back to back, as a program would.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';

const server = await startServer({ port: 0, maxStreams: 4 }, { engine: await Engine.load(BASE_PACK) });
after(() => server.close());
const frames = await Promise.all([0, 1, 2, 3].map((i) => shapeFrame({ x: 30 + i * 16 })));

type Message = Record<string, unknown> & { type: string };

/** Opens a socket and sends `messages` (objects as JSON, Buffers as binary frames) back to back. */
async function sendAll(messages: readonly (object | Buffer)[]): Promise<{ ws: WebSocket; received: (Message | Buffer)[]; until: (p: () => boolean) => Promise<void> }> {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream`);
  const received: (Message | Buffer)[] = [];
  ws.on('message', (data, isBinary) => received.push(isBinary ? (data as Buffer) : (JSON.parse(data.toString()) as Message)));
  await new Promise((ok, fail) => ws.once('open', ok).once('error', fail));
  for (const m of messages) ws.send(Buffer.isBuffer(m) ? m : JSON.stringify(m), { binary: Buffer.isBuffer(m) });
  const until = async (p: () => boolean) => {
    const deadline = Date.now() + 20_000;
    while (!p()) {
      if (Date.now() > deadline) throw new Error(`timed out; received ${JSON.stringify(received.filter((m) => !Buffer.isBuffer(m)))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { ws, received, until };
}

const json = (received: readonly (Message | Buffer)[]) => received.filter((m): m is Message => !Buffer.isBuffer(m));

test('start then a frame back to back, 20 times: the frame waits for the stream and is answered', async () => {
  for (let i = 0; i < 20; i++) {
    const { ws, received, until } = await sendAll([{ type: 'start', params: { steps: 1, seed: i } }, frames[i % frames.length]!]);
    await until(() => json(received).some((m) => m.type === 'frame' || m.type === 'error'));
    const messages = json(received);
    assert.deepEqual(messages.filter((m) => m.type === 'error'), [], `try ${i + 1}`);
    assert.equal(messages[0]!.type, 'started', 'started comes first');
    const frame = messages.find((m) => m.type === 'frame')!;
    assert.equal(frame['input_id'], 1);
    ws.close();
  }
});

test('frames sent before started: only the latest waits; the others count as dropped', async () => {
  const { ws, received, until } = await sendAll([{ type: 'start', params: { steps: 1 } }, frames[0]!, frames[1]!, frames[2]!]);
  await until(() => json(received).some((m) => m.type === 'frame'));
  const id = (json(received).find((m) => m.type === 'started')!['stream_id']) as string;
  assert.equal(json(received).find((m) => m.type === 'frame')!['input_id'], 3, 'the newest frame is the one processed');
  const stats = server.streams.get(id).stats;
  assert.equal(stats.framesIn, 3);
  assert.equal(stats.droppedInput, 2);
  ws.close();
});

test('an update sent right before a frame applies to that frame', async () => {
  const params = { steps: 1, seed: 3, similarity_threshold: 1 };
  const updated = await sendAll([{ type: 'start', params }]);
  await updated.until(() => json(updated.received).some((m) => m.type === 'started'));
  for (const m of [frames[0]!, JSON.stringify({ type: 'update', params: { seed: 77 } }), frames[1]!]) updated.ws.send(m, { binary: Buffer.isBuffer(m) });
  await updated.until(() => json(updated.received).filter((m) => m.type === 'frame').length === 2);
  const fresh = await StreamClient.connect(server.url, { params: { ...params, seed: 77 } });
  await fresh.roundTrip(frames[0]!);
  const expected = await fresh.roundTrip(frames[1]!);
  const outputs = updated.received.filter((m): m is Buffer => Buffer.isBuffer(m));
  assert.ok(outputs[1]!.equals(expected.bytes), 'the frame after the update is rendered with the new seed');
  const order = json(updated.received).map((m) => m.type);
  assert.deepEqual(order, ['started', 'frame', 'updated', 'frame'], 'answers come in the order of the messages');
  updated.ws.close();
  await fresh.close();
});
