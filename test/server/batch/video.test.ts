import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, symlink, writeFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ServiceError } from '../../../models/errors.ts';
import { HAVE_FFMPEG, makeTestVideo, postJson, probe, startServer, tempDir, waitForJob, type Json, type TestServer } from './helpers.ts';

const skip = HAVE_FFMPEG ? false : 'no ffmpeg on this machine';

let server: TestServer;
let work: string;
let videoDir: string;
let clip: string;
before(async () => {
  work = await tempDir('video-');
  videoDir = join(work, 'videos');
  await mkdir(videoDir);
  server = await startServer({ config: { videoDirs: [videoDir] } });
  if (HAVE_FFMPEG) {
    clip = join(work, 'clip.mp4');
    makeTestVideo(clip, { seconds: 2, fps: 10, size: '96x64' }); // 20 frames, AAC sine audio
  }
});
after(() => server?.close());

const render = { prompt: 'a red circle', width: 64, height: 64, steps: 2, strength: 0.5, seed: 5 };

async function uploadVideo(url: string, file: string, fields: Record<string, string | number>): Promise<{ status: number; body: Json }> {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.set(k, String(v));
  form.set('video', new Blob([await readFile(file)], { type: 'video/mp4' }), 'clip.mp4');
  const res = await fetch(`${url}/v1/jobs`, { method: 'POST', body: form });
  return { status: res.status, body: await res.json() };
}

test('a 2-second video uploaded, rendered end to end: same frame count, duration, H.264 yuv420p, audio kept', { skip }, async () => {
  const source = probe(clip);
  assert.equal(source.frames, 20);
  const created = await uploadVideo(server.url, clip, { kind: 'video', ...render });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const seen: number[] = [];
  const job = await waitForJob(server.url, created.body.id, (j) => {
    seen.push(j.progress);
    return ['succeeded', 'failed', 'canceled'].includes(j.status);
  });
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.deepEqual(job.urls, [`${server.url}/v1/jobs/${job.id}/results/output.mp4`]);
  assert.ok(seen.every((p, i) => i === 0 || p >= seen[i - 1]!), 'progress never goes back');
  assert.equal(job.stats.frames, 20);
  assert.equal(typeof job.stats.skip_rate, 'number');
  assert.ok(job.stats.render_fps > 0);
  // the file as a client downloads it
  const res = await fetch(job.urls[0]);
  assert.equal(res.status, 200);
  const out = join(work, 'out.mp4');
  await writeFile(out, Buffer.from(await res.arrayBuffer()));
  const result = probe(out);
  assert.equal(result.frames, source.frames);
  assert.ok(Math.abs(result.duration - 2) < 0.15, `duration ${result.duration}`);
  assert.deepEqual(result.video, { codec: 'h264', width: 64, height: 64, pix_fmt: 'yuv420p', frameRate: '10/1' });
  assert.equal(result.audio?.codec, 'aac');
});

test('a video keeps its aspect: a 4:3 clip without a size renders at 128 x 96 (the pixel budget of 128 x 128)', { skip }, async () => {
  const wide = join(work, 'four-three.mp4');
  makeTestVideo(wide, { seconds: 1, fps: 5, size: '160x120', audio: false });
  const { width: _w, height: _h, ...sizeless } = render;
  const created = await uploadVideo(server.url, wide, { kind: 'video', ...sizeless, steps: 1 });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const job = await waitForJob(server.url, created.body.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.deepEqual([job.stats.width, job.stats.height], [128, 96]);
  const out = join(work, 'four-three-out.mp4');
  await writeFile(out, Buffer.from(await (await fetch(job.urls[0])).arrayBuffer()));
  assert.deepEqual([probe(out).video?.width, probe(out).video?.height], [128, 96]);
});

test('a server-side path under a video folder works (no audio in, none out); outside is 403, missing 404', { skip }, async () => {
  const silent = join(videoDir, 'silent.mp4');
  makeTestVideo(silent, { seconds: 1, fps: 8, audio: false, source: 'smptebars' });
  const created = await postJson(`${server.url}/v1/jobs`, { kind: 'video', path: 'silent.mp4', ...render, steps: 1 });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const job = await waitForJob(server.url, created.body.id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  const result = probe(join(server.config.dataDir, 'jobs', job.id, 'output.mp4'));
  assert.equal(result.frames, 8);
  assert.equal(result.audio, undefined);
  // a still picture: the similarity filter skips frames
  assert.ok(job.stats.skipped > 0, `skipped ${job.stats.skipped}`);

  await symlink(clip, join(videoDir, 'escape.mp4'));
  const cases: [string, number][] = [
    [clip, 403], // a real file outside the folder
    ['../clip.mp4', 403], // traversal
    ['escape.mp4', 403], // a symlink out of the folder
    ['nope.mp4', 404],
  ];
  for (const [path, status] of cases) {
    const res = await postJson(`${server.url}/v1/jobs`, { kind: 'video', path, ...render });
    assert.equal(res.status, status, `${path}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.error.field, 'path');
  }
  const both = await uploadVideo(server.url, clip, { kind: 'video', path: 'silent.mp4' });
  assert.equal(both.status, 400);
  const imagesWithFile = await uploadVideo(server.url, clip, { kind: 'images' });
  assert.equal(imagesWithFile.status, 400);
  assert.equal(imagesWithFile.body.error.field, 'video');
  const badField = await uploadVideo(server.url, clip, { steps: 'x' });
  assert.equal(badField.status, 400);
  assert.equal(badField.body.error.field, 'steps');
  // rejected uploads are not left behind
  assert.deepEqual(await readdir(join(server.config.dataDir, 'uploads')), []);
});

test('a file ffmpeg cannot decode fails its job with a clear message; the next job is unaffected', { skip }, async () => {
  const junk = join(work, 'junk.mp4');
  await writeFile(junk, Buffer.alloc(4096, 7));
  const bad = await uploadVideo(server.url, junk, { kind: 'video', ...render });
  const good = await uploadVideo(server.url, clip, { kind: 'video', ...render, steps: 1 });
  assert.equal(bad.status, 201);
  const failed = await waitForJob(server.url, bad.body.id);
  assert.equal(failed.status, 'failed');
  assert.equal(failed.error.code, 'bad_request');
  assert.match(failed.error.message, /cannot decode video/);
  const ok = await waitForJob(server.url, good.body.id);
  assert.equal(ok.status, 'succeeded', JSON.stringify(ok.error));
});

test('cancel kills ffmpeg: a running video job ends canceled with no output', { skip }, async () => {
  const long = join(work, 'long.mp4');
  makeTestVideo(long, { seconds: 20, fps: 25, size: '320x240' });
  const created = await uploadVideo(server.url, long, { kind: 'video', ...render, width: 128, height: 128 });
  await waitForJob(server.url, created.body.id, (j) => j.status === 'processing' && j.progress > 0);
  const res = await fetch(`${server.url}/v1/jobs/${created.body.id}`, { method: 'DELETE' });
  const view = (await res.json()) as Json;
  assert.equal(view.status, 'canceled');
  assert.deepEqual(view.urls, []);
  const files = await readdir(join(server.config.dataDir, 'jobs', created.body.id));
  assert.ok(!files.includes('output.mp4') && !files.some((f) => f.endsWith('.partial')), files.join(' '));
});

test('without ffmpeg a video job is refused with 503 ffmpeg_missing', async () => {
  const none = await startServer({
    config: { videoDirs: [videoDir] },
    jobs: { ffmpeg: () => Promise.reject(new ServiceError('ffmpeg_missing', 'video needs ffmpeg and none was found')) },
  });
  try {
    await writeFile(join(videoDir, 'unread.mp4'), 'never decoded: ffmpeg is looked for first');
    const res = await postJson(`${none.url}/v1/jobs`, { kind: 'video', path: 'unread.mp4', ...render });
    assert.equal(res.status, 503);
    assert.equal(res.body.error.code, 'ffmpeg_missing');
  } finally {
    await none.close();
  }
});
