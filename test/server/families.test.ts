import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { DEFAULT_PACK_OPTIONS } from '../../models/pack.ts';
import { packParams } from '../../pipelines/params.ts';
import { Engine } from '../../pipelines/engine.ts';
import { startServer } from '../../server/app.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { createLogger } from '../../server/log.ts';
import { FAMILIES, FAMILY_LORA } from '../helpers/families.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { HAVE_FFMPEG, makeTestVideo, postJson, probe, tempDir, waitForJob } from './batch/helpers.ts';

async function pixels(jpeg: Buffer): Promise<Buffer> {
  return sharp(jpeg).raw().toBuffer();
}

function meanAbsDiff(a: Buffer, b: Buffer): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

for (const family of FAMILIES) {
  test(`${family.name} served: a WebSocket stream with live prompt and adapter updates, an A1111 render with the pack's defaults, a video job`, async () => {
    const engine = await Engine.load(family.dir, { ...DEFAULT_PACK_OPTIONS, threads: 1 });
    const work = await tempDir('family-');
    const videos = join(work, 'videos');
    await mkdir(videos);
    const server = await startServer(
      { port: 0, dataDir: join(work, 'data'), videoDirs: [videos] },
      { engine, log: createLogger({}, 'error'), extensions: [(ctx) => createBatchApi(ctx)] },
    );
    try {
      const side = Math.max(64, family.multiple); // the smallest side the API takes
      // 1. a stream: img2img at the pack's steps (not given: the pack's default), the similarity filter off
      const client = await StreamClient.connect(server.url, { params: { prompt: 'a red circle', width: side, height: side, seed: 1, similarity_threshold: 1 } });
      const started = client.started!;
      assert.equal((started['params'] as { steps: number }).steps, packParams(engine.pack.defaults, 'stream').steps);
      const cut = /^prompt is \d+ tokens long; the text encoder reads the first 75/;
      assert.ok(!(started['notes'] as string[]).some((n) => cut.test(n)), 'a short prompt is not cut');
      const frame = await shapeFrame({ size: side, x: side / 2 });
      const lag = packParams(engine.pack.defaults, 'stream').steps; // enough frames for the buffer to hold only this input
      let before;
      for (let i = 0; i < lag + 1; i++) before = await client.roundTrip(frame);
      assert.equal((await sharp(before!.bytes).metadata()).width, side);
      // 2. live prompt update: acknowledged, then the same input renders differently
      const long = Array.from({ length: 50 }, (_, i) => `tone${i}`).join(' ');
      client.send({ type: 'update', params: { prompt: `a green square ${long}` } });
      await client.until(() => client.messages.some((m) => m['type'] === 'updated'));
      const updated = client.messages.find((m) => m['type'] === 'updated')!;
      assert.ok((updated['notes'] as string[]).some((n) => cut.test(n)), `the cut is said: ${JSON.stringify(updated['notes'])}`);
      let after;
      for (let i = 0; i < lag + 1; i++) after = await client.roundTrip(frame);
      assert.ok(meanAbsDiff(await pixels(before!.bytes), await pixels(after!.bytes)) > 0.5, 'the new prompt changed the output');
      // 3. the pack's kohya LoRA switched on live: the UNet and text encoder(s) merged on a worker, swapped between frames
      client.send({ type: 'update', params: { adapters: [{ name: FAMILY_LORA, weight: 1 }] } });
      await client.until(() => client.messages.filter((m) => m['type'] === 'updated').length === 2, 600_000); // minutes on a loaded 2-core machine
      let adapted;
      for (let i = 0; i < lag + 1; i++) adapted = await client.roundTrip(frame);
      assert.deepEqual(adapted!.meta['adapters'], [{ name: FAMILY_LORA, weight: 1 }]);
      assert.ok(meanAbsDiff(await pixels(after!.bytes), await pixels(adapted!.bytes)) > 0.5, 'the adapter changed the output');
      assert.deepEqual(client.errors, []);
      await client.close();
      // 4. A1111 txt2img without steps: the pack's default steps
      const a1111 = await postJson(`${server.url}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: side, height: side, seed: 4 });
      assert.equal(a1111.status, 200, JSON.stringify(a1111.body));
      assert.equal(JSON.parse(a1111.body.info).steps, packParams(engine.pack.defaults, 'txt2img').steps);
      // 5. a video job on a server-side file
      if (HAVE_FFMPEG) {
        const clip = join(videos, 'clip.mp4');
        makeTestVideo(clip, { seconds: 1, fps: 4, size: `${side}x${side}`, audio: false });
        const created = await postJson(`${server.url}/v1/jobs`, { kind: 'video', path: clip, prompt: 'a blue circle', strength: 0.5, seed: 2, width: side, height: side });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        const job = await waitForJob(server.url, created.body.id, undefined, 120_000);
        assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
        const out = join(work, 'out.mp4');
        await writeFile(out, Buffer.from(await (await fetch(job.urls[0])).arrayBuffer()));
        const result = probe(out);
        assert.equal(result.frames, 4);
        assert.equal(result.video?.width, side);
      }
    } finally {
      await server.close();
    }
  });
}
