import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ServiceError } from '../../../models/errors.ts';
import { decodeFrames, parseFfmpegInfo, parseRate, probeVideo, resolveFfmpeg } from '../../../pipelines/codecs/ffmpeg.ts';
import { HAVE_FFMPEG, makeTestVideo, probe, tempDir } from '../../server/batch/helpers.ts';

const skip = HAVE_FFMPEG ? false : 'no ffmpeg on this machine';

async function fakeBinary(dir: string, name: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  await writeFile(path, '#!/bin/sh\nexit 0\n');
  await chmod(path, 0o755);
  return path;
}

test('ffmpeg is resolved FFMPEG_PATH first, then ffmpeg-static, then PATH; ffprobe beside it', async () => {
  const dir = await tempDir('ffbin-');
  const onPath = await fakeBinary(join(dir, 'path'), 'ffmpeg');
  const probeBeside = await fakeBinary(join(dir, 'path'), 'ffprobe');
  const bundled = await fakeBinary(join(dir, 'static'), 'ffmpeg');
  const explicit = await fakeBinary(join(dir, 'explicit'), 'ffmpeg');
  const noStatic = { staticPath: async () => undefined };
  const withStatic = { staticPath: async () => bundled };
  assert.deepEqual(await resolveFfmpeg({ PATH: join(dir, 'path') }, noStatic), { ffmpeg: onPath, ffprobe: probeBeside, source: 'PATH' });
  assert.equal((await resolveFfmpeg({ PATH: join(dir, 'path') }, withStatic)).source, 'ffmpeg-static');
  assert.equal((await resolveFfmpeg({ PATH: join(dir, 'path') }, withStatic)).ffprobe, undefined);
  const chosen = await resolveFfmpeg({ PATH: join(dir, 'path'), FFMPEG_PATH: explicit }, withStatic);
  assert.deepEqual([chosen.ffmpeg, chosen.source], [explicit, 'FFMPEG_PATH']);
  // ffmpeg-static whose download failed: its path does not exist -> on to PATH
  assert.equal((await resolveFfmpeg({ PATH: join(dir, 'path') }, { staticPath: async () => join(dir, 'missing') })).source, 'PATH');
});

test('no ffmpeg anywhere, or a wrong FFMPEG_PATH: ServiceError ffmpeg_missing with a clear message', async () => {
  const none = { staticPath: async () => undefined };
  await assert.rejects(resolveFfmpeg({ PATH: '/nonexistent' }, none), (e: unknown) => {
    return e instanceof ServiceError && e.code === 'ffmpeg_missing' && e.status === 503 && /FFMPEG_PATH/.test(e.message) && /apt-get install ffmpeg/.test(e.message);
  });
  await assert.rejects(resolveFfmpeg({ PATH: '/usr/bin', FFMPEG_PATH: '/nonexistent/ffmpeg' }, none), (e: unknown) => {
    return e instanceof ServiceError && e.code === 'ffmpeg_missing' && e.message.includes('/nonexistent/ffmpeg');
  });
});

test('frame rates and the `ffmpeg -i` fallback parser', () => {
  assert.equal(parseRate('30000/1001').toFixed(3), '29.970');
  assert.equal(parseRate('25'), 25);
  assert.equal(parseRate('0/0'), 0);
  const stderr = `Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'clip.mp4':
  Duration: 00:00:02.02, start: 0.000000, bitrate: 120 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 96x64 [SAR 1:1 DAR 3:2], 50 kb/s, 10 fps, 10 tbr, 10240 tbn (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 64 kb/s (default)`;
  assert.deepEqual(parseFfmpegInfo(stderr), { width: 96, height: 64, frameRate: '10', fps: 10, duration: 2.02, frames: 20, audio: { codec: 'aac' } });
  assert.equal(parseFfmpegInfo('/x: Invalid data found when processing input'), undefined);
});

test('probe with ffprobe and with the ffmpeg fallback agree; frames decode at the target size', { skip }, async () => {
  const dir = await tempDir('ffprobe-');
  const clip = join(dir, 'c.mp4');
  makeTestVideo(clip, { seconds: 1, fps: 10, size: '96x64' });
  const paths = await resolveFfmpeg();
  const a = await probeVideo(paths, clip);
  const b = await probeVideo({ ...paths, ffprobe: undefined }, clip);
  assert.deepEqual([a.width, a.height, a.fps, a.frames, a.audio?.codec], [96, 64, 10, 10, 'aac']);
  assert.deepEqual([b.width, b.height, b.fps, b.frames, b.audio?.codec], [96, 64, 10, 10, 'aac']);
  let frames = 0;
  for await (const frame of decodeFrames(paths, clip, { width: 32, height: 48 })) {
    assert.equal(frame.length, 32 * 48 * 3);
    frames++;
  }
  assert.equal(frames, 10);
  // stopping early kills the decoder without an error
  for await (const _ of decodeFrames(paths, clip, { width: 32, height: 32 })) break;
});

test('decodeFrames with fit pad keeps the whole picture: a wide clip in a square gets black bars', { skip }, async () => {
  const dir = await tempDir('pad-');
  const clip = join(dir, 'wide.mp4');
  makeTestVideo(clip, { seconds: 1, fps: 2, size: '128x64', audio: false, source: 'smptebars' });
  const paths = await resolveFfmpeg();
  const row = (frame: Buffer, y: number) => [...frame.subarray(y * 64 * 3, (y + 1) * 64 * 3)];
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  for await (const frame of decodeFrames(paths, clip, { width: 64, height: 64 }, 'pad')) {
    assert.ok(mean(row(frame, 2)) < 20, 'a black bar at the top');
    assert.ok(mean(row(frame, 24)) > 60, 'the picture in the middle');
    assert.ok(mean(row(frame, 61)) < 20, 'a black bar at the bottom');
    break;
  }
  for await (const frame of decodeFrames(paths, clip, { width: 64, height: 64 }, 'crop')) {
    assert.ok(mean(row(frame, 2)) > 60, 'crop fills the frame');
    break;
  }
});
