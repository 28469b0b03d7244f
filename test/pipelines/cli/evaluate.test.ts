/** `npm run evaluate` (pipelines/cli/evaluate.ts) as a user runs it: held-out captions rendered and scored. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import sharp from 'sharp';
import { tempDir } from '../../server/batch/helpers.ts';

test('evaluate renders held-out captions, prints the accuracy as JSON and writes a grid', async () => {
  const grid = join(await tempDir('evaluate-'), 'grid.png');
  const r = spawnSync('npm', ['run', '--silent', 'evaluate', '--', '--steps', '2', '--set', 'exact', '--limit', '8', '--grid', grid], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const json = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'), r.stdout.lastIndexOf('}') + 1)) as { steps: number; exact: Record<string, number> };
  assert.equal(json.steps, 2);
  assert.equal(json.exact['images'], 8);
  // the embedded pack draws its held-out captions (the pack's own figures are in the README; this is a floor)
  for (const key of ['background', 'objectColor', 'position']) assert.ok(json.exact[key]! >= 0.75, `${key}: ${json.exact[key]}`);
  const meta = await sharp(grid).metadata();
  assert.deepEqual([meta.width, meta.height], [8 * 128, 128]);
});
