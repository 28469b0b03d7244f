import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import sharp from 'sharp';
import { txt2img } from '../../../pipelines/generate.ts';
import { encodeImage } from '../../../pipelines/codecs/image.ts';
import { parseParams } from '../../../pipelines/params.ts';
import type { UnetRunner } from '../../../pipelines/denoise-step.ts';
import { fixtureEngine, getJson, postJson, startServer, tempDir, waitForJob, type Json, type TestServer } from './helpers.ts';
import type { FileJobStore } from '../../../server/batch/jobs/store.ts';

let server: TestServer;
before(async () => {
  server = await startServer();
});
after(() => server.close());

const small = { width: 64, height: 64, steps: 1 };

/** What an uninterrupted render gives for image j of a job (seed + j), as the pixels of its PNG. */
async function expectedPng(params: Record<string, unknown>, index: number): Promise<Buffer> {
  const p = parseParams(params);
  const [img] = await txt2img(await fixtureEngine(), { ...p, seed: (p.seed as number) + index }, 1);
  return pixels(await encodeImage(img!.data, img!.width, img!.height, 'png'));
}

/** An image's decoded pixels (a job's PNGs also carry their parameters, which a direct encode has not). */
function pixels(bytes: Buffer): Promise<Buffer> {
  return sharp(bytes).raw().toBuffer();
}

async function download(url: string): Promise<Buffer> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return Buffer.from(await res.arrayBuffer());
}

test('an images job: 201, polled to succeeded with progress 1, results downloadable and equal to direct renders', async () => {
  const params = { prompt: 'a red circle', seed: 21, ...small };
  const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', count: 3, lanes: 2, ...params });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.match(created.body.id, /^[0-9a-f-]{36}$/);
  assert.ok(['starting', 'processing'].includes(created.body.status));
  const job = await waitForJob(server.url, created.body.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.equal(job.progress, 1);
  assert.equal(job.eta_seconds, 0);
  assert.equal(job.error, null);
  assert.equal(job.urls.length, 3);
  for (const [j, url] of (job.urls as string[]).entries()) {
    assert.ok(url.startsWith(`${server.url}/v1/jobs/${job.id}/results/image-000${j}.png`), url);
    assert.ok((await pixels(await download(url))).equals(await expectedPng(params, j)), `image ${j} differs from a direct render`);
  }
  // persisted beside its results
  const record = JSON.parse(await readFile(join(server.config.dataDir, 'jobs', job.id, 'job.json'), 'utf8'));
  assert.equal(record.status, 'succeeded');
  assert.deepEqual(record.results, ['image-0000.png', 'image-0001.png', 'image-0002.png']);
});

test('an img2img images job with a base64 init image and webp output', async () => {
  const input = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 0, g: 0, b: 255 } } }).png().toBuffer();
  const created = await postJson(`${server.url}/v1/jobs`, {
    kind: 'images',
    count: 2,
    init_image: `data:image/png;base64,${input.toString('base64')}`,
    strength: 0.5,
    output_format: 'webp',
    prompt: 'x',
    ...small,
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const job = await waitForJob(server.url, created.body.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.equal((await sharp(await download(job.urls[1])).metadata()).format, 'webp');
});

test('fit applies to an init image: a wide image padded renders differently from cropped, and each is reproducible', async () => {
  const wide = await sharp({ create: { width: 128, height: 64, channels: 3, background: { r: 240, g: 240, b: 40 } } }).png().toBuffer();
  const render = async (fit: string) => {
    const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', init_image: wide.toString('base64'), strength: 0.3, prompt: 'x', seed: 5, fit, ...small });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const job = await waitForJob(server.url, created.body.id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    return download(job.urls[0]);
  };
  const [crop, pad, padAgain] = [await render('crop'), await render('pad'), await render('pad')];
  assert.ok(pad.equals(padAgain));
  assert.ok(!pad.equals(crop), 'pad keeps black bars in the init image, crop does not');
});

test('list, status filter, unknown and malformed ids, result names', async () => {
  const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', prompt: 'x', ...small });
  await waitForJob(server.url, created.body.id);
  const list = await getJson(`${server.url}/v1/jobs`);
  assert.equal(list.status, 200);
  assert.ok(list.body.jobs.some((j: Json) => j.id === created.body.id));
  const filtered = await getJson(`${server.url}/v1/jobs?status=failed`);
  assert.ok(filtered.body.jobs.every((j: Json) => j.status === 'failed'));
  assert.equal((await getJson(`${server.url}/v1/jobs?status=done`)).status, 400);
  const missing = await getJson(`${server.url}/v1/jobs/00000000-0000-4000-8000-000000000000`);
  assert.equal(missing.status, 404);
  const bad = await getJson(`${server.url}/v1/jobs/..%2F..%2Fetc`);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.field, 'id');
  const traversal = await fetch(`${server.url}/v1/jobs/${created.body.id}/results/..%2Fjob.json`);
  assert.equal(traversal.status, 404);
  const notResult = await fetch(`${server.url}/v1/jobs/${created.body.id}/results/job.json`);
  assert.equal(notResult.status, 404);
});

test('cancel: a queued job and a running job end canceled; DELETE on a finished one deletes it and its files', async () => {
  // a gate holds the UNet so the first job stays running and the second queued
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let calls = 0;
  const held = await startServer({
    wrap: (ctx) => ({
      ...ctx,
      runners: (size, variant) => {
        const run = ctx.runners(size, variant);
        const gated: UnetRunner = async (rows) => {
          if (++calls === 2) await gate;
          return run(rows);
        };
        return gated;
      },
    }),
  });
  try {
    const running = await postJson(`${held.url}/v1/jobs`, { kind: 'images', count: 4, lanes: 1, prompt: 'x', ...small });
    const queued = await postJson(`${held.url}/v1/jobs`, { kind: 'images', count: 1, prompt: 'x', ...small });
    await waitForJob(held.url, running.body.id, (j) => j.status === 'processing' && j.progress > 0);
    const q = await fetch(`${held.url}/v1/jobs/${queued.body.id}`, { method: 'DELETE' });
    assert.equal(q.status, 200);
    assert.equal(((await q.json()) as Json).status, 'canceled');
    const cancel = fetch(`${held.url}/v1/jobs/${running.body.id}`, { method: 'DELETE' });
    setTimeout(release, 50);
    const r = await cancel;
    assert.equal(r.status, 200);
    const view = (await r.json()) as Json;
    assert.equal(view.status, 'canceled');
    assert.ok(view.progress < 1);
    const again = await fetch(`${held.url}/v1/jobs/${running.body.id}`, { method: 'DELETE' });
    assert.equal(again.status, 200);
    assert.equal(((await again.json()) as Json).deleted, true);
    assert.equal((await getJson(`${held.url}/v1/jobs/${running.body.id}`)).status, 404);
    assert.deepEqual(await readdir((held.api.manager.store as FileJobStore).root), [queued.body.id], 'the deleted job\'s folder is gone; the canceled one is kept');
  } finally {
    release();
    await held.close();
  }
});

test('webhook: the finished job is POSTed as JSON to a loopback receiver', async () => {
  const received: { body: Json; headers: IncomingMessage['headers'] }[] = [];
  const receiver = createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString()));
    req.on('end', () => {
      received.push({ body: JSON.parse(data), headers: req.headers });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/done`;
  try {
    const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', prompt: 'x', webhook: hook, ...small });
    assert.equal(created.status, 201);
    await waitForJob(server.url, created.body.id, (j) => j.webhook?.status === 'delivered');
    assert.equal(received.length, 1);
    assert.equal(received[0]!.headers['content-type'], 'application/json');
    assert.equal(received[0]!.body.id, created.body.id);
    assert.equal(received[0]!.body.status, 'succeeded');
    assert.ok(received[0]!.body.urls[0].startsWith(`${server.url}/v1/jobs/`));
  } finally {
    receiver.close();
  }
});

test('webhook with user:password@ in its URL: delivered with Basic authorization to the URL without them; never shown', async () => {
  const received: { url: string | undefined; authorization: string | undefined }[] = [];
  const receiver = createServer((req, res) => {
    received.push({ url: req.url, authorization: req.headers.authorization });
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const hook = `http://hook%20user:p%40ss-word@127.0.0.1:${(receiver.address() as AddressInfo).port}/done?x=1`;
  try {
    const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', prompt: 'x', webhook: hook, ...small });
    assert.equal(created.status, 201);
    const job = await waitForJob(server.url, created.body.id, (j) => j.webhook?.status === 'delivered');
    assert.deepEqual(received, [{ url: '/done?x=1', authorization: `Basic ${Buffer.from('hook user:p@ss-word').toString('base64')}` }]);
    assert.ok(!JSON.stringify(job).includes('ss-word'));
  } finally {
    receiver.close();
  }
});

test('job folders a scan cannot use are dealt with once: no job.json -> deleted, an unreadable job.json -> moved to jobs-broken/', async () => {
  const dataDir = await tempDir();
  const orphan = '00000000-0000-4000-8000-000000000001';
  const corrupt = '00000000-0000-4000-8000-000000000002';
  await mkdir(join(dataDir, 'jobs', orphan), { recursive: true });
  await writeFile(join(dataDir, 'jobs', orphan, 'input-image.bin'), 'left by a request that died');
  const past = new Date(performance.timeOrigin - 60_000);
  await utimes(join(dataDir, 'jobs', orphan), past, past); // from before this process started
  await mkdir(join(dataDir, 'jobs', corrupt), { recursive: true });
  await writeFile(join(dataDir, 'jobs', corrupt, 'job.json'), '{"version": 1, "id": "trunc');
  for (let run = 0; run < 2; run++) {
    const s = await startServer({ dataDir });
    await s.close();
    assert.deepEqual(await readdir(join(dataDir, 'jobs')), [], `run ${run}`);
    assert.deepEqual(await readdir(join(dataDir, 'jobs-broken')), [corrupt], `run ${run}`);
  }
  assert.match(await readFile(join(dataDir, 'jobs-broken', corrupt, 'job.json'), 'utf8'), /trunc/, 'kept for a person to look at');
});

test('invalid job requests: 4xx with a message naming the field', async () => {
  const cases: [Record<string, unknown>, string, number][] = [
    [{ prompt: 'x' }, 'kind', 400],
    [{ kind: 'audio' }, 'kind', 400],
    [{ kind: 'images', count: 0 }, 'count', 400],
    [{ kind: 'images', count: 5000 }, 'count', 400],
    [{ kind: 'images', steps: 99 }, 'steps', 400],
    [{ kind: 'images', width: 72 }, 'width', 400],
    [{ kind: 'images', seed: -5 }, 'seed', 400],
    [{ kind: 'images', colour: 'red' }, 'colour', 400],
    [{ kind: 'images', vae: 'tiny' }, 'vae', 400],
    [{ kind: 'images', webhook: 'ftp://example.invalid/x' }, 'webhook', 400],
    [{ kind: 'images', webhook: 'not a url' }, 'webhook', 400],
    [{ kind: 'images', init_image: '@@@' }, 'init_image', 400],
    [{ kind: 'images', provider: 'quantum' }, 'provider', 400],
    [{ kind: 'images', provider: 'cuda' }, 'provider', 400], // one node runs on its own provider (cpu) only
    [{ kind: 'video' }, 'video', 400],
    [{ kind: 'video', path: '/etc/passwd' }, 'path', 403],
  ];
  for (const [body, field, status] of cases) {
    const res = await postJson(`${server.url}/v1/jobs`, body);
    assert.equal(res.status, status, `${JSON.stringify(body)} -> ${res.status} ${JSON.stringify(res.body)}`);
    assert.equal(res.body.error.field, field, JSON.stringify(res.body));
    assert.ok(res.body.error.message.includes(field), res.body.error.message);
  }
  const notObject = await fetch(`${server.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '[1]' });
  assert.equal(notObject.status, 400);
});

test('seed -1 is resolved when the job is accepted and kept in its request', async () => {
  const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', prompt: 'x', seed: -1, ...small });
  assert.equal(created.status, 201);
  const seed = created.body.request.params.seed;
  assert.ok(Number.isInteger(seed) && seed >= 0);
  await waitForJob(server.url, created.body.id);
});

test('drain mid-run, then a new API on the same data dir resumes the job and completes it (same images)', async () => {
  const dataDir = await tempDir();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let calls = 0;
  const first = await startServer({
    dataDir,
    wrap: (ctx) => ({
      ...ctx,
      runners: (size, variant) => {
        const run = ctx.runners(size, variant);
        return async (rows) => {
          if (++calls === 3) await gate; // the third image's UNet call waits
          return run(rows);
        };
      },
    }),
  });
  const params = { prompt: 'a blue square', seed: 9, ...small };
  const created = await postJson(`${first.url}/v1/jobs`, { kind: 'images', count: 5, lanes: 1, ...params });
  const id = created.body.id as string;
  await waitForJob(first.url, id, (j) => j.progress >= 0.4);
  const drained = first.close();
  release();
  await drained;
  const onDisk = JSON.parse(await readFile(join(dataDir, 'jobs', id, 'job.json'), 'utf8'));
  assert.equal(onDisk.status, 'starting', 'an interrupted job is left queued');
  assert.ok(onDisk.results.length >= 2 && onDisk.results.length < 5, `results ${onDisk.results}`);

  const second = await startServer({ dataDir });
  try {
    const job = await waitForJob(second.url, id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.urls.length, 5);
    for (let j = 0; j < 5; j++) assert.ok((await pixels(await download(job.urls[j]))).equals(await expectedPng(params, j)), `image ${j}`);
  } finally {
    await second.close();
  }
});

test('a job survives SIGKILL of the server process: a new server on the data dir completes it', async () => {
  const dataDir = await tempDir();
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'serve-child.ts')], {
    env: { ...process.env, DATA_DIR: dataDir, UNET_DELAY_MS: '100' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`server child exited (${code})`)));
    });
    const { url } = JSON.parse(line) as { url: string };
    const params = { prompt: 'a green circle', seed: 77, ...small };
    const created = await postJson(`${url}/v1/jobs`, { kind: 'images', count: 6, lanes: 1, ...params });
    assert.equal(created.status, 201);
    await waitForJob(url, created.body.id, (j) => j.status === 'processing' && j.progress > 0);
    child.kill('SIGKILL');
    await exited;
    const onDisk = JSON.parse(await readFile(join(dataDir, 'jobs', created.body.id, 'job.json'), 'utf8'));
    assert.ok(['starting', 'processing'].includes(onDisk.status), onDisk.status);

    const second = await startServer({ dataDir });
    try {
      const job = await waitForJob(second.url, created.body.id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      assert.equal(job.urls.length, 6);
      for (let j = 0; j < 6; j++) assert.ok((await pixels(await download(job.urls[j]))).equals(await expectedPng(params, j)), `image ${j}`);
      const files = await readdir(join(dataDir, 'jobs', created.body.id));
      assert.ok(!files.some((f) => f.endsWith('.tmp') || f.endsWith('.partial')), files.join(' '));
    } finally {
      await second.close();
    }
  } finally {
    child.kill('SIGKILL');
  }
});

test('retention: finished jobs past the limit are deleted at start; newer ones and queued ones stay', async () => {
  const dataDir = await tempDir();
  const old = '11111111-1111-4111-8111-111111111111';
  const recent = '22222222-2222-4222-8222-222222222222';
  const queued = '33333333-3333-4333-8333-333333333333';
  const day = 24 * 3600 * 1000;
  const record = (id: string, status: string, completedDaysAgo: number | null) => ({
    version: 1,
    id,
    kind: 'images',
    status,
    created_at: new Date(Date.now() - 10 * day).toISOString(),
    started_at: null,
    completed_at: completedDaysAgo === null ? null : new Date(Date.now() - completedDaysAgo * day).toISOString(),
    progress: 0,
    request: { params: parseParams({ prompt: 'x', ...small }), count: 1, lanes: 1, output_format: 'png', init_file: null },
    results: [],
    error: null,
    webhook: null,
    base_url: 'http://127.0.0.1',
    stats: {},
  });
  for (const [id, status, ago] of [
    [old, 'succeeded', 8],
    [recent, 'failed', 1],
    [queued, 'starting', null],
  ] as const) {
    await mkdir(join(dataDir, 'jobs', id), { recursive: true });
    await writeFile(join(dataDir, 'jobs', id, 'job.json'), JSON.stringify(record(id, status, ago)));
  }
  await mkdir(join(dataDir, 'jobs', 'not-a-job'), { recursive: true });
  const s = await startServer({ dataDir });
  try {
    const dirs = await readdir(join(dataDir, 'jobs'));
    assert.ok(!dirs.includes(old), 'the 8-day-old job is gone');
    assert.ok(dirs.includes(recent));
    assert.equal((await getJson(`${s.url}/v1/jobs/${old}`)).status, 404);
    assert.equal((await getJson(`${s.url}/v1/jobs/${recent}`)).body.status, 'failed');
    const resumed = await waitForJob(s.url, queued);
    assert.equal(resumed.status, 'succeeded');
  } finally {
    await s.close();
  }
});

test('while draining, new jobs are refused with 503', async () => {
  const s = await startServer();
  try {
    await s.api.jobs.drain();
    const res = await postJson(`${s.url}/v1/jobs`, { kind: 'images', prompt: 'x', ...small });
    assert.equal(res.status, 503);
  } finally {
    await s.close();
  }
});

test('GET /v1/jobs pages through the jobs newest first (limit, next_cursor); a job without a seed gets one; notes are in the view', async () => {
  const own = await startServer({ start: false }); // accepted, never run: the listing is what is tested
  try {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await postJson(`${own.url}/v1/jobs`, { kind: 'images', prompt: `job ${i}`, ...small, ...(i === 0 ? { guidance: 'full', guidance_scale: 6 } : {}) });
      assert.equal(res.status, 201);
      ids.push(res.body.id);
      await new Promise((r) => setTimeout(r, 3)); // distinct creation times
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: Json = await getJson(`${own.url}/v1/jobs?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(page.status, 200);
      assert.ok(page.body.jobs.length <= 2);
      seen.push(...page.body.jobs.map((j: Json) => j.id));
      cursor = page.body.next_cursor;
      pages++;
    } while (cursor);
    assert.deepEqual(seen, [...ids].reverse(), 'every job once, newest first');
    assert.equal(pages, 3);
    const all = await getJson(`${own.url}/v1/jobs`);
    assert.equal(all.body.jobs.length, 5);
    assert.equal(all.body.next_cursor, null);
    const first = all.body.jobs.at(-1);
    assert.ok(Number.isInteger(first.request.params.seed), 'a random seed, fixed at acceptance');
    assert.match(first.notes.join(), /guidance scale 6 is outside this model's recommended range 1-2: 2 is used/);
    for (const [query, field] of [['limit=0', 'limit'], ['limit=500', 'limit'], ['cursor=bogus', 'cursor'], ['status=done', 'status'], ['sort=asc', 'sort']] as const) {
      const res = await getJson(`${own.url}/v1/jobs?${query}`);
      assert.equal(res.status, 400, query);
      assert.equal(res.body.error.field, field, JSON.stringify(res.body));
    }
  } finally {
    await own.close();
  }
});

test('DELETE on a succeeded job removes the job and its files', async () => {
  const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', count: 2, prompt: 'x', seed: 1, ...small });
  const job = await waitForJob(server.url, created.body.id);
  assert.equal(job.status, 'succeeded');
  assert.equal((await fetch(job.urls[0])).status, 200);
  const res = await fetch(`${server.url}/v1/jobs/${job.id}`, { method: 'DELETE' });
  assert.equal(res.status, 200);
  assert.deepEqual((({ deleted, status, urls }) => ({ deleted, status, urls }))((await res.json()) as Json), { deleted: true, status: 'succeeded', urls: [] });
  assert.equal((await getJson(`${server.url}/v1/jobs/${job.id}`)).status, 404);
  assert.equal((await fetch(job.urls[0])).status, 404);
  assert.ok(!(await readdir((server.api.manager.store as FileJobStore).root)).includes(job.id), 'its folder is gone');
  assert.equal((await fetch(`${server.url}/v1/jobs/${job.id}`, { method: 'DELETE' })).status, 404);
});
