/**
 * The bad-input catalogue, WebSocket and HTTP sides: every case gets a clear error, the server stays up,
 * and a witness stream opened first keeps producing frames through all of them. The server is `npm start`'s:
 * streams, the batch API and the job queue.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, readdir, utimes, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { startServer, type RunningServer } from '../../server/app.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { loadConfig } from '../../server/config.ts';
import { createLogger } from '../../server/log.ts';
import { MAX_CONTROL_BYTES } from '../../server/streams/protocol.ts';
import { MAX_WAITING_UPDATES } from '../../server/streams/session.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { gifImage, pngBomb, tiffImage } from '../helpers/bad-images.ts';
import { rawRequest, upgradeStatus } from '../helpers/raw-http.ts';

const MAX_FRAME = 200_000;
/** Latent area all streams may use: a 1024x1024 stream (128 x 128 latents) does not fit, 512x512 (64 x 64) does. */
const MAX_AREA = 8192;
const START_TIMEOUT_MS = 1500;
let server: RunningServer;
let witness: StreamClient;
let good: Buffer;

before(async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'bad-input-'));
  server = await startServer(
    {
      port: 0,
      dataDir,
      maxFrameBytes: MAX_FRAME,
      maxStreams: 6,
      maxStreamsPerClient: 6,
      rateLimitPerMinute: 0,
      maxLatentArea: MAX_AREA,
      maxPendingSocketsPerClient: 3,
      startTimeoutMs: START_TIMEOUT_MS,
      maxQueuedJobsPerClient: 3,
    },
    { engine: await Engine.load(BASE_PACK), extensions: [(ctx) => createBatchApi(ctx)] },
  );
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
  const code = await new Promise<number>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`the socket is still open after 60 s (error: ${JSON.stringify(error)})`)), 60_000);
    ws.once('close', (c) => {
      clearTimeout(timer);
      ok(c);
    });
  });
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

test('WS 15: a 10k-character prompt -> bad_request naming prompt; a 100k one is over the message limit -> too_large', async () => {
  const e = await messageError({ params: {} }, { type: 'update', params: { prompt: 'a'.repeat(10_000) } });
  assert.equal(e['field'], 'prompt');
  const big = await messageError({ params: {} }, { type: 'update', params: { prompt: 'a'.repeat(100_000) } });
  assert.equal(big['code'], 'too_large');
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

test('WS 24: a text message over the limit before start -> too_large and close 1009, without parsing it (health stays quick)', async () => {
  const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/v1/stream');
  await new Promise((ok) => ws.once('open', ok));
  const error = new Promise<Record<string, unknown>>((ok) => ws.once('message', (d) => ok(JSON.parse(d.toString()) as Record<string, unknown>)));
  const closed = new Promise<number>((ok) => ws.once('close', (c) => ok(c)));
  ws.send(JSON.stringify({ type: 'start', params: { prompt: 'x'.repeat(500_000) } })); // under ws's own cut-off (4x the frame limit)
  assert.equal((await error)['code'], 'too_large');
  assert.match(String((await error)['message']), new RegExp(`at most ${MAX_CONTROL_BYTES} bytes`));
  assert.equal(await closed, 1009);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('WS 25: a text message over the limit after start -> too_large, the stream goes on', async () => {
  const client = await StreamClient.connect(server.url, { params: { steps: 1 } });
  client.ws.send('{"type": "update", "params": {"negative_prompt": "' + 'y'.repeat(MAX_CONTROL_BYTES) + '"}}');
  await client.until(() => client.errors.length > 0);
  assert.equal(client.errors[0]!['code'], 'too_large');
  assert.equal((await client.roundTrip(good)).meta.input_id, 1);
  await client.close();
});

test('WS 33: a text message over the limit sent while the stream opens -> too_large, not held for later; the stream opens and runs', async () => {
  const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/v1/stream');
  await new Promise((ok) => ws.once('open', ok));
  const messages: Record<string, unknown>[] = [];
  ws.on('message', (d, binary) => {
    if (!binary) messages.push(JSON.parse(d.toString()) as Record<string, unknown>);
  });
  const until = async (predicate: () => boolean) => {
    for (let i = 0; i < 600 && !predicate(); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(predicate(), JSON.stringify(messages));
  };
  // back to back: the second arrives while the first opens the stream
  ws.send(JSON.stringify({ type: 'start', params: { steps: 1 } }));
  ws.send('{"type": "update", "params": {"negative_prompt": "' + 'y'.repeat(MAX_CONTROL_BYTES) + '"}}');
  await until(() => messages.some((m) => m['type'] === 'started') && messages.some((m) => m['type'] === 'error'));
  assert.deepEqual(messages.filter((m) => m['type'] === 'error').map((m) => m['code']), ['too_large']);
  assert.ok(messages.findIndex((m) => m['type'] === 'error') < messages.findIndex((m) => m['type'] === 'started'), 'refused on arrival, not replayed after started');
  ws.send(good);
  await until(() => messages.some((m) => m['type'] === 'frame'));
  assert.equal(ws.readyState, WebSocket.OPEN);
  ws.close();
});

test('WS 26: more sockets without start than a client may have -> 429 with Retry-After on the upgrade', async () => {
  const idle = await Promise.all([1, 2, 3].map(async () => {
    const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/v1/stream');
    await new Promise((ok) => ws.once('open', ok));
    return ws;
  }));
  const refused = await upgradeStatus(server.url, '/v1/stream', {});
  assert.equal(refused.status, 429);
  assert.ok(Number(refused.headers['retry-after']) > 0);
  assert.match(refused.body, /have not sent start/);
  await Promise.all(idle.map((ws) => new Promise((ok) => {
    ws.once('close', ok);
    ws.close();
  })));
});

test('WS 27: a socket that never sends start is closed with 4400 after the start timeout', async () => {
  const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/v1/stream');
  const opened = Date.now();
  await new Promise((ok) => ws.once('open', ok));
  const code = await new Promise<number>((ok) => ws.once('close', (c) => ok(c)));
  assert.equal(code, 4400);
  assert.ok(Date.now() - opened >= START_TIMEOUT_MS - 100);
});

test('WS 28: seed weights that are all zero -> bad_request naming seed (start and update)', async () => {
  const r = await rawSession(JSON.stringify({ type: 'start', params: { seed: [{ seed: 1, weight: 0 }, { seed: 2, weight: 0 }] } }));
  assert.equal(r.code, 4400);
  assert.equal(r.error?.['code'], 'bad_request');
  assert.equal(r.error?.['field'], 'seed');
  assert.match(String(r.error?.['message']), /weights must not all be 0/);
  const e = await messageError({ params: {} }, { type: 'update', params: { seed: [{ seed: 5, weight: 0 }] } });
  assert.equal(e['field'], 'seed');
});

test('WS 29: seed weights that underflow when squared (1e-200) blend like any other weights: as 1 and 3 do', async () => {
  const frames: Buffer[] = [];
  for (const scale of [1e-200, 1]) {
    const client = await StreamClient.connect(server.url, { params: { steps: 1, similarity_threshold: 1, seed: [{ seed: 1, weight: scale }, { seed: 2, weight: 3 * scale }] } });
    frames.push((await client.roundTrip(good)).bytes);
    assert.deepEqual(client.errors, []);
    await client.close();
  }
  assert.ok(frames[0]!.equals(frames[1]!), 'only the ratio of the weights matters');
});

test('WS 30: prompt weights that are all zero -> bad_request naming prompt when the stream starts', async () => {
  const r = await rawSession(JSON.stringify({ type: 'start', params: { prompt: [{ text: 'a red circle', weight: 0 }] } }));
  assert.equal(r.error?.['field'], 'prompt');
  assert.match(String(r.error?.['message']), /weights must not all be 0/);
});

test('WS 31: a stream over the server\'s latent area -> rate_limited, close 1013; a resize over it -> error, the stream keeps its size', async () => {
  const r = await rawSession(JSON.stringify({ type: 'start', params: { width: 1024, height: 1024 } }));
  assert.equal(r.code, 1013);
  assert.equal(r.error?.['code'], 'rate_limited');
  assert.match(String(r.error?.['message']), new RegExp(`this stream needs 16384 latent pixels and the server's streams already use \\d+ of ${MAX_AREA}`));
  const client = await StreamClient.connect(server.url, { params: { steps: 1, width: 256, height: 256 } });
  client.send({ type: 'update', params: { width: 1024, height: 1024 } });
  await client.until(() => client.errors.length > 0);
  assert.equal(client.errors[0]!['code'], 'rate_limited');
  client.send({ type: 'update', params: {} });
  await client.until(() => client.messages.some((m) => m['type'] === 'updated'));
  assert.equal((client.messages.find((m) => m['type'] === 'updated')!['params'] as Record<string, unknown>)['width'], 256);
  await client.close();
});

test('WS 32: more updates waiting than a stream may have -> rate_limited for the extra ones, the others apply', async () => {
  const client = await StreamClient.connect(server.url, { params: { steps: 1 } });
  for (let i = 0; i < MAX_WAITING_UPDATES + 4; i++) client.send({ type: 'update', params: { prompt: `p${i}` } });
  await client.until(() => client.messages.filter((m) => m['type'] === 'updated' || m['type'] === 'error').length >= MAX_WAITING_UPDATES + 4);
  assert.ok(client.errors.length > 0 && client.errors.every((e) => e['code'] === 'rate_limited'), JSON.stringify(client.errors));
  assert.ok(client.messages.filter((m) => m['type'] === 'updated').length >= MAX_WAITING_UPDATES);
  await client.close();
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

/** A multipart body cut off inside its file part (`field` names the file field). */
const truncatedForm = (field: string) => `--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--b\r\nContent-Disposition: form-data; name="${field}"; filename="f.bin"\r\nContent-Type: application/octet-stream\r\n\r\nnot the end`;

test('HTTP 31: a truncated or malformed multipart body -> 400 naming it (jobs and image edits)', async () => {
  for (const [path, field] of [['/v1/jobs', 'video'], ['/v1/images/edits', 'image']] as const) {
    const truncated = await rawRequest(server.url, { method: 'POST', path, headers: { 'content-type': 'multipart/form-data; boundary=b' }, body: truncatedForm(field) });
    assert.equal(truncated.status, 400, `${path}: ${truncated.body}`);
    assert.match(truncated.json.error!.message, /malformed multipart\/form-data body/);
    const garbage = await rawRequest(server.url, { method: 'POST', path, headers: { 'content-type': 'multipart/form-data; boundary=b' }, body: 'garbage without parts' });
    assert.equal(garbage.status, 400, `${path}: ${garbage.body}`);
  }
});

test('HTTP 32: a job with seed or prompt weights that are all zero -> 400 at submission, not a job that fails later', async () => {
  for (const [field, value] of [['seed', [{ seed: 1, weight: 0 }]], ['prompt', [{ text: 'x', weight: 0 }]]] as const) {
    const r = await fetch(`${server.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'images', width: 64, height: 64, steps: 1, [field]: value }) });
    assert.equal(r.status, 400, field);
    assert.equal(((await r.json()) as { error: { field: string } }).error.field, field);
  }
  const tiny = await fetch(`${server.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'images', width: 64, height: 64, steps: 1, seed: [{ seed: 1, weight: 1e-200 }] }) });
  assert.equal(tiny.status, 201);
  const id = ((await tiny.json()) as { id: string }).id;
  for (let i = 0; i < 400; i++) {
    const job = (await (await fetch(`${server.url}/v1/jobs/${id}`)).json()) as { status: string; error: unknown };
    if (job.status === 'succeeded') break;
    assert.ok(job.status !== 'failed', JSON.stringify(job.error));
    await new Promise((r) => setTimeout(r, 50));
  }
});

test('HTTP 33: a push URL that would make ffmpeg listen (srt mode=listener) -> 400 naming url', async () => {
  for (const url of ['srt://0.0.0.0:9000?mode=listener', 'srt://host:9000?mode=rendezvous', 'rtmp://0.0.0.0/live/x?listen=1']) {
    const r = await fetch(`${server.url}/v1/streams/${witness.streamId}/push`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url }) });
    assert.equal(r.status, 400, url);
    const body = (await r.json()) as { error: { field: string; message: string } };
    assert.equal(body.error.field, 'url');
    assert.match(body.error.message, /listen/);
  }
});

test('HTTP 34: more queued jobs than a client may have -> 429 with Retry-After; GET /v1/jobs is paged', async () => {
  const submit = () => fetch(`${server.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'images', count: 1000, width: 256, height: 256, steps: 4 }) });
  const ids: string[] = [];
  let refused: Response | undefined;
  for (let i = 0; i < 6 && !refused; i++) {
    const r = await submit();
    if (r.status === 429) refused = r;
    else ids.push(((await r.json()) as { id: string }).id);
  }
  assert.ok(refused, 'the fourth job of a client is refused');
  assert.ok(ids.length <= 3);
  assert.ok(Number(refused.headers.get('retry-after')) > 0);
  assert.match(((await refused.json()) as { error: { message: string } }).error.message, /already has 3 jobs queued or running/);
  const page = (await (await fetch(`${server.url}/v1/jobs?limit=1`)).json()) as { jobs: { id: string }[]; next_cursor: string | null };
  assert.equal(page.jobs.length, 1);
  assert.ok(page.next_cursor);
  const rest = (await (await fetch(`${server.url}/v1/jobs?limit=100&cursor=${page.next_cursor}`)).json()) as { jobs: { id: string }[]; next_cursor: string | null };
  assert.ok(!rest.jobs.some((j) => j.id === page.jobs[0]!.id));
  assert.equal(rest.next_cursor, null);
  for (const bad of ['limit=0', 'limit=101', 'limit=x', 'cursor=nonsense', 'status=weird', 'other=1']) {
    assert.equal((await fetch(`${server.url}/v1/jobs?${bad}`)).status, 400, bad);
  }
  for (const id of ids) await fetch(`${server.url}/v1/jobs/${id}`, { method: 'DELETE' });
});

test('HTTP 35: a webhook URL with user:password@ -> the credentials are never echoed (job view, errors)', async () => {
  const closed = createServer();
  await new Promise<void>((ok) => closed.listen(0, '127.0.0.1', ok));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((ok) => closed.close(ok)); // nothing listens there: the delivery fails
  const r = await fetch(`${server.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'images', width: 64, height: 64, steps: 1, webhook: `http://hook-user:s3cret-pw@127.0.0.1:${port}/hook` }) });
  assert.equal(r.status, 201);
  const created = await r.text();
  assert.ok(!created.includes('s3cret-pw'));
  const id = (JSON.parse(created) as { id: string }).id;
  let view = '';
  for (let i = 0; i < 600; i++) {
    view = await (await fetch(`${server.url}/v1/jobs/${id}`)).text();
    if ((JSON.parse(view) as { webhook: { status: string } }).webhook.status !== 'pending') break;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  assert.equal((JSON.parse(view) as { webhook: { status: string } }).webhook.status, 'failed');
  assert.ok(!view.includes('s3cret-pw'), view);
  assert.ok(!(await (await fetch(`${server.url}/v1/jobs`)).text()).includes('s3cret-pw'));
});

test('HTTP 36: a request with a foreign Host (DNS rebinding) or a cross-site form post -> 403, nothing done', async () => {
  const host = await rawRequest(server.url, { path: '/v1/jobs', headers: { host: `evil.example:${server.port}` } });
  assert.equal(host.status, 403);
  const before = ((await (await fetch(`${server.url}/v1/jobs?limit=100`)).json()) as { jobs: unknown[] }).jobs.length;
  const form = '--b\r\nContent-Disposition: form-data; name="kind"\r\n\r\nimages\r\n--b\r\nContent-Disposition: form-data; name="count"\r\n\r\n1000\r\n--b--\r\n';
  const post = await rawRequest(server.url, { method: 'POST', path: '/v1/jobs', headers: { origin: 'https://attacker.example', 'content-type': 'multipart/form-data; boundary=b' }, body: form });
  assert.equal(post.status, 403);
  assert.equal(((await (await fetch(`${server.url}/v1/jobs?limit=100`)).json()) as { jobs: unknown[] }).jobs.length, before);
});

test('HTTP 37: keys: failed logins are rate-limited (429, Retry-After, even for the right key); ?token= only where the README says', async () => {
  const key = 'catalogue-key-123';
  const keyed = await startServer({ port: 0, apiKey: key, authFailuresPerMinute: 5 }, { engine: server.ctx.engine });
  try {
    assert.equal((await fetch(`${keyed.url}/v1/streams?token=${key}`)).status, 401, '?token= is not accepted on an API route');
    assert.equal((await fetch(`${keyed.url}/metrics?token=${key}`)).status, 401);
    // two failures above (a token where none is taken), three guesses here: the fifth failure locks the client out
    for (let i = 0; i < 3; i++) assert.equal((await fetch(`${keyed.url}/v1/streams`, { headers: { authorization: `Bearer guess-${i}` } })).status, 401);
    const locked = await fetch(`${keyed.url}/v1/streams`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(locked.status, 429);
    assert.ok(Number(locked.headers.get('retry-after')) > 0);
  } finally {
    await keyed.close();
  }
});

test('HTTP 38: a key of one character or of whitespace is refused for a non-loopback bind', async () => {
  for (const apiKey of ['k', '  ', 'short key with spaces']) {
    await assert.rejects(startServer({ port: 0, host: '0.0.0.0', apiKey }, { engine: server.ctx.engine }), /API key/);
  }
  assert.throws(() => loadConfig(['--host', '0.0.0.0', '--api-key', 'x'], {}), /at least 16/);
});

test('HTTP 39: job folders without job.json are deleted once at start, not logged at every start', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'orphans-'));
  const orphans = ['00000000-0000-4000-8000-00000000000a', '00000000-0000-4000-8000-00000000000b'];
  for (const id of orphans) {
    await mkdir(join(dataDir, 'jobs', id), { recursive: true });
    await writeFile(join(dataDir, 'jobs', id, 'input-image.bin'), 'x');
    await utimes(join(dataDir, 'jobs', id), new Date(performance.timeOrigin - 60_000), new Date(performance.timeOrigin - 60_000));
  }
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  for (let run = 0; run < 2; run++) {
    const s = await startServer({ port: 0, dataDir }, { engine: server.ctx.engine, log: createLogger({}, 'info', sink), extensions: [(ctx) => createBatchApi(ctx)] });
    await s.close();
  }
  assert.deepEqual(await readdir(join(dataDir, 'jobs')), []);
  assert.equal(lines.filter((l) => l.includes('job folder')).length, orphans.length, 'one line per folder, the first start only');
});

test('HTTP 30: the server still answers health after all of it', async () => {
  const r = await fetch(`${server.url}/health`);
  assert.equal(r.status, 200);
});
