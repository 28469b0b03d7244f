/**
 * The tiny VAE through the server: live streams use it by default when the pack has one (frame metadata says
 * which VAE made a frame), `vae` chooses per stream and per update, batch renders keep the full VAE unless
 * --tiny-vae all, and asking for it on a pack without one is a bad request naming the field.
 * The test pack's taesd_* folders are its own VAE at scale factor 1 while the full VAE's factor is 0.5, so the
 * two VAEs give different images from the same frames.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../server/app.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { Engine } from '../../pipelines/engine.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { parseParams } from '../../pipelines/params.ts';
import { decodeRgb8, encodeRgb8 } from '../../pipelines/codecs/image.ts';
import type { TinyVaeUse } from '../../server/config.ts';
import { BASE_PACK, copyPack } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';

async function packWithTinyVae(): Promise<string> {
  const dir = await copyPack();
  await cp(join(dir, 'vae_encoder'), join(dir, 'taesd_encoder'), { recursive: true });
  await cp(join(dir, 'vae_decoder'), join(dir, 'taesd_decoder'), { recursive: true });
  const config = JSON.parse(await readFile(join(dir, 'vae_decoder', 'config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'vae_decoder', 'config.json'), JSON.stringify({ ...config, scaling_factor: 0.5 }));
  return dir;
}

const engine = await Engine.load(await packWithTinyVae());
const servers = new Map<TinyVaeUse, RunningServer>();
const dataDir = await mkdtemp(join(tmpdir(), 'tiny-vae-'));
for (const use of ['live', 'off', 'all'] as const) servers.set(use, await startServer({ port: 0, tinyVae: use, dataDir: join(dataDir, use) }, { engine, extensions: [(ctx) => createBatchApi(ctx)] }));
after(() => Promise.all([...servers.values()].map((s) => s.close())));

const frames = await Promise.all([0, 1, 2, 3].map((i) => shapeFrame({ x: 30 + i * 15 })));
const PARAMS = { prompt: 'a red circle', steps: 2, seed: 3, similarity_threshold: 1 };

/** The JPEGs an in-process stream with this VAE gives for the frames. */
async function expected(vae: 'full' | 'tiny'): Promise<Buffer[]> {
  const stream = await StreamPipeline.create(engine, parseParams({ ...PARAMS, vae }));
  const out = [];
  for (const f of frames) {
    const [r] = await stream.process([(await decodeRgb8(f, 128, 128)).rgb]);
    out.push(await encodeRgb8(r!.rgb, 128, 128, 'jpeg', 80));
  }
  return out;
}
const [tiny, full] = [await expected('tiny'), await expected('full')];

async function stream(server: RunningServer, params: Record<string, unknown>): Promise<{ bytes: Buffer[]; vae: unknown[] }> {
  const client = await StreamClient.connect(server.url, { params });
  const received = [];
  for (const f of frames) received.push(await client.roundTrip(f));
  await client.close();
  return { bytes: received.map((r) => r.bytes), vae: received.map((r) => r.meta['vae']) };
}

test('a live stream uses the tiny VAE by default; vae: "full" chooses the full one', async () => {
  assert.ok(!tiny[3]!.equals(full[3]!), 'the two VAEs must give different images here');
  const byDefault = await stream(servers.get('live')!, PARAMS);
  assert.deepEqual(byDefault.vae, ['tiny', 'tiny', 'tiny', 'tiny']);
  byDefault.bytes.forEach((b, i) => assert.ok(b.equals(tiny[i]!), `frame ${i} is the tiny VAE's`));
  const chosen = await stream(servers.get('live')!, { ...PARAMS, vae: 'full' });
  assert.deepEqual(chosen.vae, ['full', 'full', 'full', 'full']);
  chosen.bytes.forEach((b, i) => assert.ok(b.equals(full[i]!), `frame ${i} is the full VAE's`));
});

test('--tiny-vae off: live streams use the full VAE unless they ask for the tiny one', async () => {
  const byDefault = await stream(servers.get('off')!, PARAMS);
  byDefault.bytes.forEach((b, i) => assert.ok(b.equals(full[i]!), `frame ${i}`));
  const asked = await stream(servers.get('off')!, { ...PARAMS, vae: 'tiny' });
  asked.bytes.forEach((b, i) => assert.ok(b.equals(tiny[i]!), `frame ${i}`));
});

test('a live update switches the VAE from the next frame on', async () => {
  const client = await StreamClient.connect(servers.get('live')!.url, { params: PARAMS });
  await client.roundTrip(frames[0]!);
  client.send({ type: 'update', params: { vae: 'full' } });
  await client.until(() => client.messages.some((m) => m['type'] === 'updated'));
  const next = await client.roundTrip(frames[1]!);
  assert.equal(next.meta['vae'], 'full');
  await client.close();
});

test('batch renders keep the full VAE by default; --tiny-vae all gives them the tiny one', async () => {
  const render = async (use: TinyVaeUse) => {
    const res = await fetch(`${servers.get(use)!.url}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a green square', seed: 5, steps: 2, width: 128, height: 128 }),
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { images: string[] }).images[0]!;
  };
  const [live, off, all] = [await render('live'), await render('off'), await render('all')];
  assert.equal(live, off, 'the default for batch renders is the full VAE');
  assert.notEqual(all, off);
});

test('asking for the tiny VAE on a pack without one is a bad request naming the field', async () => {
  const plain = await startServer({ port: 0 }, { engine: await Engine.load(BASE_PACK) });
  try {
    const client = await StreamClient.connect(plain.url, { params: PARAMS });
    assert.equal((await client.roundTrip(frames[0]!)).meta['vae'], 'full', 'the live default falls back to the full VAE');
    client.send({ type: 'update', params: { vae: 'tiny' } });
    await client.until(() => client.errors.length === 1);
    assert.equal(client.errors[0]!['code'], 'bad_request');
    assert.equal(client.errors[0]!['field'], 'vae');
    await client.close();
  } finally {
    await plain.close();
  }
});
