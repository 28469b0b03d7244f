/**
 * The render page end to end in headless Chromium against the real server with the batch API (async jobs),
 * on the fixture pack: a txt2img batch lands in the gallery, "Reuse settings" loads an image's own seed,
 * an uploaded image renders img2img, and an uploaded video renders as a video job.
 */
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import type { RunningServer } from '../../server/app.ts';
import { shapeFrame } from '../helpers/stream-client.ts';
import { HAVE_FFMPEG } from '../server/batch/helpers.ts';
import { API_KEY, browserSkip, browserTest, launchChromium, openPage, screenshot, startWebServer, unlabelledControls, until, writeScreenshots } from './browser.ts';

let server: RunningServer;
let browser: Browser;
let page: Page;
let problems: string[];
let work: string;

before(async () => {
  if (browserSkip()) return;
  server = await startWebServer();
  browser = await launchChromium();
  ({ page, problems } = await openPage(browser, `${server.url}/render.html?token=${API_KEY}`));
  work = await mkdtemp(join(tmpdir(), 'web-render-'));
});

after(async () => {
  await browser?.close();
  await server?.close();
  await writeScreenshots();
});

/** Gallery images that have loaded (decoded with a size). */
const loadedImages = () => page.$$eval('#gallery img', (imgs) => imgs.filter((i) => (i as HTMLImageElement).naturalWidth > 0).length);

browserTest('a txt2img batch renders into the gallery with progress', async () => {
  assert.deepEqual(await unlabelledControls(page), [], 'every control has a label');
  await page.fill('#count', '2');
  await page.fill('#steps', '1');
  await page.fill('#seed', '40');
  await page.click('#render');
  await until(async () => (await loadedImages()) === 2, 'two images in the gallery');
  await page.waitForSelector('#jobs li:has-text("done · 2 images")');
  assert.equal(await page.getAttribute('#jobs progress', 'value'), '1');
  const captions = await page.$$eval('#gallery p', (ps) => ps.map((p) => p.textContent ?? ''));
  // newest first: image 1 of the batch (seed 41) sits before image 0 (seed 40)
  assert.match(captions[0]!, /txt2img · seed 41 .* 1 step — a large red circle/);
  assert.match(captions[1]!, /seed 40/);
  const size = await page.$eval('#gallery img', (i) => [(i as HTMLImageElement).naturalWidth, (i as HTMLImageElement).naturalHeight]);
  assert.deepEqual(size, [128, 128]);
});

browserTest('"Reuse settings" loads an image\'s own settings into the form', async () => {
  await page.fill('#seed', '7');
  await page.fill('#prompt', 'something else');
  await page.click('#gallery li:first-child button:has-text("Reuse settings")');
  assert.equal(await page.inputValue('#seed'), '41');
  assert.equal(await page.inputValue('#prompt'), 'a large red circle in the centre on a blue background');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'prompt', 'focus moves to the prompt');
});

browserTest('img2img from an uploaded image', async () => {
  await page.check('input[name="mode"][value="img2img"]');
  await page.click('#render'); // no image yet: a readable message, nothing sent
  await page.waitForSelector('#errors .error:has-text("choose or drop an input image")');
  const input = join(work, 'input.png');
  await writeFile(input, await shapeFrame({ x: 40 }));
  await page.setInputFiles('#init_image', input);
  await page.waitForSelector('#init_preview:not([hidden])');
  await page.fill('#count', '1');
  await page.click('#render');
  await until(async () => (await loadedImages()) === 3, 'the img2img result in the gallery');
  assert.match((await page.textContent('#gallery li:first-child p'))!, /^img2img · seed 41/);
  await page.click('#errors .error button');
});

browserTest('a video job renders an uploaded clip with progress', async () => {
  const clip = join(work, 'clip.mp4');
  const ffmpeg = process.env['FFMPEG_PATH'] ?? 'ffmpeg';
  const made = spawnSync(ffmpeg, ['-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc=size=96x64:rate=8:duration=1', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', clip]);
  assert.equal(made.status, 0, `ffmpeg is needed to make the test clip (Debian: apt-get install ffmpeg): ${made.error?.message ?? made.stderr}`);
  await page.setInputFiles('#video_file', clip);
  await page.click('#render_video');
  await page.waitForSelector('#jobs li:has-text("done · 1 video")', { timeout: 60_000 });
  const duration = await page.$eval('#gallery video', (v) => new Promise<number>((resolve) => {
    const video = v as HTMLVideoElement;
    if (video.readyState >= 1) resolve(video.duration);
    else video.addEventListener('loadedmetadata', () => resolve(video.duration), { once: true });
  }));
  assert.ok(duration > 0.5, `the rendered clip plays (${duration} s)`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await screenshot(page, 'render.png');
  assert.deepEqual(problems, [], 'no script errors in the page');
}, { skip: HAVE_FFMPEG ? false : 'no ffmpeg on this machine' });

browserTest('without the job API the page renders through AUTOMATIC1111\'s API, and says so when there is no render API', async () => {
  for (const kind of ['a1111', 'none'] as const) {
    const other = await startWebServer(kind);
    try {
      const { page: p, problems: pageProblems } = await openPage(browser, `${other.url}/render.html?token=${API_KEY}`, [/404.*\/(v1\/jobs|sdapi\/v1\/(txt2img|progress))/]);
      await p.fill('#count', '2');
      await p.fill('#steps', '1');
      await p.fill('#seed', '5');
      await p.click('#render');
      if (kind === 'a1111') {
        await p.waitForSelector('#jobs li:has-text("done · 2 images")');
        assert.equal(await p.locator('#gallery img').count(), 2);
        assert.match((await p.textContent('#gallery li:first-child p'))!, /seed 6/);
        // videos need jobs: a clear message instead
        await p.setInputFiles('#video_file', { name: 'clip.mp4', mimeType: 'video/mp4', buffer: Buffer.from('not really a video') });
        await p.click('#render_video');
        await p.waitForSelector('#errors .error:has-text("video rendering needs the job API")');
      } else {
        await p.waitForSelector('#errors .error:has-text("this server has no render API")');
        assert.equal(await p.locator('#gallery li').count(), 0);
      }
      assert.deepEqual(pageProblems, []);
      await p.context().close();
    } finally {
      await other.close();
    }
  }
});
