/**
 * The live page on the embedded tiny-shapes pack: the fake webcam is re-drawn as the prompt says, and after
 * a prompt typed in the page the output follows the new prompt (checked with the pack's evaluator).
 */
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { Browser, Page } from 'playwright-core';
import { startServer, type RunningServer } from '../../server/app.ts';
import { createLogger } from '../../server/log.ts';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { loadSceneSpec, scoreImage, type SceneAttributes } from '../../pipelines/evaluation/evaluator.ts';
import { API_KEY, browserSkip, browserTest, launchChromium, openPage, until } from './browser.ts';
import { outputAfter, recordWire, type Wire } from './wire.ts';

const RED_ON_BLUE: SceneAttributes = { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'centre' }] };
const YELLOW_ON_BLACK: SceneAttributes = { background: { kind: 'plain', color: 'black' }, objects: [{ shape: 'square', color: 'yellow', size: 'large', position: 'centre' }] };

let server: RunningServer;
let browser: Browser;
let page: Page;
const wires: Wire[] = [];
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);

async function score(bytes: Buffer, attrs: SceneAttributes) {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return scoreImage(spec, { data, width: info.width, height: info.height }, attrs);
}

async function setRange(selector: string, value: number): Promise<void> {
  await page.$eval(selector, (el, v) => {
    const input = el as HTMLInputElement;
    input.value = String(v);
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.dispatchEvent(new Event('change', { bubbles: true }));
  }, value);
}

before(async () => {
  if (browserSkip()) return;
  const dataDir = await mkdtemp(join(tmpdir(), 'web-pack-'));
  server = await startServer({ port: 0, apiKey: API_KEY, dataDir }, { engine: await Engine.load(EMBEDDED_PACK_DIR), log: createLogger({}, 'error') });
  browser = await launchChromium();
  ({ page } = await openPage(browser, `${server.url}/?transport=ws&token=${API_KEY}`, [/404.*\/v1\/(adapters|experts)/]));
  page.on('websocket', (ws) => wires.push(recordWire(ws)));
});

after(async () => {
  await browser?.close();
  await server?.close();
});

browserTest('the webcam is re-drawn as the prompt says, and a new prompt typed in the page is followed', async () => {
  await page.fill('#prompt', 'a large red circle in the centre on a blue background');
  await setRange('#strength', 0.9);
  await page.selectOption('#guidance', 'full');
  await setRange('#guidance_scale', 2);
  // tiny-shapes was trained on squares only: its best pictures are at 128 x 128 (test/bench/REPORT.md, aspect);
  // the camera's own shape is tested in test/server/stream-aspect.test.ts and test/web/live.test.ts
  await page.selectOption('#size_preset', '128x128');
  await page.click('#start');
  await until(() => wires.length === 1 && wires[0]!.outputs.length >= 4, 'four output frames', 60_000);
  const wire = wires[0]!;
  assert.deepEqual([wire.start!['params'].width, wire.start!['params'].height], [128, 128]);
  const first = await score(wire.outputs.at(-1)!.bytes, RED_ON_BLUE);
  assert.ok(first.background && first.objects[0]!.color, `before: ${JSON.stringify(first)}`);

  await page.fill('#prompt', 'a large yellow square in the centre on a black background');
  const confirmed = (m: Record<string, unknown>) => m['type'] === 'updated' && (m['params'] as { prompt?: string }).prompt?.includes('yellow') === true;
  await until(() => outputAfter(wire, confirmed) !== undefined, 'an output of a frame sent after the update', 60_000);
  const mark = wire.outputs.indexOf(outputAfter(wire, confirmed)!);
  await until(() => wire.outputs.length > mark + 1, 'one more output (2 steps: one frame in flight)', 60_000);
  const later = await score(wire.outputs.at(-1)!.bytes, YELLOW_ON_BLACK);
  assert.ok(later.background && later.objects[0]!.color, `after: ${JSON.stringify(later)}`);
});
