/**
 * The live page end to end in headless Chromium with a fake webcam, against the real server on the fixture
 * pack (random weights: outputs are meaningless pictures, but exactly reproducible). The test watches the
 * page's WebSocket from the outside (playwright's frame events) and the server's own stream state.
 */
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { readFile } from 'node:fs/promises';
import type { Browser, Page } from 'playwright-core';
import type { RunningServer } from '../../server/app.ts';
import { StreamPipeline } from '../../pipelines/stream-pipeline.ts';
import { parseParams, type GenerationParams } from '../../pipelines/params.ts';
import { decodeImage, encodeImage, probeImage } from '../../pipelines/codecs/image.ts';
import { API_KEY, browserSkip, browserTest, launchChromium, openPage, screenshot, startWebServer, unlabelledControls, until, writeScreenshots } from './browser.ts';
import { outputAfter, recordWire, streamIdOf, type Wire } from './wire.ts';

const FIRST_PROMPT = 'a large red circle in the centre on a blue background';
const NEW_PROMPT = 'a small yellow triangle at the top on a black background';

let server: RunningServer;
let browser: Browser;
let page: Page;
let problems: string[];
const wires: Wire[] = [];
const rawSockets: Duplex[] = [];
const current = () => wires[wires.length - 1]!;
const streamId = (wire: Wire) => streamIdOf(wire)!;

/**
 * What the server's pipeline makes of `input` with `params` as a fresh stream (steps 1: no frames in flight),
 * at the size the server picks for the input's shape.
 */
async function reference(params: GenerationParams, input: Buffer): Promise<Buffer> {
  const pipeline = await StreamPipeline.create(server.ctx.engine, params, undefined, 'img2img', server.ctx.defaults.live);
  const info = await probeImage(input);
  const load = async (size: { width: number; height: number }, fit: 'crop' | 'pad') => (await decodeImage(input, size.width, size.height, { fit, info })).data;
  const [out] = await pipeline.processInput(load, 1, info.width / info.height).results;
  return encodeImage(out!.image, out!.width, out!.height, 'jpeg', 80);
}

before(async () => {
  if (browserSkip()) return;
  server = await startWebServer();
  server.http.on('upgrade', (_req, socket: Duplex) => rawSockets.push(socket));
  browser = await launchChromium();
  // the optional adapter/expert endpoints answer 404 on this server: the page hides those sections
  ({ page, problems } = await openPage(browser, `${server.url}/?transport=ws&token=${API_KEY}`, [/404.*\/v1\/(adapters|experts)/]));
  page.on('websocket', (ws) => wires.push(recordWire(ws)));
});

after(async () => {
  await browser?.close();
  await server?.close();
  await writeScreenshots();
});

browserTest('the live page streams the fake webcam: outputs arrive and change', async () => {
  assert.deepEqual(await unlabelledControls(page), [], 'every control has a label');
  // steps 1 and the similarity filter off make each output a function of its own input (checked below)
  await page.fill('#steps', '1');
  await page.focus('#similarity_threshold');
  await page.keyboard.press('End');
  await page.click('#start');
  await until(() => wires.length === 1 && current().outputs.length >= 4, 'four output frames');
  const wire = current();
  assert.equal(wire.start?.['params'].prompt, FIRST_PROMPT);
  assert.equal(wire.start?.['params'].steps, 1);
  assert.equal(wire.start?.['params'].similarity_threshold, 1);
  const distinct = new Set(wire.outputs.map((o) => o.bytes.toString('base64')));
  assert.ok(distinct.size >= 2, 'outputs follow the moving webcam picture');
  assert.equal(await page.textContent('#status'), 'streaming');
  await until(async () => Number(await page.textContent('#stat_outputs')) >= 4, 'the outputs counter');
  assert.notEqual(await page.textContent('#stat_fps'), '–');
  assert.ok(await page.isHidden('#adapters_section'), 'no adapter endpoint: section hidden');
  // the canvas shows the latest output
  const shown = Number(await page.getAttribute('#output', 'data-output-id'));
  assert.ok(shown >= 1);
});

browserTest('the MJPEG URL for OBS and the snapshot download work', async () => {
  const id = streamId(current());
  const mjpeg = await page.inputValue('#mjpeg_url');
  assert.equal(mjpeg, `${server.url}/v1/streams/${id}/mjpeg?token=${API_KEY}`);
  const res = await fetch(mjpeg);
  assert.equal(res.headers.get('content-type'), 'multipart/x-mixed-replace;boundary=frame');
  const { value } = await res.body!.getReader().read();
  assert.match(Buffer.from(value!).subarray(0, 40).toString('latin1'), /^--frame\r\nContent-Type: image\/jpeg/);
  void res.body!.cancel().catch(() => {});
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#snapshot')]);
  assert.match(download.suggestedFilename(), /^snapshot-\d+\.jpg$/);
  const bytes = await readFile((await download.path())!);
  assert.deepEqual([...bytes.subarray(0, 3)], [0xff, 0xd8, 0xff], 'a JPEG');
});

browserTest('a prompt typed in the page reaches the server and the output follows it', async () => {
  const wire = current();
  await page.fill('#prompt', NEW_PROMPT);
  await page.press('#prompt', 'Tab'); // leaving the field applies at once (else after a short pause)
  const confirmed = (m: Record<string, unknown>) => m['type'] === 'updated' && (m['params'] as { prompt?: unknown }).prompt === NEW_PROMPT;
  await until(() => wire.messages.some((m) => confirmed(m.msg)), 'the server to confirm the update');
  const updates = wire.sent.filter((m) => m['type'] === 'update');
  assert.deepEqual(updates.map((m) => Object.keys(m['params'])), [['prompt']], 'one update with only what changed');
  const session = server.streams.get(streamId(wire));
  assert.equal(session.params.prompt, NEW_PROMPT, "the stream's parameters on the server");
  await until(() => outputAfter(wire, confirmed) !== undefined, 'an output of a frame sent after the update');
  const output = outputAfter(wire, confirmed)!;
  const input = wire.inputs[output.meta['input_id'] - 1]!;
  const withNew = await reference(session.params, input);
  const withOld = await reference(parseParams({ ...session.params, prompt: FIRST_PROMPT }), input);
  assert.ok(output.bytes.equals(withNew), 'the output is that frame rendered with the new prompt');
  assert.ok(!withNew.equals(withOld), 'and the prompt makes a difference to it');
});

browserTest('a value the server rejects shows its message and marks the field; the next successful update clears both', async () => {
  const wire = current();
  await page.fill('#width', '100');
  await page.press('#width', 'Tab');
  await page.waitForSelector('#errors .error');
  assert.match((await page.textContent('#errors'))!, /width: must be a multiple of 8 \(bad_request\)/);
  assert.equal(await page.getAttribute('#width', 'aria-invalid'), 'true');
  const before = wire.outputs.length;
  await until(() => wire.outputs.length > before + 2, 'the stream to go on after the error');
  assert.equal(await page.locator('#errors .error').count(), 1, 'the message stays while the value is wrong');
  await page.fill('#width', '128');
  await page.press('#width', 'Tab');
  await until(async () => (await page.getAttribute('#width', 'aria-invalid')) === null, 'the mark to clear');
  await until(async () => (await page.locator('#errors .error').count()) === 0, 'the message to clear');
  // back to the camera's shape for the tests that follow
  await page.selectOption('#size_preset', '');
  const auto = await cameraSize();
  await until(() => wire.outputs.at(-1)?.meta['width'] === auto.width && wire.outputs.at(-1)?.meta['height'] === auto.height, 'the auto size again');
});

/** The size the server picks for the fake camera's shape when none is set (the largest within the model's budget). */
async function cameraSize(): Promise<{ width: number; height: number }> {
  const [w, h] = await page.$eval('#input', (v) => [(v as HTMLVideoElement).videoWidth, (v as HTMLVideoElement).videoHeight]);
  return server.ctx.engine.size({}, w! / h!);
}

browserTest('Resolution works while streaming: the output and its label take the chosen size, auto goes back to the camera\'s shape', async () => {
  const wire = current();
  const size = () => [wire.outputs.at(-1)?.meta['width'], wire.outputs.at(-1)?.meta['height']];
  const auto = await cameraSize();
  assert.notEqual(auto.width, auto.height, 'the fake camera is not square');
  assert.deepEqual(size(), [auto.width, auto.height], "the camera's shape within the model's pixel budget");
  await page.selectOption('#size_preset', '160x96');
  await until(() => size()[0] === 160 && size()[1] === 96, 'outputs at 160 x 96');
  await until(async () => (await page.textContent('#output_label'))!.startsWith('160 × 96'), 'the label to follow');
  const sent = wire.sent.filter((m) => m['type'] === 'update').at(-1)!;
  assert.deepEqual(sent['params'], { width: 160, height: 96 });
  await page.selectOption('#size_preset', '');
  await until(() => size()[0] === auto.width && size()[1] === auto.height, 'outputs in the camera shape again');
  assert.deepEqual(wire.sent.filter((m) => m['type'] === 'update').at(-1)!['params'], { width: null, height: null }, 'auto clears the size');
  await until(async () => (await page.textContent('#output_label'))!.startsWith(`${auto.width} × ${auto.height}`), 'the label to follow');
});

browserTest('the seed box shows the whole seed; glass-to-glass and processing are shown apart', async () => {
  for (const seed of ['881105052', '4294967295']) {
    await page.fill('#seed', seed);
    const fits = await page.$eval('#seed', (el) => el.scrollWidth <= el.clientWidth);
    assert.ok(fits, `seed ${seed} fits its box`);
  }
  await page.press('#seed', 'Tab');
  await until(async () => /^\d+ ms$/.test((await page.textContent('#stat_processing'))!), 'the processing time');
  assert.match((await page.textContent('#stat_glass'))!, /^\d+ ms$/);
  assert.match((await page.textContent('#stat_server'))!, /^\d+ ms$/);
});

browserTest('after a dropped connection the page reconnects and resumes with the same parameters', async () => {
  const first = current();
  await screenshot(page, 'live.png');
  for (const socket of rawSockets.splice(0)) socket.destroy(); // the network drops: no close handshake
  await until(() => first.closed, 'the page to see the socket drop');
  await until(() => wires.length === 2 && current().outputs.length >= 3, 'outputs on a new connection', 30_000);
  const params = current().start?.['params'];
  assert.equal(params.prompt, NEW_PROMPT);
  assert.equal(params.steps, 1);
  assert.equal(params.similarity_threshold, 1);
  assert.equal(await page.textContent('#status'), 'streaming');
  assert.equal(server.streams.size, 1, 'the dropped stream was freed on the server');
  assert.equal(server.streams.get(streamId(current())).params.prompt, NEW_PROMPT);
});

browserTest('Stop ends the stream on the server', async () => {
  await page.click('#stop');
  await until(async () => (await page.textContent('#status')) === 'stopped', 'the page to stop');
  await until(() => server.streams.size === 0, 'the server to free the stream');
  assert.deepEqual(problems, [], 'no script errors in the page');
});

browserTest('a stream name: the stable URLs show before Start, the stream runs under the name, the URLs outlive it', async () => {
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
  await page.fill('#stream_name', 'page-cam');
  const mjpeg = `${server.url}/v1/streams/by-name/page-cam/mjpeg?token=${API_KEY}`;
  assert.equal(await page.inputValue('#mjpeg_url'), mjpeg, 'shown before the stream starts');
  assert.equal(await page.inputValue('#view_url'), `${server.url}/view.html?name=page-cam&token=${API_KEY}`);
  await page.click('#copy_view');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), await page.inputValue('#view_url'));
  await page.click('#start');
  await until(() => current().start?.['name'] === 'page-cam' && current().outputs.length >= 2, 'the named stream to run');
  const snapshot = async () => (await fetch(mjpeg.replace('/mjpeg', '/snapshot'))).headers.get('x-stream-state');
  assert.equal(await snapshot(), 'running');
  await page.click('#stop');
  await until(() => server.streams.size === 0, 'the stream to end');
  assert.equal(await page.inputValue('#mjpeg_url'), mjpeg, 'the stable URL stays after Stop');
  assert.equal(await snapshot(), 'waiting');
  await page.fill('#stream_name', '');
  assert.equal(await page.inputValue('#mjpeg_url'), '');
  assert.deepEqual(problems, []);
});

browserTest('adapters and experts, when the server lists them, get controls that send live updates', async () => {
  // this server has neither endpoint yet: the browser answers for it; the fixture pack has no adapters or
  // experts, so the server's refusals must come back as readable errors
  const { page: p, problems: pageProblems } = await openPage(browser, 'about:blank');
  await p.route('**/v1/adapters', (route) => route.fulfill({ json: { adapters: [{ name: 'watercolour' }, { name: 'neon' }] } }));
  await p.route('**/v1/experts', (route) => route.fulfill({ json: { experts: [{ name: 'expert-0' }, { name: 'expert-1' }] } }));
  const own: Wire[] = [];
  p.on('websocket', (ws) => own.push(recordWire(ws)));
  const sent = () => own.flatMap((w) => w.sent);
  await p.goto(`${server.url}/?transport=ws&token=${API_KEY}`);
  await p.waitForSelector('#adapters_section:not([hidden]) input[data-adapter="neon"]');
  assert.ok(await p.isVisible('#expert_row'), 'the expert list is shown');
  assert.deepEqual(await unlabelledControls(p), []);
  await p.click('#start');
  await until(() => sent().some((m) => m.type === 'ack'), 'the stream to run');
  assert.deepEqual(sent()[0]!['params'].adapters, [], 'no adapter until a weight moves');
  assert.equal(sent()[0]!['params'].budget, 1, 'the full model unless the user asks for the router');
  await p.focus('label:has-text("neon") + input');
  await p.keyboard.press('End'); // the largest weight, 2
  await until(() => sent().some((m) => m.type === 'update' && m.params.adapters), 'an update with the adapter weights');
  const update = sent().find((m) => m.type === 'update' && m.params.adapters)!;
  assert.deepEqual(update['params'].adapters, [{ name: 'neon', weight: 2 }]);
  await p.waitForSelector('#errors .error:has-text("this model has no adapters")');
  await p.selectOption('#expert', 'expert-1');
  await until(() => sent().some((m) => m.type === 'update' && m.params.expert === 'expert-1'), 'an update with the expert');
  await p.waitForSelector('#errors .error:has-text("no expert")');
  assert.ok(await p.isDisabled('#budget_auto'), 'a forced expert overrides the budget');
  await p.click('#stop');
  await until(() => server.streams.size === 0, 'the stream to end');
  assert.deepEqual(pageProblems, []);
});

browserTest('a start the server refuses stops the page with the server\'s message, once', async () => {
  // the page starts over WebRTC: the refusal is the WHIP request's 400 (which the browser logs)
  const { page: p, problems: pageProblems } = await openPage(browser, `${server.url}/?token=${API_KEY}`, [/404.*\/v1\/(adapters|experts)/, /400.*\/v1\/whip/]);
  await p.fill('#width', '100');
  await p.click('#start');
  await p.waitForSelector('#errors .error:has-text("width: must be a multiple of 8")');
  await until(async () => (await p.textContent('#status')) === 'stopped', 'the page to stop');
  assert.equal(await p.locator('#errors .error').count(), 1, 'one message, not one per retry');
  assert.ok(await p.isEnabled('#start'), 'Start can be pressed again');
  assert.equal(await p.getAttribute('#width', 'aria-invalid'), 'true');
  await p.context().close();
  assert.deepEqual(pageProblems, []);
});
