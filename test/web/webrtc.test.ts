/**
 * WebRTC in headless Chromium (fake camera) against the real server on the fixture pack:
 * - an OBS-like publisher: H.264 only (as OBS's WHIP output sends), Bearer key, no data channel, plays the
 *   result back by WHEP in the same page;
 * - the live page: WebRTC by default (camera up by WHIP, output in a <video> by WHEP, a prompt typed in the
 *   page reaches the server over the data channel), and the WebSocket when WHIP is not there.
 */
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser } from 'playwright-core';
import type { RunningServer } from '../../server/app.ts';
import { API_KEY, browserSkip, browserTest, launchChromium, openPage, screenshot, startWebServer, until, writeScreenshots } from './browser.ts';
import { recordWire, type Wire } from './wire.ts';

let server: RunningServer;
let browser: Browser;

before(async () => {
  if (browserSkip()) return;
  server = await startWebServer('none');
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.close();
  await writeScreenshots();
});

interface StreamInfo {
  id: string;
  params: { prompt: string; steps: number };
  stats: { framesIn: number; framesOut: number };
}
async function streams(): Promise<StreamInfo[]> {
  const res = await fetch(`${server.url}/v1/streams`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  return ((await res.json()) as { streams: StreamInfo[] }).streams;
}

browserTest('Chromium publishes H.264 by WHIP (as OBS does) and plays the result by WHEP', async () => {
  // any same-origin page will do; the render page lists the server's jobs, which this server has no API for (404)
  const { page, problems } = await openPage(browser, `${server.url}/render.html?token=${API_KEY}`, [/404.*\/v1\/jobs/]);
  await page.evaluate('window.__name = (f) => f'); // tsx keeps function names with a helper the page lacks
  const result = await page.evaluate(async (key) => {
    const post = async (path: string, sdp: string) => {
      const res = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` }, body: sdp });
      return { status: res.status, location: res.headers.get('location'), id: res.headers.get('x-stream-id'), sdp: await res.text() };
    };
    const gathered = (pc: RTCPeerConnection) =>
      new Promise<void>((ok) => {
        if (pc.iceGatheringState === 'complete') return ok();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok();
      });
    // publisher: H.264 only
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
    const up = new RTCPeerConnection();
    const transceiver = up.addTransceiver(media.getVideoTracks()[0]!, { direction: 'sendonly' });
    transceiver.setCodecPreferences(RTCRtpSender.getCapabilities('video')!.codecs.filter((c) => c.mimeType === 'video/H264'));
    await up.setLocalDescription(await up.createOffer());
    await gathered(up);
    const whip = await post('/v1/whip?steps=1&width=128&height=128&similarity_threshold=1', up.localDescription!.sdp);
    if (whip.status !== 201) return { whip };
    await up.setRemoteDescription({ type: 'answer', sdp: whip.sdp });
    // viewer: WHEP into a <video>
    const down = new RTCPeerConnection();
    down.addTransceiver('video', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true;
    document.body.append(video);
    down.ontrack = (e) => {
      video.srcObject = new MediaStream([e.track]);
      void video.play();
    };
    await down.setLocalDescription(await down.createOffer());
    await gathered(down);
    const whep = await post(`/v1/whep/${whip.id}`, down.localDescription!.sdp);
    await down.setRemoteDescription({ type: 'answer', sdp: whep.sdp });
    const deadline = Date.now() + 30_000;
    while (video.getVideoPlaybackQuality().totalVideoFrames < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const sentCodecs: string[] = [];
    (await up.getStats()).forEach((s: { type: string; mimeType?: string }) => s.type === 'codec' && s.mimeType && sentCodecs.push(s.mimeType));
    const receivedCodecs: string[] = [];
    (await down.getStats()).forEach((s: { type: string; mimeType?: string }) => s.type === 'codec' && s.mimeType && receivedCodecs.push(s.mimeType));
    const played = { frames: video.getVideoPlaybackQuality().totalVideoFrames, width: video.videoWidth, height: video.videoHeight };
    await fetch(whep.location!, { method: 'DELETE', headers: { Authorization: `Bearer ${key}` } });
    const ended = await fetch(whip.location!, { method: 'DELETE', headers: { Authorization: `Bearer ${key}` } });
    up.close();
    down.close();
    for (const t of media.getTracks()) t.stop();
    return { whip: { status: whip.status, location: whip.location }, whep: { status: whep.status, location: whep.location }, sentCodecs, receivedCodecs, played, ended: ended.status };
  }, API_KEY);
  assert.equal(result.whip.status, 201, JSON.stringify(result));
  assert.deepEqual(result.sentCodecs, ['video/H264'], 'the camera went up as H.264');
  assert.equal(result.whep?.status, 201);
  assert.ok(result.receivedCodecs?.includes('video/VP8'), 'the output came down as VP8');
  assert.ok((result.played?.frames ?? 0) >= 10, `the output played: ${JSON.stringify(result.played)}`);
  assert.deepEqual([result.played?.width, result.played?.height], [128, 128]);
  assert.equal(result.ended, 200);
  await until(async () => (await streams()).length === 0, 'the stream to end after DELETE');
  await page.context().close();
  assert.deepEqual(problems, []);
});

browserTest('the live page streams over WebRTC: output in a <video>, controls on the data channel', async () => {
  const { page, problems } = await openPage(browser, `${server.url}/?token=${API_KEY}`, [/404.*\/v1\/(adapters|experts)/]);
  const sockets: Wire[] = [];
  page.on('websocket', (ws) => sockets.push(recordWire(ws)));
  await page.fill('#steps', '1');
  await page.click('#start');
  await until(async () => (await page.textContent('#status')) === 'streaming · WebRTC', 'the WebRTC stream');
  assert.equal(await page.getAttribute('#status', 'data-transport'), 'webrtc');
  await until(async () => Number(await page.textContent('#stat_outputs')) >= 4, 'four outputs counted from the data channel');
  await until(() => page.$eval('#output_video', (v) => (v as HTMLVideoElement).getVideoPlaybackQuality().totalVideoFrames >= 4), 'the output video to play');
  assert.ok(await page.isVisible('#output_video'));
  assert.ok(await page.isHidden('#output'), 'the canvas is for the WebSocket path');
  const [stream] = await streams();
  assert.ok(stream && stream.stats.framesIn >= 4, 'the camera reaches the server as video');
  assert.equal(stream.params.steps, 1);
  await page.fill('#prompt', 'a small yellow triangle at the top on a black background');
  await until(async () => (await streams())[0]?.params.prompt === 'a small yellow triangle at the top on a black background', 'the prompt update over the data channel');
  assert.equal(sockets.length, 0, 'no WebSocket used');
  await screenshot(page, 'live-webrtc.png');
  await page.click('#stop');
  await until(async () => (await streams()).length === 0, 'the stream to end');
  await page.context().close();
  assert.deepEqual(problems, []);
});

browserTest('without WHIP on the server the live page falls back to the WebSocket', async () => {
  const { page, problems } = await openPage(browser, 'about:blank', [/404.*\/v1\/(adapters|experts|whip)/]);
  await page.route('**/v1/whip', (route) => route.fulfill({ status: 404, json: { error: { code: 'not_found', message: 'no route POST /v1/whip' } } }));
  const sockets: Wire[] = [];
  page.on('websocket', (ws) => sockets.push(recordWire(ws)));
  await page.goto(`${server.url}/?token=${API_KEY}`);
  await page.click('#start');
  await until(() => sockets.length === 1 && sockets[0]!.outputs.length >= 2, 'outputs over the WebSocket');
  assert.equal(await page.getAttribute('#status', 'data-transport'), 'websocket');
  assert.equal(await page.textContent('#status'), 'streaming');
  await page.click('#stop');
  await until(async () => (await streams()).length === 0, 'the stream to end');
  await page.context().close();
  assert.deepEqual(problems, []);
});
