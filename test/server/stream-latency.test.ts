/**
 * Honest latency (issue 15): `latency_ms` runs from the arrival of the input an output shows to its send, and
 * the input it shows is the newest one it stands for. A repeated output (the similarity filter skipped the
 * models) shows the input it answers, and the frame in flight then stands for that input too, so a still
 * scene reports the time of one frame, not the age of the last processed one. `processing_ms` is the server's
 * work on the call that produced the output. Checked against the client's own clock.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../server/app.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';

const server = await startServer({ port: 0 }, { engine: await Engine.load(BASE_PACK) });
after(() => server.close());

test('a still input with the similarity filter on: repeats report the input they answer, never a growing latency', async () => {
  const steps = 2;
  const client = await StreamClient.connect(server.url, { params: { steps, similarity_threshold: 0.9, max_skip_frames: 3 } });
  const still = await shapeFrame({ x: 50 });
  const sentAt: number[] = [];
  let skipped = 0;
  for (let id = 1; id <= 16; id++) {
    sentAt[id] = performance.now();
    const out = await client.roundTrip(still);
    const clientElapsed = performance.now() - sentAt[out.meta.input_id!]!;
    if (out.meta.skipped) {
      skipped++;
      assert.equal(out.meta.input_id, id, 'a repeated output answers the input just sent');
    }
    assert.ok(out.meta.input_id! >= id - (steps - 1), `output ${id} shows input ${out.meta.input_id}: older than the pipeline's lag`);
    assert.ok(out.meta.latency_ms <= clientElapsed + 1, `latency ${out.meta.latency_ms} ms is more than the client saw (${clientElapsed.toFixed(1)} ms)`);
    const processing = out.meta['processing_ms'] as number;
    assert.ok(processing >= 0 && processing <= out.meta.latency_ms + 0.1, `processing ${processing} ms within latency ${out.meta.latency_ms} ms`);
  }
  assert.ok(skipped >= 8, `the filter repeated ${skipped} outputs`);
  await client.close();
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  const count = (name: string) => Number(new RegExp(`^${name}_count (\\d+)`, 'm').exec(metrics)?.[1]);
  assert.equal(count('sd_frame_latency_seconds'), 16, 'every output is in the latency histogram');
  assert.equal(count('sd_frame_processing_seconds'), 16);
});
