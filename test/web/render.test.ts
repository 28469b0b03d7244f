/**
 * The render page end to end in headless Chromium against the real server with the batch API (async jobs),
 * on the fixture pack: a txt2img batch lands in the gallery (its images in seed order), "Reuse settings" loads an
 * image's own seed, an uploaded image renders img2img, an uploaded video renders as a video job; after a reload
 * the gallery lists the server's jobs a page at a time; the viewer shows an image full size with its parameters;
 * an image dropped on "Load settings" fills the form; deleting a job removes it from the server.
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
  const captions = await page.$$eval('#gallery .gallery p', (ps) => ps.map((p) => p.textContent ?? ''));
  // a job's images in seed order: image 0 (seed 40), then image 1 (seed 41)
  assert.match(captions[0]!, /txt2img · seed 40 .* 1 step — a large red circle/);
  assert.match(captions[1]!, /seed 41/);
  const size = await page.$eval('#gallery img', (i) => [(i as HTMLImageElement).naturalWidth, (i as HTMLImageElement).naturalHeight]);
  assert.deepEqual(size, [128, 128]);
});

browserTest('"Reuse settings" loads an image\'s own settings into the form', async () => {
  await page.fill('#seed', '7');
  await page.fill('#prompt', 'something else');
  await page.click('#gallery .gallery li:nth-child(2) button:has-text("Reuse settings")');
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
  assert.match((await page.textContent('#gallery > li:first-child .gallery p'))!, /^img2img · seed 41/);
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
        assert.match((await p.textContent('#gallery .gallery li:nth-child(2) p'))!, /seed 6/);
        // videos need jobs: a clear message instead
        await p.setInputFiles('#video_file', { name: 'clip.mp4', mimeType: 'video/mp4', buffer: Buffer.from('not really a video') });
        await p.click('#render_video');
        await p.waitForSelector('#errors .error:has-text("video rendering needs the job API")');
      } else {
        await p.waitForSelector('#errors .error:has-text("this server has no render API")');
        assert.equal(await p.locator('#gallery img').count(), 0);
      }
      assert.deepEqual(pageProblems, []);
      await p.context().close();
    } finally {
      await other.close();
    }
  }
});

/** The job ids the gallery shows, top to bottom. */
const galleryJobs = () => page.$$eval('#gallery > li[data-job]', (lis) => lis.map((li) => (li as HTMLElement).dataset['job']!));

browserTest('after a reload the gallery lists the server\'s jobs with their images: newest job first, each job\'s images in seed order', async () => {
  const before = await galleryJobs();
  assert.ok(before.length >= 3, `the jobs rendered so far: ${before.length}`);
  await page.reload();
  await until(async () => (await galleryJobs()).length === before.length, 'the jobs listed again');
  assert.deepEqual(await galleryJobs(), before, 'the same jobs in the same order');
  await until(async () => (await loadedImages()) >= 3, 'their images load');
  const captions = await page.$$eval(`#gallery > li[data-job="${before.at(-1)}"] .gallery p`, (ps) => ps.map((p) => p.textContent ?? ''));
  assert.match(captions[0]!, /^txt2img · seed 40 /);
  assert.match(captions[1]!, /^txt2img · seed 41 /);
  assert.equal(await page.locator('#gallery video').count(), 1, 'the video job too');
});

browserTest('the viewer shows an image full size with its parameters; "Reuse settings" there loads them', async () => {
  const oldest = (await galleryJobs()).at(-1)!;
  await page.click(`#gallery > li[data-job="${oldest}"] .gallery li:nth-child(2) button.thumb`);
  await page.waitForSelector('#viewer[open]');
  await until(() => page.$eval('#viewer_image', (i) => (i as HTMLImageElement).naturalWidth > 0), 'the full image');
  assert.deepEqual(await page.$eval('#viewer_image', (i) => [(i as HTMLImageElement).naturalWidth, (i as HTMLImageElement).width]), [128, 128], 'shown at its own size');
  const params = await page.$$eval('#viewer_params dt, #viewer_params dd', (els) => els.map((e) => e.textContent ?? ''));
  assert.deepEqual(params.slice(params.indexOf('seed'), params.indexOf('seed') + 2), ['seed', '41']);
  assert.equal(params[params.indexOf('prompt') + 1], 'a large red circle in the centre on a blue background');
  await screenshot(page, 'render-viewer.png');
  await page.fill('#seed', '3');
  await page.click('#viewer_reuse');
  assert.equal(await page.isVisible('#viewer'), false, 'the viewer closes');
  assert.equal(await page.inputValue('#seed'), '41');
  assert.equal(await page.inputValue('#steps'), '1');
});

browserTest('an image dropped on "Load settings" fills the form with the parameters it carries', async () => {
  // a PNG the service wrote elsewhere (through the A1111 API)
  const ok = await fetch(`${server.url}/sdapi/v1/txt2img`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify({ prompt: 'a small green triangle', negative_prompt: 'blue', seed: 77, steps: 3, cfg_scale: 1.5, width: 96, height: 64, override_settings: { t_index_list: [10, 30], vae: 'full' } }),
  });
  assert.equal(ok.status, 200);
  const png = ((await ok.json()) as { images: string[] }).images[0]!;
  const dataTransfer = await page.evaluateHandle((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'made-elsewhere.png', { type: 'image/png' }));
    return dt;
  }, png);
  await page.fill('#prompt', 'something else');
  await page.dispatchEvent('#settings_drop', 'drop', { dataTransfer });
  await until(async () => (await page.inputValue('#seed')) === '77', 'the form filled from the image');
  assert.deepEqual(
    await Promise.all(['#prompt', '#negative_prompt', '#steps', '#guidance', '#guidance_scale', '#width', '#height', '#t_index_list', '#vae'].map((s) => page.inputValue(s))),
    ['a small green triangle', 'blue', '2', 'full', '1.5', '96', '64', '10, 30', 'full'],
    'steps: the 2 steps the t_index_list ran (the image records what was run)',
  );
  assert.match((await page.textContent('#status'))!, /settings loaded from made-elsewhere\.png \(seed 77\)/);
  // rendering with them gives the same image again
  await page.fill('#count', '1');
  await page.check('input[name="mode"][value="txt2img"]');
  const jobsBefore = (await galleryJobs()).length;
  await page.click('#render');
  await until(async () => (await galleryJobs()).length === jobsBefore + 1, 'the new job, finished');
  const [job] = await galleryJobs();
  const view = (await (await fetch(`${server.url}/v1/jobs/${job}`, { headers: { authorization: `Bearer ${API_KEY}` } })).json()) as { urls: string[] };
  const again = Buffer.from(await (await fetch(`${view.urls[0]}?token=${API_KEY}`)).arrayBuffer());
  assert.ok(again.equals(Buffer.from(png, 'base64')), 'the same PNG, parameters text included');
  // an image with no parameters says so
  const bare = await page.evaluateHandle(() => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 8;
    return new Promise<DataTransfer>((resolve) => canvas.toBlob((blob) => {
      const dt = new DataTransfer();
      dt.items.add(new File([blob!], 'plain.png', { type: 'image/png' }));
      resolve(dt);
    }, 'image/png'));
  });
  await page.dispatchEvent('#settings_drop', 'drop', { dataTransfer: bare });
  await page.waitForSelector('#errors .error:has-text("plain.png carries no generation parameters")');
  await page.click('#errors .error button');
});

browserTest('deleting a job removes it and its files from the server; the listing pages with "Show older jobs"', async () => {
  const [newest] = await galleryJobs();
  const auth = { headers: { authorization: `Bearer ${API_KEY}` } };
  const files = ((await (await fetch(`${server.url}/v1/jobs/${newest}`, auth)).json()) as { urls: string[] }).urls;
  assert.equal((await fetch(files[0]!, auth)).status, 200);
  await page.click(`#gallery > li[data-job="${newest}"] .job-head button:has-text("Delete")`);
  await until(async () => !(await galleryJobs()).includes(newest!), 'the job leaves the gallery');
  assert.equal((await fetch(`${server.url}/v1/jobs/${newest}`, auth)).status, 404);
  assert.equal((await fetch(files[0]!, auth)).status, 404, 'its files are gone');
  // more jobs than a page: the next page comes on demand
  for (let i = 0; i < 9; i++) {
    const res = await fetch(`${server.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth.headers }, body: JSON.stringify({ kind: 'images', prompt: `job ${i}`, steps: 1, width: 64, height: 64, seed: i }) });
    assert.equal(res.status, 201);
  }
  const total = ((await (await fetch(`${server.url}/v1/jobs?limit=100`, auth)).json()) as { jobs: unknown[] }).jobs.length;
  assert.ok(total > 10, `${total} jobs`);
  await page.reload();
  await until(async () => (await page.locator('#gallery > li').count()) === 10, 'one page of jobs');
  assert.equal(await page.isVisible('#more_jobs'), true);
  await page.click('#more_jobs');
  await until(async () => (await page.locator('#gallery > li').count()) === total, 'all the jobs');
  assert.equal(await page.isVisible('#more_jobs'), false);
  assert.deepEqual(problems, [], 'no script errors in the page');
});
