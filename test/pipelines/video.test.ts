/** A video through the stream pipeline (pipelines/video.ts), in process: one output frame per input frame. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Engine } from '../../pipelines/engine.ts';
import { parseParams } from '../../pipelines/params.ts';
import { renderVideo } from '../../pipelines/video.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { HAVE_FFMPEG, makeTestVideo, probe, tempDir } from '../server/batch/helpers.ts';

const skip = HAVE_FFMPEG ? false : 'no ffmpeg on this machine';

test('renderVideo in process: steps 3 (lag 2) still gives one output frame per input frame', { skip }, async () => {
  const dir = await tempDir('render-');
  const clip = join(dir, 'c.mp4');
  makeTestVideo(clip, { seconds: 1, fps: 12, size: '64x64', audio: false });
  const engine = await Engine.load(BASE_PACK);
  const progress: number[] = [];
  const stats = await renderVideo(engine, {
    input: clip,
    output: join(dir, 'out.mp4'),
    params: parseParams({ prompt: 'x', width: 64, height: 64, steps: 3, strength: 0.6 }),
    onProgress: (done) => progress.push(done),
  });
  assert.equal(stats.frames, 12);
  assert.deepEqual(progress, Array.from({ length: 12 }, (_, i) => i + 1));
  assert.equal(probe(join(dir, 'out.mp4')).frames, 12);
});
