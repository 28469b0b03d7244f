/**
 * README's `npm test` on a fresh machine: without a Chromium the browser tests are skipped with a loud notice
 * that says how to install one, and the run passes; under CI (CI=true) they are required and the run fails.
 * Runs a real browser test file in a child process with CHROMIUM_PATH pointing nowhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function runViewTests(ci: string | undefined) {
  const env: NodeJS.ProcessEnv = { ...process.env, CHROMIUM_PATH: '/nonexistent/chromium' };
  delete env['CI'];
  delete env['NODE_TEST_CONTEXT']; // the child is a test run of its own, not part of this one
  if (ci !== undefined) env['CI'] = ci;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', 'test/web/view.test.ts'], { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('no Chromium outside CI: the browser tests are skipped, loudly, with the install command', () => {
  const { status, output } = runViewTests(undefined);
  assert.equal(status, 0, output);
  assert.match(output, /!! BROWSER TESTS SKIPPED: no Chromium found/);
  assert.match(output, /apt-get install chromium/);
  assert.match(output, /# skipped [1-9]/);
  assert.match(output, /# fail 0/);
});

test('no Chromium under CI=true: the browser tests fail', () => {
  const { status, output } = runViewTests('true');
  assert.notEqual(status, 0);
  assert.match(output, /browser tests are required under CI/);
});
