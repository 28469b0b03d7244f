/** The render CLI (pipelines/cli/render.ts) on folders of images and on a video, run as a user runs it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { BASE_PACK } from '../../helpers/fixtures.ts';
import { HAVE_FFMPEG, makeTestVideo, probe, tempDir } from '../../server/batch/helpers.ts';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'pipelines', 'cli', 'render.ts');

function render(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', CLI, '--model', BASE_PACK, '--width', '64', '--height', '64', '--steps', '1', ...args], { encoding: 'utf8' });
}

test('--input-dir renders every image of a folder into --out under the same names', async () => {
  const dir = await tempDir('cli-');
  const input = join(dir, 'in');
  await mkdir(input);
  for (const [name, colour] of [
    ['a.png', { r: 255, g: 0, b: 0 }],
    ['b.jpg', { r: 0, g: 255, b: 0 }],
    ['c.webp', { r: 0, g: 0, b: 255 }],
  ] as const) {
    await sharp({ create: { width: 50, height: 40, channels: 3, background: colour } }).toFile(join(input, name));
  }
  const out = join(dir, 'out');
  const r = render('--input-dir', input, '--out', out, '--prompt', 'a square');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual((await readdir(out)).sort(), ['a.png', 'b.jpg', 'c.webp']);
  assert.equal((await sharp(join(out, 'b.jpg')).metadata()).width, 64);
  const asPng = render('--input-dir', input, '--out', join(dir, 'png'), '--format', 'png');
  assert.equal(asPng.status, 0, asPng.stderr);
  assert.deepEqual((await readdir(join(dir, 'png'))).sort(), ['a.png', 'b.png', 'c.png']);
  const empty = render('--input-dir', out + '-missing', '--out', join(dir, 'x'));
  assert.notEqual(empty.status, 0);
});

test('--video renders a video to MP4 with the same frames and its audio', { skip: HAVE_FFMPEG ? false : 'no ffmpeg' }, async () => {
  const dir = await tempDir('cli-video-');
  const clip = join(dir, 'in.mp4');
  makeTestVideo(clip, { seconds: 1, fps: 10 });
  const out = join(dir, 'out', 'styled.mp4');
  const r = render('--video', clip, '--out', out, '--prompt', 'a circle');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /wrote .*styled\.mp4 \(10 frames 64x64 at 10\/1 fps, .*% skipped/);
  const p = probe(out);
  assert.equal(p.frames, 10);
  assert.equal(p.audio?.codec, 'aac');
  const wrongExt = render('--video', clip, '--out', join(dir, 'x.png'));
  assert.notEqual(wrongExt.status, 0);
  assert.match(wrongExt.stderr, /\.mp4/);
});
