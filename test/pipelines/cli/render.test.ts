/** The render CLI (pipelines/cli/render.ts) on folders of images and on a video, run as a user runs it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { readImageText } from '../../../pipelines/codecs/image.ts';
import { BASE_PACK, FIXTURES } from '../../helpers/fixtures.ts';
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

test('no --seed draws one and prints it; every image carries its parameters; --from-png renders the same file again, flags override', async () => {
  const dir = await tempDir('cli-png-');
  const a = render('--prompt', 'a red circle', '--negative', 'a blue background', '--out', join(dir, 'a.png'));
  assert.equal(a.status, 0, a.stderr);
  const seed = Number(/seed (\d+)\)/.exec(a.stdout)?.[1]);
  assert.ok(Number.isInteger(seed), a.stdout);
  assert.match(a.stderr, /note: negative prompt given: guidance self ignores it, so full guidance is used/);
  const text = await readImageText(await readFile(join(dir, 'a.png')));
  assert.match(text ?? '', new RegExp(`^a red circle\\nNegative prompt: a blue background\\nSteps: 1, Sampler: LCM, CFG scale: 1.2, Seed: ${seed}, Size: 64x64, Model: base, Guidance: full$`));
  const again = spawnSync(process.execPath, ['--import', 'tsx', CLI, '--model', BASE_PACK, '--from-png', join(dir, 'a.png'), '--out', join(dir, 'b.png')], { encoding: 'utf8' });
  assert.equal(again.status, 0, again.stderr);
  assert.ok((await readFile(join(dir, 'b.png'))).equals(await readFile(join(dir, 'a.png'))), 'the same file, byte for byte');
  const other = render('--from-png', join(dir, 'a.png'), '--seed', String((seed + 1) % 2 ** 32), '--out', join(dir, 'c.webp'));
  assert.equal(other.status, 0, other.stderr);
  assert.match((await readImageText(await readFile(join(dir, 'c.webp')))) ?? '', new RegExp(`^a red circle\\nNegative prompt: a blue background\\n.*Seed: ${(seed + 1) % 2 ** 32},`));
  const second = render('--prompt', 'a red circle', '--out', join(dir, 'd.png'));
  assert.notEqual(Number(/seed (\d+)\)/.exec(second.stdout)?.[1]), seed, 'another run, another seed');
});

test('flags name themselves in errors', () => {
  for (const [args, flag] of [
    [['--budget', '2'], '--budget'],
    [['--adapter', 'heart:x'], '--adapter'],
    [['--seed', '1:0.5', '--seed', '2:abc'], '--seed'],
    [['--t-index-list', '10,99'], '--t-index-list'],
    [['--prompt', 'a', '--prompt-weight', '1', '--prompt-weight', '2'], '--prompt-weight'],
    [['--from-png', join(FIXTURES, 'golden', 'stream-0.png')], '--from-png'],
  ] as const) {
    const r = render(...args, '--out', join(tmpdir(), 'never.png'));
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}`);
    assert.ok(r.stderr.includes(flag), `${args.join(' ')}: ${r.stderr}`);
  }
});
