/**
 * The bad-input catalogue, WebSocket and HTTP sides: every case gets a clear error, the server stays up,
 * and a witness stream opened first keeps producing frames through all of them.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer, type RunningServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { gifImage, pngBomb, tiffImage } from '../helpers/bad-images.ts';

const MAX_FRAME = 200_000;
let server: RunningServer;
let witness: StreamClient;
let good: Buffer;

before(async () => {
  server = await startServer({ port: 0, maxFrameBytes: MAX_FRAME, maxStreams: 6, maxStreamsPerClient: 6, rateLimitPerMinute: 0 }, { engine: await Engine.load(BASE_PACK) });
  good = await shapeFrame();
  witness = await StreamClient.connect(server.url, { params: { steps: 1, similarity_threshold: 1 } });
  await witness.roundTrip(good);
});

after(async () => {
  // the witness stream survived every case
  const frame = await witness.roundTrip(await shapeFrame({ x: 50 }));
  assert.equal(frame.meta.skipped, false);
  await witness.close();
  await server.close();
});

async function frameError(bytes: Buffer): Promise<Record<string, unknown>> {
  const client = await StreamClient.connect(server.url, { params: { steps: 1, similarity_threshold: 1 } });
  try {
    client.sendFrame(bytes);
    await client.until(() => client.errors.length > 0);
    const error = client.errors[0]!;
    // the stream goes on after the bad frame
    const next = await client.roundTrip(good);
    assert.equal(next.meta.input_id, 2);
    return error;
  } finally {
    await client.close();
  }
}

async function messageError(start: Record<string, unknown>, message: unknown): Promise<Record<string, unknown>> {
  const client = await StreamClient.connect(server.url, start);
  try {
    client.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
    await client.until(() => client.errors.length > 0);
    return client.errors[0]!;
  } finally {
    await client.close();
  }
}

/** Opens a raw socket, sends `first`, and returns the close code and any error message. */
async function rawSession(first: string | Buffer, url = server.url): Promise<{ code: number; error: Record<string, unknown> | undefined }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/stream');
  let error: Record<string, unknown> | undefined;
  ws.on('message', (d, bin) => {
    if (!bin) {
      const m = JSON.parse(d.toString()) as Record<string, unknown>;
      if (m['type'] === 'error') error ??= m;
    }
  });
  await new Promise((ok, fail) => {
    ws.once('open', ok);
    ws.once('error', fail);
  });
  ws.send(first);
  const code = await new Promise<number>((ok) => ws.once('close', (c) => ok(c)));
  return { code, error };
}

// --- frames ---------------------------------------------------------------------------------------

test('WS 1: corrupt JPEG bytes -> bad_image for that frame only', async () => {
  const e = await frameError(Buffer.from('\xff\xd8\xff\xe0 this is not really a jpeg', 'latin1'));
  assert.equal(e['code'], 'bad_image');
  assert.equal(e['input_id'], 1);
});

test('WS 2: a truncated JPEG -> bad_image', async () => {
  assert.equal((await frameError(good.subarray(0, Math.floor(good.length / 3))))['code'], 'bad_image');
});

test('WS 3: a 0-byte frame -> bad_image naming 0 bytes', async () => {
  const e = await frameError(Buffer.alloc(0));
  assert.equal(e['code'], 'bad_image');
  assert.match(String(e['message']), /0 bytes/);
});

test('WS 4: a PNG header claiming 50000x50000 pixels -> too_large before decoding', async () => {
  const e = await frameError(pngBomb());
  assert.equal(e['code'], 'too_large');
  assert.match(String(e['message']), /50000x50000/);
});

test('WS 5: a GIF frame -> unsupported format', async () => {
  const e = await frameError(await gifImage());
  assert.equal(e['code'], 'bad_image');
  assert.match(String(e['message']), /unsupported image format gif/);
});

test('WS 6: a TIFF frame -> unsupported format', async () => {
  assert.match(String((await frameError(await tiffImage()))['message']), /unsupported image format tiff/);
});

test('WS 7: a frame over the size limit -> too_large, the stream continues', async () => {
  const e = await frameError(Buffer.alloc(MAX_FRAME + 1, 1));
  assert.equal(e['code'], 'too_large');
});

test('WS 8: a message far over the limit closes only that socket with 1009', async () => {
  const client = await StreamClient.connect(server.url, { params: {} });
  const closed = new Promise<number>((ok) => client.ws.once('close', (c) => ok(c)));
  client.sendFrame(Buffer.alloc(MAX_FRAME * 5, 1));
  assert.equal(await closed, 1009);
});

// --- messages -------------------------------------------------------------------------------------

test('WS 9: invalid JSON -> bad_request', async () => {
  const e = await messageError({ params: {} }, '{"type": "update", ');
  assert.equal(e['code'], 'bad_request');
  assert.match(String(e['message']), /not valid JSON/);
});

test('WS 10: an unknown message type -> bad_request naming type', async () => {
  const e = await messageError({ params: {} }, { type: 'explode' });
  assert.equal(e['field'], 'type');
});

test('WS 11: a start with an unknown parameter -> error naming it, close 4400', async () => {
  const r = await rawSession(JSON.stringify({ type: 'start', params: { promt: 'typo' } }));
  assert.equal(r.code, 4400);
  assert.match(String(r.error?.['message']), /unknown field\(s\): promt/);
});

test('WS 12: a start with a wrong type -> error naming the field', async () => {
  const r = await rawSession(JSON.stringify({ type: 'start', params: { steps: 'two' } }));
  assert.equal(r.error?.['field'], 'steps');
});

test('WS 13: an out-of-range update -> error naming the field, parameters unchanged', async () => {
  const client = await StreamClient.connect(server.url, { params: { strength: 0.4 } });
  client.send({ type: 'update', params: { strength: 7, prompt: 'changed' } });
  await client.until(() => client.errors.length > 0);
  assert.equal(client.errors[0]!['field'], 'strength');
  client.send({ type: 'update', params: {} });
  await client.until(() => client.messages.some((m) => m['type'] === 'updated'));
  const params = client.messages.find((m) => m['type'] === 'updated')!['params'] as Record<string, unknown>;
  assert.equal(params['strength'], 0.4);
  assert.equal(params['prompt'], '');
  await client.close();
});

test('WS 14: a binary frame before start -> bad_request', async () => {
  const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/v1/stream');
  await new Promise((ok) => ws.once('open', ok));
  const msg = new Promise<Record<string, unknown>>((ok) => ws.once('message', (d) => ok(JSON.parse(d.toString()) as Record<string, unknown>)));
  ws.send(good);
  assert.match(String((await msg)['message']), /start message before frames/);
  ws.close();
});

test('WS 15: a 100k-character prompt -> bad_request naming prompt', async () => {
  const e = await messageError({ params: {} }, { type: 'update', params: { prompt: 'a'.repeat(100_000) } });
  assert.equal(e['field'], 'prompt');
});

test('WS 16: invalid UTF-8 in a text message closes that socket with 1007', async () => {
  const client = await StreamClient.connect(server.url, { params: {} });
  const closed = new Promise<number>((ok) => client.ws.once('close', (c) => ok(c)));
  client.ws.send(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]), { binary: false });
  assert.equal(await closed, 1007);
});

test('WS 17: an unknown adapter -> not_found naming adapters', async () => {
  const e = await messageError({ params: {} }, { type: 'update', params: { adapters: [{ name: 'nosuchthing', weight: 1 }] } });
  assert.equal(e['code'], 'not_found');
  assert.equal(e['field'], 'adapters');
});

test('WS 18: an unknown expert -> not_found naming expert', async () => {
  const e = await messageError({ params: {} }, { type: 'update', params: { expert: 'giant' } });
  assert.equal(e['code'], 'not_found');
  assert.equal(e['field'], 'expert');
});

test('WS 19: path traversal in an adapter name -> bad_request', async () => {
  const e = await messageError({ params: {} }, { type: 'update', params: { adapters: [{ name: '../../etc/passwd', weight: 1 }] } });
  assert.equal(e['code'], 'bad_request');
  assert.equal(e['field'], 'adapters.0.name');
});

test('WS 20: a second start on one socket -> conflict', async () => {
  assert.equal((await messageError({ params: {} }, { type: 'start', params: {} }))['code'], 'conflict');
});

test('WS 21: more streams than the server allows -> rate_limited and close 1013', async () => {
  const open = await Promise.all([1, 2, 3, 4].map(() => StreamClient.connect(server.url, { params: {} }))); // + witness = 5
  const sixth = await StreamClient.connect(server.url, { params: {} });
  const r = await rawSession(JSON.stringify({ type: 'start', params: {} }));
  assert.equal(r.code, 1013);
  assert.equal(r.error?.['code'], 'rate_limited');
  await Promise.all([...open, sixth].map((c) => c.close()));
});

test('WS 22: an upgrade on an unknown path is refused with 404', async () => {
  const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/v1/elsewhere');
  const status = await new Promise<number>((ok) => ws.once('unexpected-response', (_req, res) => ok(res.statusCode ?? 0)));
  assert.equal(status, 404);
});

test('WS 23: frame_buffer_size > 1 on a live stream -> bad_request naming the field', async () => {
  const e = await messageError({ params: {} }, { type: 'update', params: { frame_buffer_size: 2 } });
  assert.equal(e['field'], 'frame_buffer_size');
  const r = await rawSession(JSON.stringify({ type: 'start', params: { frame_buffer_size: 3 } }));
  assert.equal(r.error?.['field'], 'frame_buffer_size');
});

// --- HTTP -----------------------------------------------------------------------------------------

async function json(path: string, init?: RequestInit): Promise<{ status: number; body: { error?: { code: string; message: string; field?: string } } }> {
  const res = await fetch(`${server.url}${path}`, init);
  return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string; field?: string } } };
}

test('HTTP 23: an unknown route -> 404 with a JSON error', async () => {
  const r = await json('/v1/nothing-here');
  assert.equal(r.status, 404);
  assert.equal(r.body.error?.code, 'not_found');
});

test('HTTP 24: invalid JSON in a body -> 400 naming the problem', async () => {
  const r = await json('/v1/streams/x/push', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"url": ' });
  assert.equal(r.status, 400);
  assert.match(r.body.error!.message, /invalid JSON body/);
});

test('HTTP 25: the MJPEG URL of an unknown stream -> 404', async () => {
  assert.equal((await json('/v1/streams/00000000-0000-0000-0000-000000000000/mjpeg')).status, 404);
});

test('HTTP 26: path traversal in a stream id -> 404, nothing read', async () => {
  const r = await fetch(`${server.url}/v1/streams/..%2F..%2Fpackage.json/snapshot`);
  assert.equal(r.status, 404);
});

test('HTTP 27: path traversal in a static path -> 404', async () => {
  const r = await fetch(`${server.url}/..%2f..%2fpackage.json`);
  assert.equal(r.status, 404);
  assert.ok(!(await r.text()).includes('"dependencies"'));
});

test('HTTP 28: a JSON body over the size limit -> 413', async () => {
  const r = await json('/v1/streams/x/push', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: 'x'.repeat(51 * 1024 * 1024) }) });
  assert.equal(r.status, 413);
  assert.equal(r.body.error?.code, 'too_large');
});

test('HTTP 29: a push URL of another scheme -> 400 naming url', async () => {
  const r = await json(`/v1/streams/${witness.streamId}/push`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: 'http://example.com/' }) });
  assert.equal(r.status, 400);
  assert.equal(r.body.error?.field, 'url');
});

test('HTTP 30: the server still answers health after all of it', async () => {
  const r = await fetch(`${server.url}/health`);
  assert.equal(r.status, 200);
});
