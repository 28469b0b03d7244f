/**
 * The rooms of ARCHITECTURE.md, checked on the sources: imports point down (server -> pipelines -> models),
 * only models/runtime imports onnxruntime-node, and the runtime never imports training or evaluation code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const sources = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', 'models', 'pipelines', 'server'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => /\.(ts|cjs|mjs|js)$/.test(f));

/** Every import specifier of a file, relative ones resolved to repository paths. */
async function importsOf(file: string): Promise<string[]> {
  const text = await readFile(join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(?\s*|require\(\s*|new URL\(\s*)['"]([^'"]+)['"]/g)].map((m) => m[1]!);
  return specs.map((s) => (s.startsWith('.') ? relative(ROOT, resolve(ROOT, dirname(file), s)) : s));
}

const LAYER = (path: string) => (path.startsWith('server/') ? 2 : path.startsWith('pipelines/') ? 1 : path.startsWith('models/') ? 0 : -1);
/** Rooms the running service never imports. */
const OFFLINE = (path: string) => path.startsWith('models/train/') || path.startsWith('pipelines/evaluation/') || path.startsWith('pipelines/cli/');

test('imports point down: server -> pipelines -> models', async () => {
  const upward: string[] = [];
  for (const file of sources) {
    for (const target of await importsOf(file)) {
      if (LAYER(target) > LAYER(file) && LAYER(target) >= 0) upward.push(`${file} -> ${target}`);
    }
  }
  assert.deepEqual(upward, []);
});

test('only models/runtime imports onnxruntime-node', async () => {
  const importers: string[] = [];
  for (const file of sources) if ((await importsOf(file)).some((t) => t.startsWith('onnxruntime'))) importers.push(file);
  assert.ok(importers.length > 0);
  assert.deepEqual(importers.filter((f) => !f.startsWith('models/runtime/')), []);
});

test('the service never imports training, evaluation or CLI code', async () => {
  const wrong: string[] = [];
  for (const file of sources.filter((f) => !OFFLINE(f))) {
    for (const target of await importsOf(file)) if (OFFLINE(target)) wrong.push(`${file} -> ${target}`);
  }
  assert.deepEqual(wrong, []);
});

test('only server/webrtc imports the WebRTC stack (werift)', async () => {
  const importers: string[] = [];
  for (const file of sources) if ((await importsOf(file)).some((t) => t === 'werift' || t.startsWith('werift/'))) importers.push(file);
  assert.ok(importers.length > 0);
  assert.deepEqual(importers.filter((f) => !f.startsWith('server/webrtc/')), []);
});
