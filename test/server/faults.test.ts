import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import type { Unet } from '../../models/components.ts';
import { ServiceError } from '../../models/errors.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';

const engine = await Engine.load(BASE_PACK);
// An expert whose UNet always fails: stands in for an inference error inside one stream.
const broken = { predict: async () => Promise.reject(new ServiceError('inference_failed', 'injected failure')) } as unknown as Unet;
engine.attach({
  experts: {
    experts: [{ name: 'full', relativeMacs: 1, unet: engine.pack.unet }, { name: 'broken', relativeMacs: 0.5, unet: broken }],
    router: undefined,
  },
});
const server = await startServer({ port: 0 }, { engine });
after(() => server.close());
const frame = await shapeFrame();

test('an inference error in one stream fails only that stream\'s frames', async () => {
  const [good, bad] = await Promise.all([
    StreamClient.connect(server.url, { params: { steps: 1, similarity_threshold: 1 } }),
    StreamClient.connect(server.url, { params: { steps: 1, similarity_threshold: 1, expert: 'broken' } }),
  ]);
  for (let i = 0; i < 3; i++) {
    bad.sendFrame(frame);
    const out = await good.roundTrip(frame);
    assert.equal(out.meta.expert, 'full');
  }
  await bad.until(() => bad.errors.length >= 1);
  assert.equal(bad.errors[0]!['code'], 'inference_failed');
  assert.equal(bad.frames.length, 0);
  await Promise.all([good.close(), bad.close()]);
});

test('a client that disconnects mid-frame frees its stream and nothing else changes', async () => {
  const witness = await StreamClient.connect(server.url, { params: { steps: 2 } });
  const leaver = await StreamClient.connect(server.url, { params: { steps: 2 } });
  leaver.sendFrame(frame);
  leaver.ws.terminate();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(server.streams.size, 1);
  await witness.roundTrip(frame);
  await witness.close();
});

test('SIGTERM drains: streams are closed with 1001 and the process exits 0', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--port', '0', '--model', BASE_PACK], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`no URL printed: ${out}`)), 30_000);
    child.stdout.on('data', () => {
      const m = /streamdiffusion-node on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
  });
  const ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/stream');
  await new Promise((ok) => ws.once('open', ok));
  ws.send(JSON.stringify({ type: 'start', params: {} }));
  await new Promise((ok) => ws.once('message', ok));
  const closed = new Promise<number>((ok) => ws.once('close', (code) => ok(code)));
  const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  child.kill('SIGTERM');
  assert.equal(await closed, 1001);
  assert.equal(await exited, 0);
});
