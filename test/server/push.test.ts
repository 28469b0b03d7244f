import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { HAVE_FFMPEG } from './batch/helpers.ts';

const server = await startServer({ port: 0 }, { engine: await Engine.load(BASE_PACK) });
after(() => server.close());

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((ok) => s.close(() => ok()));
  return port;
}

test('pushes the output over RTMP through ffmpeg to a loopback ingest as H.264', { skip: HAVE_FFMPEG ? false : 'no ffmpeg on this machine' }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'push-'));
  const out = join(dir, 'received.flv');
  const port = await freePort();
  const receiver = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-listen', '1', '-i', `rtmp://127.0.0.1:${port}/live/test`, '-c', 'copy', out]);
  const received = new Promise<number | null>((ok) => receiver.once('exit', ok));
  await new Promise((r) => setTimeout(r, 500));
  const client = await StreamClient.connect(server.url, { params: { steps: 1, similarity_threshold: 1 } });
  await client.roundTrip(await shapeFrame({ x: 40 }));
  const res = await fetch(`${server.url}/v1/streams/${client.streamId}/push`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: `rtmp://127.0.0.1:${port}/live/test` }) });
  assert.equal(res.status, 201);
  for (let i = 0; i < 45; i++) await client.roundTrip(await shapeFrame({ x: 30 + (i % 60) }));
  const status = (await (await fetch(`${server.url}/v1/streams/${client.streamId}/push`)).json()) as { sent: number; running: boolean };
  assert.ok(status.sent >= 30, JSON.stringify(status));
  assert.equal((await fetch(`${server.url}/v1/streams/${client.streamId}/push`, { method: 'DELETE' })).status, 204);
  await client.close();
  assert.equal(await received, 0);
  const probe = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=codec_name,nb_read_frames', '-of', 'csv=p=0', out]).toString().trim();
  const [codec, frames] = probe.split(',');
  assert.equal(codec, 'h264');
  assert.ok(Number(frames) >= 20, probe);
});

test('a push URL that is not rtmp or srt is refused with the field named', async () => {
  const client = await StreamClient.connect(server.url, { params: {} });
  const res = await fetch(`${server.url}/v1/streams/${client.streamId}/push`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url: 'file:///etc/passwd' }) });
  assert.equal(res.status, 400);
  assert.deepEqual(((await res.json()) as { error: { field: string } }).error.field, 'url');
  await client.close();
});
