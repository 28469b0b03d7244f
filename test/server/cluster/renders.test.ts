/**
 * Interactive renders and queue order on a real cluster (redis-server, a gateway and one worker, processes on
 * the embedded pack): A1111 and OpenAI requests to the gateway are rendered by the worker, byte-identical to a
 * single node; a result URL is served by any node; /sdapi/v1/progress follows the worker; interactive renders go
 * ahead of a large batch, and a client with many jobs queued does not hold back another client's job.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import sharp from 'sharp';
import { Engine } from '../../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../../models/pack.ts';
import { startServer as startSingleNode, type RunningServer } from '../../../server/app.ts';
import { createBatchApi } from '../../../server/batch/index.ts';
import { queueName } from '../../../server/batch/jobs/bull.ts';
import { eventually, startNode, startRedis, type ClusterNodeProcess, type RedisServer } from '../../helpers/cluster.ts';
import { tempDir, type Json } from '../batch/helpers.ts';

let redis: RedisServer;
let gateway: ClusterNodeProcess;
let worker: ClusterNodeProcess;
let single: RunningServer;
let connection: Redis;

before(async () => {
  redis = await startRedis();
  [gateway, worker] = await Promise.all([startNode({ role: 'api', redis: redis.url }), startNode({ role: 'worker', redis: redis.url })]);
  single = await startSingleNode({ port: 0, dataDir: await tempDir('single-') }, { engine: await Engine.load(EMBEDDED_PACK_DIR), extensions: [(ctx) => createBatchApi(ctx)] });
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
});

after(async () => {
  connection?.disconnect();
  await single?.close();
  await Promise.all([gateway, worker].filter(Boolean).map((n) => n.kill()));
  await redis?.stop();
});

/** POST JSON from a chosen loopback address (the queue tells clients apart by address). */
function post(url: string, body: unknown, from = '127.0.0.1', signal?: AbortSignal): Promise<{ status: number; body: Json }> {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = request(url, { method: 'POST', localAddress: from, headers: { 'content-type': 'application/json', 'content-length': data.length }, ...(signal ? { signal } : {}) }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function getJson(url: string): Promise<Json> {
  return (await fetch(url)).json();
}

test('A1111 txt2img and img2img through the gateway: rendered by the worker, byte-identical to a single node', { timeout: 600_000 }, async () => {
  const init = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 20, g: 30, b: 220 } } }).png().toBuffer();
  const cases: [string, object][] = [
    ['/sdapi/v1/txt2img', { prompt: 'a large red circle in the centre on a blue background', width: 64, height: 64, steps: 2, seed: 41, batch_size: 2, n_iter: 2 }],
    ['/sdapi/v1/img2img', { prompt: 'a small yellow triangle at the top', width: 64, height: 64, steps: 2, seed: 42, init_images: [init.toString('base64')], denoising_strength: 0.6 }],
  ];
  for (const [path, body] of cases) {
    const [cluster, alone] = await Promise.all([post(`${gateway.url}${path}`, body), post(`${single.url}${path}`, body)]);
    assert.equal(cluster.status, 200, JSON.stringify(cluster.body));
    assert.equal(cluster.body.images.length, alone.body.images.length);
    assert.deepEqual(cluster.body.images, alone.body.images, `${path}: the same PNG bytes`);
    assert.deepEqual(JSON.parse(cluster.body.info).all_seeds, JSON.parse(alone.body.info).all_seeds);
  }
  const bad = await post(`${gateway.url}/sdapi/v1/txt2img`, { prompt: 'x', width: 60 });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.field, 'width');
  const missing = await post(`${gateway.url}/sdapi/v1/txt2img`, { prompt: 'x <lora:nope:1>', width: 64, height: 64, steps: 1 });
  assert.equal(missing.status, 404, 'an error found on the worker comes back with its code');
  assert.equal(missing.body.error.field, 'adapters');
  // every node has /metrics and the cluster view: the worker counted the images it rendered for the gateway
  const metrics = await (await fetch(`${worker.url}/metrics`)).text();
  assert.match(metrics, /^sd_images_total\{endpoint="\/sdapi\/v1\/txt2img"\} 4$/m);
  assert.match(metrics, /^sd_cluster_nodes\{role="worker"\} 1$/m);
  assert.match(metrics, /^sd_cluster_nodes\{role="api"\} 1$/m);
  const view = await getJson(`${worker.url}/v1/cluster`);
  assert.deepEqual(view.nodes.map((n: Json) => n.role).sort(), ['api', 'worker']);
  assert.equal(view.node, worker.id);
});

test('OpenAI SDK through the gateway; a url result is served by every node', { timeout: 600_000 }, async () => {
  // seed: this service's extension, passed through the SDK as an extra body field
  const generate = (base: string, format: 'url' | 'b64_json') =>
    new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 }).images.generate({ prompt: 'a green square on the left', size: '64x64' as '256x256', response_format: format, seed: 9 } as OpenAI.Images.ImageGenerateParamsNonStreaming);
  const res = await generate(gateway.url, 'url');
  const url = res.data![0]!.url!;
  assert.ok(url.startsWith(`${gateway.url}/v1/images/results/`), url);
  const fromGateway = Buffer.from(await (await fetch(url)).arrayBuffer());
  const fromWorker = Buffer.from(await (await fetch(url.replace(gateway.url, worker.url))).arrayBuffer());
  assert.ok(fromGateway.equals(fromWorker), 'the gateway serves the bytes the worker serves');
  const alone = await generate(single.url, 'b64_json');
  assert.ok(fromGateway.equals(Buffer.from(alone.data![0]!.b64_json!, 'base64')), 'byte-identical to a single node');
});

test('interactive renders go ahead of a large batch, and show their progress on the gateway', { timeout: 600_000 }, async () => {
  const batch = await post(`${gateway.url}/v1/jobs`, { kind: 'images', count: 400, lanes: 1, prompt: 'a red circle', width: 64, height: 64, steps: 2 });
  assert.equal(batch.status, 201);
  await eventually(async () => ((await getJson(`${gateway.url}/v1/jobs/${batch.body.id}`)).progress > 0 ? true : undefined), 120_000);
  let seen = false;
  let rendering = true;
  const watch = (async () => {
    while (rendering) {
      const p = await getJson(`${gateway.url}/sdapi/v1/progress`);
      if (p.state.job_count === 1 && p.progress > 0 && p.state.sampling_steps > 0) seen = true;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const render = await post(`${gateway.url}/sdapi/v1/txt2img`, { prompt: 'a blue square', width: 64, height: 64, steps: 4, batch_size: 1, n_iter: 8 });
  rendering = false;
  await watch;
  assert.equal(render.status, 200);
  assert.equal(render.body.images.length, 8);
  const job = await getJson(`${gateway.url}/v1/jobs/${batch.body.id}`);
  assert.equal(job.status, 'processing', 'the batch was still running when the render finished');
  assert.ok(job.progress < 1, `the batch was not finished: ${job.progress}`);
  assert.ok(seen, '/sdapi/v1/progress showed the render running on the worker');
  assert.equal((await fetch(`${gateway.url}/v1/jobs/${batch.body.id}`, { method: 'DELETE' })).status, 200);
});

test('per-client fairness: a second client\'s job runs before the first client\'s queued ones', { timeout: 600_000 }, async () => {
  const job = { kind: 'images', count: 3, lanes: 1, prompt: 'a white circle', width: 64, height: 64, steps: 2 };
  const first: string[] = [];
  for (let i = 0; i < 6; i++) first.push((await post(`${gateway.url}/v1/jobs`, { ...job, seed: i }, '127.0.0.1')).body.id);
  const other = (await post(`${gateway.url}/v1/jobs`, { ...job, seed: 99 }, '127.0.0.2')).body.id as string;
  const done = await eventually(async () => {
    const jobs = ((await getJson(`${gateway.url}/v1/jobs?limit=100`)).jobs as Json[]).filter((j) => [...first, other].includes(j.id));
    return jobs.every((j) => j.status === 'succeeded') ? new Map(jobs.map((j) => [j.id as string, j])) : undefined;
  }, 300_000, 200);
  const startedAt = (id: string) => Date.parse(done.get(id)!.started_at);
  const before = first.filter((id) => startedAt(id) < startedAt(other)).length;
  // the worker was busy with the first client's first job (at most its second) when the other job came
  assert.ok(before <= 2, `the other client's job started after ${before} of the first client's 6 jobs`);
});

test('a client that goes away cancels its render on the worker', { timeout: 600_000 }, async () => {
  const queue = new Queue(queueName('renders', 'tiny-shapes'), { connection });
  const controller = new AbortController();
  const pending = post(`${gateway.url}/sdapi/v1/txt2img`, { prompt: 'a ring', width: 64, height: 64, steps: 4, batch_size: 16, n_iter: 4 }, '127.0.0.1', controller.signal).catch((e: Error) => e);
  await eventually(async () => ((await getJson(`${gateway.url}/sdapi/v1/progress`)).progress > 0 ? true : undefined), 120_000, 10);
  controller.abort();
  assert.ok((await pending) instanceof Error, 'the aborted request ended with an error');
  const failed = await eventually(async () => (await queue.getFailed()).find((j) => j.data.count === 64), 60_000);
  assert.match(failed.failedReason, /abort|cancel/i);
  assert.equal((await queue.getActive()).length, 0);
  await queue.close();
});

test('capability: a job asking for a provider no worker runs waits for one; asking for the worker\'s provider runs', { timeout: 600_000 }, async () => {
  const body = { kind: 'images', count: 1, prompt: 'a red circle', width: 64, height: 64, steps: 1 };
  const cuda = await post(`${gateway.url}/v1/jobs`, { ...body, provider: 'cuda' });
  const cpu = await post(`${gateway.url}/v1/jobs`, { ...body, provider: 'cpu' });
  assert.equal(cuda.status, 201);
  const done = await eventually(async () => {
    const j = await getJson(`${gateway.url}/v1/jobs/${cpu.body.id}`);
    return j.status === 'succeeded' ? j : undefined;
  }, 120_000);
  assert.equal(done.request.provider, 'cpu');
  const waiting = await getJson(`${gateway.url}/v1/jobs/${cuda.body.id}`);
  assert.equal(waiting.status, 'starting');
  const queues = (await getJson(`${gateway.url}/v1/cluster`)).queues;
  assert.equal(queues['jobs-tiny-shapes.cuda'].prioritized, 1, JSON.stringify(queues));
  const canceled = (await (await fetch(`${gateway.url}/v1/jobs/${cuda.body.id}`, { method: 'DELETE' })).json()) as Json;
  assert.equal(canceled.status, 'canceled');
  const bad = await post(`${gateway.url}/v1/jobs`, { ...body, provider: 'quantum' });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.field, 'provider');
});

test('capability: a worker whose machine is short of free memory takes no jobs', { timeout: 600_000 }, async () => {
  await worker.kill();
  const short = await startNode({ role: 'worker', redis: redis.url, args: ['--min-free-mb', String(1 << 20)] });
  worker = short;
  const node = await eventually(async () => ((await getJson(`${gateway.url}/v1/cluster`)).nodes as Json[]).find((n) => n.id === short.id && n.jobs_paused));
  assert.equal(node.jobs_paused, true);
  const created = await post(`${gateway.url}/v1/jobs`, { kind: 'images', count: 1, prompt: 'x', width: 64, height: 64, steps: 1 });
  // a healthy worker takes a waiting job within a few hundred ms; this one leaves it waiting
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal((await getJson(`${gateway.url}/v1/jobs/${created.body.id}`)).status, 'starting');
  assert.equal((await (await fetch(`${gateway.url}/v1/jobs/${created.body.id}`, { method: 'DELETE' })).json()).status, 'canceled');
});
