/**
 * Stable output URLs for OBS: a stream started with a `name` is watched at /v1/streams/by-name/NAME/mjpeg,
 * which stays valid across stop/start and a server restart and shows a "waiting for NAME" placeholder (a real
 * JPEG, sent continuously) while no stream of that name runs. ffmpeg reads the URL as OBS's Media Source does.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { startServer, type RunningServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { HAVE_FFMPEG } from './batch/helpers.ts';

const KEY = 'names-test-key';
const engine = await Engine.load(BASE_PACK);
const start = (port = 0) => startServer({ port, apiKey: KEY, maxStreams: 4 }, { engine });
let server: RunningServer = await start();
const viewers: ChildProcess[] = [];
after(async () => {
  for (const v of viewers) v.kill('SIGKILL');
  await server.close();
});
const frames = await Promise.all([0, 1, 2, 3].map((i) => shapeFrame({ x: 30 + i * 16 })));
const withKey = (path: string) => `${server.url}${path}${path.includes('?') ? '&' : '?'}token=${KEY}`;

/** Connects with the key on the URL (as a browser must). */
function connect(start: Record<string, unknown>): Promise<StreamClient> {
  return StreamClient.connect(server.url, start, { token: KEY });
}

async function until(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function snapshot(name: string): Promise<{ state: string | null; jpeg: Buffer }> {
  const res = await fetch(withKey(`/v1/streams/by-name/${name}/snapshot`));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/jpeg');
  return { state: res.headers.get('x-stream-state'), jpeg: Buffer.from(await res.arrayBuffer()) };
}

test('a name reserves nothing until used: before any stream its URLs show the waiting placeholder', async () => {
  const { state, jpeg } = await snapshot('studio-cam');
  assert.equal(state, 'waiting');
  const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height], [128, 128], 'the model default size until a stream of that name ran');
  const levels = new Set<number>();
  for (let i = 0; i < data.length; i += 3) levels.add(data[i]! >> 5);
  assert.ok(levels.size >= 3, 'the placeholder has drawn content (sign and text), not a flat frame');
  const other = await snapshot('another-cam');
  assert.ok(!other.jpeg.equals(jpeg), 'it names the stream it waits for');
});

test('the by-name URLs need the API key like every other URL, and a bad name is a 400', async () => {
  assert.equal((await fetch(`${server.url}/v1/streams/by-name/studio-cam/snapshot`)).status, 401);
  const res = await fetch(withKey('/v1/streams/by-name/Not%20A%20Slug/mjpeg'));
  assert.equal(res.status, 400);
  assert.equal(((await res.json()) as { error: { field: string } }).error.field, 'name');
});

test('start with a name: started gives the stable URL paths; a second stream with that name is refused (409, close 4409)', async () => {
  const a = await connect({ name: 'cam-1', params: { steps: 1 } });
  assert.equal(a.started!['name'], 'cam-1');
  assert.equal(a.started!['mjpeg_url'], '/v1/streams/by-name/cam-1/mjpeg');
  assert.equal(a.started!['snapshot_url'], '/v1/streams/by-name/cam-1/snapshot');
  const b = await rawStart({ name: 'cam-1' });
  assert.equal(b.error?.['code'], 'conflict');
  assert.equal(b.error?.['field'], 'name');
  assert.equal(b.closeCode, 4409);
  const info = (await (await fetch(withKey('/v1/streams/by-name/cam-1'))).json()) as Record<string, unknown>;
  assert.deepEqual([info['running'], info['stream_id']], [true, a.streamId]);
  await a.close();
  await until(async () => ((await (await fetch(withKey('/v1/streams/by-name/cam-1'))).json()) as { running: boolean }).running === false, 'the name to be free');
  const c = await connect({ name: 'cam-1' });
  await c.close();
  assert.deepEqual((await rawStart({ name: 'Bad Name' })).error?.['field'], 'name');
});

/** A start over a raw socket with the key: the error and close code it ends with, if it ends. */
async function rawStart(start: Record<string, unknown>): Promise<{ error: Record<string, unknown> | undefined; closeCode: number }> {
  const { default: WebSocket } = await import('ws');
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream?token=${KEY}`);
  let error: Record<string, unknown> | undefined;
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString()) as Record<string, unknown>;
    if (msg['type'] === 'error') error = msg;
  });
  await new Promise((ok) => ws.once('open', ok));
  ws.send(JSON.stringify({ type: 'start', ...start }));
  // a start that is accepted does not close: give up after a while (close code 0)
  const closeCode = await new Promise<number>((ok) => {
    const timer = setTimeout(() => ok(0), 10_000);
    ws.once('close', (code) => ok(code)).once('close', () => clearTimeout(timer));
  });
  ws.close();
  return { error, closeCode };
}

/** ffmpeg reading an MJPEG URL as OBS's Media Source does, writing every part it receives to a folder. */
async function ffmpegViewer(url: string): Promise<{ parts: () => Promise<Buffer[]>; process: ChildProcess }> {
  const dir = await mkdtemp(join(tmpdir(), 'mjpeg-viewer-'));
  const child = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-i', url, '-c:v', 'copy', '-fps_mode', 'passthrough', '-f', 'image2', join(dir, '%06d.jpg')], { stdio: 'ignore' });
  viewers.push(child);
  const parts = async () => {
    const names = (await readdir(dir)).sort();
    // the newest file may still be written: read only the completed ones
    return Promise.all(names.slice(0, -1).map((n) => readFile(join(dir, n))));
  };
  return { parts, process: child };
}

test('ffmpeg on the stable URL: placeholder, the stream, placeholder after stop, the next stream of that name, without reconnecting', { skip: HAVE_FFMPEG ? false : 'no ffmpeg on this machine' }, async () => {
  const name = 'obs-source';
  const waiting = (await snapshot(name)).jpeg;
  const viewer = await ffmpegViewer(withKey(`/v1/streams/by-name/${name}/mjpeg`));
  const has = async (jpeg: Buffer, after = 0) => (await viewer.parts()).slice(after).some((p) => p.equals(jpeg));
  await until(() => has(waiting), 'the placeholder at ffmpeg');

  const run = async () => {
    // a fixed seed: a stream without one draws a random seed
    const client = await connect({ name, params: { steps: 1, similarity_threshold: 1, seed: 2 } });
    for (const f of frames) await client.roundTrip(f);
    const last = client.frames.at(-1)!.bytes;
    await until(() => has(last), "the stream's output at ffmpeg");
    const seen = (await viewer.parts()).length;
    await client.close();
    await until(() => has(waiting, seen), 'the placeholder again after stop');
    return last;
  };
  const first = await run();
  const second = await run();
  assert.ok(first.equals(second), 'the same frames and parameters give the same output');
  assert.equal(viewer.process.exitCode, null, 'ffmpeg stayed connected through stop and start');
  const parts = await viewer.parts();
  for (const p of parts.slice(-3)) assert.equal((await sharp(p).metadata()).format, 'jpeg');
});

test('the stable URL survives a server restart: after it, the name shows its placeholder again', async () => {
  const port = server.port;
  await server.close();
  server = await start(port);
  const { state, jpeg } = await snapshot('studio-cam');
  assert.equal(state, 'waiting');
  const res = await fetch(withKey('/v1/streams/by-name/studio-cam/mjpeg'));
  assert.equal(res.headers.get('content-type'), 'multipart/x-mixed-replace;boundary=frame');
  const reader = res.body!.getReader();
  let received = Buffer.alloc(0);
  // two parts: the placeholder at once, then again (kept alive for OBS) about a second later
  while ((received.toString('latin1').match(/--frame\r\n/g) ?? []).length < 3) received = Buffer.concat([received, Buffer.from((await reader.read()).value!)]);
  await reader.cancel();
  assert.ok(received.includes(jpeg), 'the MJPEG parts are the placeholder JPEG');
});
