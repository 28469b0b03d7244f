/**
 * Batch jobs on a real cluster on loopback: Debian's redis-server, one API node and three workers, each a
 * process started as `npm start -- --redis URL --role ...` starts it, on the embedded pack. A worker is killed
 * with SIGKILL in the middle of a job, and later the API node too: nothing is lost, and every image equals what
 * a single node renders for the same request, byte for byte.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Engine } from '../../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../../models/pack.ts';
import { queueName } from '../../../server/batch/jobs/bull.ts';
import { createBatchApi } from '../../../server/batch/index.ts';
import { startServer as startSingleNode } from '../../../server/app.ts';
import { eventually, startNode, startRedis, type ClusterNodeProcess, type RedisServer } from '../../helpers/cluster.ts';
import { tempDir, type Json } from '../batch/helpers.ts';

/** A worker silent for this long is taken for dead (the default is 30 s; a test waits less). */
const LOCK = ['--job-lock-ms', '2000'];
const PROMPTS = ['a large red circle in the centre on a blue background', 'a small yellow triangle at the top on a black background', 'a green square on the left on a white background'];
const job = (i: number) => ({ kind: 'images', count: 2, lanes: 1, prompt: PROMPTS[i % PROMPTS.length], width: 64, height: 64, steps: 2, seed: 1000 + 7 * i });

let redis: RedisServer;
let api: ClusterNodeProcess;
let workers: ClusterNodeProcess[];
let connection: Redis;

before(async () => {
  redis = await startRedis();
  [api, ...workers] = await Promise.all([startNode({ role: 'api', redis: redis.url }), ...[0, 1, 2].map(() => startNode({ role: 'worker', redis: redis.url, args: LOCK }))]);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
});

after(async () => {
  connection?.disconnect();
  await Promise.all([api, ...(workers ?? [])].filter(Boolean).map((n) => n.kill()));
  await redis?.stop();
});

async function post(url: string, body: unknown): Promise<Json> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = (await res.json()) as Json;
  assert.equal(res.status, 201, JSON.stringify(json));
  return json;
}

async function view(base: string, id: string): Promise<Json> {
  const res = await fetch(`${base}/v1/jobs/${id}`);
  assert.equal(res.status, 200);
  return res.json();
}

async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return Buffer.from(await res.arrayBuffer());
}

/** Each job's result files, in order (one request at a time). */
async function downloadAll(views: readonly Json[]): Promise<Buffer[][]> {
  const out: Buffer[][] = [];
  for (const v of views) {
    const files = [];
    for (const url of v.urls as string[]) files.push(await download(url));
    out.push(files);
  }
  return out;
}

const finished = (j: Json) => ['succeeded', 'failed', 'canceled'].includes(j.status);

/** Every job an API node lists, by id. */
async function listed(base: string): Promise<Map<string, Json>> {
  const body = (await (await fetch(`${base}/v1/jobs?limit=100`)).json()) as Json; // newest first: this file makes fewer than 100
  return new Map((body.jobs as Json[]).map((j) => [j.id as string, j]));
}

/** Waits until every one of `ids` is finished; their views in order. */
async function allFinished(base: string, ids: readonly string[]): Promise<Json[]> {
  return eventually(async () => {
    const jobs = await listed(base);
    const views = ids.map((id) => jobs.get(id));
    return views.every((v) => v && finished(v)) ? (views as Json[]) : undefined;
  }, 300_000, 200);
}

/** The same jobs on a single node (no Redis): the bytes the cluster must reproduce. */
async function singleNodeResults(bodies: readonly object[]): Promise<Buffer[][]> {
  const server = await startSingleNode({ port: 0, dataDir: await tempDir('single-'), maxQueuedJobs: 100, maxQueuedJobsPerClient: 100 }, { engine: await Engine.load(EMBEDDED_PACK_DIR), extensions: [(ctx) => createBatchApi(ctx)] });
  try {
    const ids: string[] = [];
    for (const body of bodies) ids.push((await post(`${server.url}/v1/jobs`, body)).id);
    const views = await allFinished(server.url, ids);
    assert.deepEqual(views.map((v) => v.status), ids.map(() => 'succeeded'));
    return await downloadAll(views);
  } finally {
    await server.close();
  }
}

test('50 image jobs over 3 workers, one killed -9 mid-job: all 50 complete, byte-identical to a single node', { timeout: 600_000 }, async () => {
  // three images a job: a job seen with one image stored still has two UNet calls to go when the kill lands
  const bodies = Array.from({ length: 50 }, (_, i) => ({ ...job(i), count: 3 }));
  const ids: string[] = [];
  for (const body of bodies) ids.push((await post(`${api.url}/v1/jobs`, body)).id);

  // 1. a third of the way in, a worker is killed while it holds a job with its first image stored
  const queue = new Queue(queueName('jobs', 'tiny-shapes'), { connection });
  await eventually(async () => ([...(await listed(api.url)).values()].filter(finished).length >= 15 ? true : undefined), 300_000, 100);
  const { victim, jobId } = await eventually(async () => {
    for (const active of await queue.getActive()) {
      const j = await view(api.url, active.id!);
      const node = workers.find((w) => w.id === active.processedBy);
      if (node && j.status === 'processing' && j.progress > 0.3 && j.progress < 0.4) return { victim: node, jobId: active.id! };
    }
    return undefined;
  }, 120_000, 10);
  await victim.kill();
  workers = workers.filter((w) => w !== victim);
  await queue.close();

  // 2. every job completes; the interrupted one on another worker, after the images it had stored
  const views = await allFinished(api.url, ids);
  assert.deepEqual(views.map((v) => v.status), ids.map(() => 'succeeded'));
  const interrupted = views.find((v) => v.id === jobId)!;
  assert.ok(interrupted.stats.resumed_from >= 1, `the interrupted job resumes after its stored images: ${JSON.stringify(interrupted.stats)}`);
  assert.ok(workers.some((w) => w.logs.some((l) => l['msg'] === 'resuming job' && l['job'] === jobId)), 'a surviving worker resumed it');

  // 3. the same bytes as one node
  const cluster = await downloadAll(views);
  const single = await singleNodeResults(bodies);
  for (const [i, images] of cluster.entries()) {
    assert.equal(images.length, 3);
    for (const [j, bytes] of images.entries()) assert.ok(bytes.equals(single[i]![j]!), `job ${i} image ${j} differs from the single-node render`);
  }
});

test('an API node killed -9 mid-way loses nothing: a new one shows progress, results, cancels and delivers webhooks', { timeout: 600_000 }, async () => {
  // a webhook receiver on loopback
  const hooks: Json[] = [];
  const receiver: Server = createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString()));
    req.on('end', () => {
      hooks.push(JSON.parse(data));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/done`;
  try {
    // a long job (to cancel while it runs), a hooked job, and a batch behind them
    const long = await post(`${api.url}/v1/jobs`, { ...job(0), count: 1000 });
    const hooked = await post(`${api.url}/v1/jobs`, { ...job(1), webhook: hook });
    const batch = [];
    for (let i = 2; i < 14; i++) batch.push((await post(`${api.url}/v1/jobs`, job(i))).id);
    await api.kill();
    const api2 = await startNode({ role: 'api', redis: redis.url });
    api = api2;
    // progress of a running job, seen by the new node
    const running = await eventually(async () => {
      const j = await view(api2.url, long.id);
      assert.ok(!finished(j), `the long job ended before it could be cancelled: ${j.status}`);
      return j.status === 'processing' && j.progress > 0 ? j : undefined;
    }, 120_000);
    assert.ok(running.progress < 1, `still running: ${JSON.stringify(running)}`);
    // cancel it through the new node: its worker stops it
    const cancel = await fetch(`${api2.url}/v1/jobs/${long.id}`, { method: 'DELETE' });
    assert.equal(cancel.status, 200);
    const canceled = (await cancel.json()) as Json;
    assert.equal(canceled.status, 'canceled');
    assert.ok(canceled.progress < 1, `canceled before the end: ${JSON.stringify(canceled)}`);
    // everything else completes; results come from the new node
    for (const j of await allFinished(api2.url, [hooked.id, ...batch])) {
      assert.equal(j.status, 'succeeded');
      for (const url of j.urls as string[]) assert.ok(url.startsWith(api2.url), url);
      assert.equal((await download(j.urls[1])).subarray(1, 4).toString(), 'PNG');
    }
    const list = (await (await fetch(`${api2.url}/v1/jobs?limit=100`)).json()) as Json;
    for (const id of [long.id, hooked.id, ...batch]) assert.ok(list.jobs.some((j: Json) => j.id === id), `job ${id} is listed by the new node`);
    // the webhook reached the receiver, and the record says so
    const delivered = await eventually(async () => {
      const v = await view(api2.url, hooked.id);
      return v.webhook.status === 'delivered' ? v : undefined;
    }, 60_000);
    assert.equal(delivered.webhook.attempts, 1);
    assert.equal(hooks.filter((h) => h.id === hooked.id).length, 1);
    assert.equal(hooks.find((h) => h.id === hooked.id).status, 'succeeded');
  } finally {
    receiver.close();
  }
});

test('SIGTERM on a worker hands its running job back to the queue: another worker resumes it', { timeout: 600_000 }, async () => {
  const created = await post(`${api.url}/v1/jobs`, { ...job(3), count: 12 });
  const queue = new Queue(queueName('jobs', 'tiny-shapes'), { connection });
  const holder = await eventually(async () => {
    const active = (await queue.getActive()).find((j) => j.id === created.id);
    const j = await view(api.url, created.id);
    return active && j.progress >= 0.25 ? workers.find((w) => w.id === active.processedBy) : undefined;
  }, 120_000, 10);
  await queue.close();
  assert.ok(holder, 'a worker runs the job');
  await holder.terminate();
  workers = workers.filter((w) => w !== holder);
  assert.ok(holder.logs.some((l) => String(l['msg']).startsWith('job interrupted by shutdown') && l['job'] === created.id), 'the draining worker put the job back');
  const [done] = await allFinished(api.url, [created.id]);
  assert.equal(done.status, 'succeeded');
  assert.ok(done.stats.resumed_from >= 3, `resumed after the images stored: ${JSON.stringify(done.stats)}`);
  assert.ok(workers.some((w) => w.logs.some((l) => l['msg'] === 'resuming job' && l['job'] === created.id)), 'another worker resumed it');
});

test('DELETE of a finished job removes its record and results from Redis: gone for every node', { timeout: 600_000 }, async () => {
  const id = (await post(`${api.url}/v1/jobs`, job(5))).id as string;
  const done = await eventually(async () => {
    const j = await view(api.url, id);
    return finished(j) ? j : undefined;
  }, 120_000, 100);
  assert.equal(done.status, 'succeeded');
  const url = (done.urls as string[])[0]!;
  assert.equal((await fetch(url)).status, 200);
  const deleted = await fetch(`${api.url}/v1/jobs/${done.id}`, { method: 'DELETE' });
  assert.equal(deleted.status, 200);
  assert.equal(((await deleted.json()) as Json).deleted, true);
  assert.equal((await fetch(`${api.url}/v1/jobs/${done.id}`)).status, 404);
  assert.equal((await fetch(url)).status, 404, 'its results are gone from Redis');
  assert.equal((await fetch(`${api.url}/v1/jobs/${done.id}`, { method: 'DELETE' })).status, 404);
});
