/**
 * The Browser Source page (web/view.html) in headless Chromium: it finishes loading (a page holding the
 * endless MJPEG response in an <img> never does), shows the "waiting for NAME" placeholder, then the named
 * stream's frames, the placeholder again after stop, and reconnects by itself after a server restart.
 */
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import type { Browser, Page } from 'playwright-core';
import type { RunningServer } from '../../server/app.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { API_KEY, browserSkip, browserTest, launchChromium, openPage, startWebServer, until } from './browser.ts';

let server: RunningServer;
let browser: Browser;
let page: Page;
let problems: string[];
const NAME = 'view-cam';

before(async () => {
  if (browserSkip()) return;
  server = await startWebServer('none');
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** The canvas as raw RGB, and how far it is (mean absolute difference, 0-255) from a JPEG. */
async function distanceTo(jpeg: Buffer): Promise<number> {
  const png = await page.$eval('#view', (c) => (c as HTMLCanvasElement).toDataURL('image/png'));
  const shown = await sharp(Buffer.from(png.split(',')[1]!, 'base64')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const wanted = await sharp(jpeg).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  if (shown.info.width !== wanted.info.width || shown.info.height !== wanted.info.height) return Infinity;
  let sum = 0;
  for (let i = 0; i < shown.data.length; i++) sum += Math.abs(shown.data[i]! - wanted.data[i]!);
  return sum / shown.data.length;
}

const framesShown = async () => Number(await page.evaluate(() => document.body.dataset['frames'] ?? '0'));
const waitingJpeg = async () => Buffer.from(await (await fetch(`${server.url}/v1/streams/by-name/${NAME}/snapshot?token=${API_KEY}`)).arrayBuffer());
/** Pixels decoded by Chromium and by sharp differ a little (JPEG decoders round differently). */
const SAME = 3;

browserTest('the page finishes loading and shows the placeholder while no stream of the name runs', async () => {
  // waits for the load event; Chromium logs the dropped and refused connection of the restart below
  const restart = /ERR_(INCOMPLETE_CHUNKED_ENCODING|CONNECTION_REFUSED|EMPTY_RESPONSE) .*\/mjpeg/;
  ({ page, problems } = await openPage(browser, `${server.url}/view.html?name=${NAME}&token=${API_KEY}`, [restart]));
  await until(async () => (await framesShown()) >= 1, 'a frame on the canvas');
  const waiting = await waitingJpeg();
  await until(async () => (await distanceTo(waiting)) < SAME, 'the placeholder on the canvas');
  const n = await framesShown();
  await until(async () => (await framesShown()) > n, 'the placeholder repeated (the source stays alive)');
});

browserTest('a stream of that name shows up, and after stop the placeholder again, without reloading the page', async () => {
  const client = await StreamClient.connect(server.url, { name: NAME, params: { steps: 1, similarity_threshold: 1 } }, { token: API_KEY });
  for (let x = 20; x <= 100; x += 20) await client.roundTrip(await shapeFrame({ x }));
  const last = client.frames.at(-1)!.bytes;
  await until(async () => (await distanceTo(last)) < SAME, "the stream's latest output on the canvas");
  await client.close();
  const waiting = await waitingJpeg();
  await until(async () => (await distanceTo(waiting)) < SAME, 'the placeholder after stop');
});

browserTest('after a server restart the page reconnects by itself', async () => {
  const port = server.port;
  await server.close();
  server = await startWebServer('none', { port });
  const before = await framesShown();
  await until(async () => (await framesShown()) > before + 1, 'frames after the restart', 30_000);
  assert.ok((await distanceTo(await waitingJpeg())) < SAME);
  assert.deepEqual(problems, [], 'no script errors in the page');
});
