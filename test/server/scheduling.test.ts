/**
 * Scheduling through the real server (server/app.ts with the batch API): a stream's frames are served ahead of a
 * background job's queued model calls, the job still finishes, and the per-class metrics count both.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../server/app.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { createLogger } from '../../server/log.ts';
import { Engine } from '../../pipelines/engine.ts';
import type { CallEvent, CallTarget } from '../../models/runtime/dispatcher.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { getJson, postJson, tempDir, waitForJob } from './batch/helpers.ts';

const engine = await Engine.load(BASE_PACK);
// share 0: the order is pure urgency, so the rule below is exact (the share has its own tests)
const server = await startServer(
  { port: 0, dataDir: await tempDir('sched-'), backgroundShare: 0 },
  { engine, log: createLogger({}, 'error'), extensions: [(ctx) => createBatchApi(ctx)] },
);
after(() => server.close());

test('a stream is served ahead of a running job: no background call starts on a worker while a live call for it waits, live calls start while background calls wait, and the job progresses', async () => {
  const dispatcher = engine.pack.sessions.dispatcher!;
  const events: CallEvent[] = [];
  const unobserve = dispatcher.observe({ onStart: (e) => events.push(e) });
  const job = await postJson(`${server.url}/v1/jobs`, { kind: 'images', count: 400, lanes: 4, prompt: 'a blue square', steps: 2, width: 128, height: 128 });
  assert.equal(job.status, 201, JSON.stringify(job.body));
  const bgStarted = () => events.some((e) => e.class === 'background');
  while (!bgStarted()) await new Promise((r) => setTimeout(r, 5));

  const client = await StreamClient.connect(server.url, { params: { prompt: 'a red circle', steps: 2, similarity_threshold: 1 }, target_fps: 30 });
  const frames = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => shapeFrame({ x: 30 + i * 8 })));
  for (let i = 0; i < 40; i++) await client.roundTrip(frames[i % frames.length]!);
  await client.close();
  unobserve();
  const status = await getJson(`${server.url}/v1/jobs/${job.body.id}`);
  assert.notEqual(status.body.status, 'succeeded', 'the job was still running while the stream ran (else the test shows nothing)');

  const live = events.filter((e) => e.class === 'live');
  const background = events.filter((e) => e.class === 'background');
  assert.ok(live.length >= 40 * 2, `every frame's calls ran as live (${live.length})`);
  // 1. the rule: a background call never started on a worker while a live call for that worker was waiting
  const waitingLive = (worker: CallTarget, t: number) => live.filter((l) => l.worker === worker && l.submittedAt < t && l.startedAt > t);
  for (const b of background) assert.deepEqual(waitingLive(b.worker, b.startedAt).map((l) => l.label), [], `background ${b.label} started at ${b.startedAt} ahead of waiting live calls`);
  // 2. and it mattered: live calls started while background calls for the same worker were queued
  const ahead = live.filter((l) => background.some((b) => b.worker === l.worker && b.submittedAt < l.startedAt && b.startedAt > l.startedAt));
  assert.ok(ahead.length > 0, 'some live call started while a background call for its worker waited');

  // the job made progress beside the stream (a 400-image job: it is cancelled rather than waited for)
  assert.ok(status.body.progress > 0, `the job progressed: ${status.body.progress}`);
  await fetch(`${server.url}/v1/jobs/${job.body.id}`, { method: 'DELETE' });
  const done = await waitForJob(server.url, job.body.id, undefined, 120_000);
  assert.equal(done.status, 'canceled');
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  for (const cls of ['live', 'background']) {
    const count = Number(new RegExp(`sd_queue_wait_seconds_count\\{class="${cls}"\\} (\\d+)`).exec(metrics)?.[1]);
    assert.ok(count > 0, `queue waits of ${cls} calls are counted`);
    assert.match(metrics, new RegExp(`sd_worker_busy_seconds_total\\{class="${cls}"\\} [0-9.e-]+`));
  }
});
