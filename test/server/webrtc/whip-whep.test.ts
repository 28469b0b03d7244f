/**
 * WHIP ingest and WHEP egress with real peers on loopback: @roamhq/wrtc (libwebrtc, its own VP8 codec) in a
 * child process publishes a picture and plays streams, against the real server (werift + ffmpeg) on the
 * random-weight fixture pack. What is checked: the RFC 9725 exchange (201, Location, SDP answer, DELETE),
 * frames reaching the stream and coming back as video to several viewers, live updates and lag metadata on
 * the control data channel, WHEP of a WebSocket stream, streams made ahead of their publisher, trickle ICE,
 * and the API's access rules.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, type RunningServer } from '../../../server/app.ts';
import { createLogger } from '../../../server/log.ts';
import { Engine } from '../../../pipelines/engine.ts';
import { BASE_PACK } from '../../helpers/fixtures.ts';
import WebSocket from 'ws';
import sharp from 'sharp';
import { RTCPeerConnection, RTCRtpCodecParameters } from 'werift';
import { icePeerOptions } from '../../../server/webrtc/ice.ts';
import { shapeFrame } from '../../helpers/stream-client.ts';
import { WrtcPeer } from '../../helpers/wrtc-peer.ts';

const KEY = 'webrtc-key';
const SIZE = 64;
let server: RunningServer;
const peers: WrtcPeer[] = [];

before(async () => {
  server = await startServer({ port: 0, apiKey: KEY, corsOrigins: ['http://allowed.example'], rateLimitPerMinute: 0 }, { engine: await Engine.load(BASE_PACK), log: createLogger({}, 'error') });
});

after(async () => {
  for (const peer of peers) await peer.stop();
  await server?.close();
});

function peer(): WrtcPeer {
  const p = WrtcPeer.start();
  peers.push(p);
  return p;
}

/** A plain picture: a bright square on a dark ground, interleaved RGB, base64 (the peer's source). */
function picture(size = SIZE): string {
  const rgb = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inside = x > size / 4 && x < (3 * size) / 4 && y > size / 4 && y < (3 * size) / 4;
      rgb.fill(inside ? 220 : 30, 3 * (y * size + x), 3 * (y * size + x) + 3);
    }
  }
  return rgb.toString('base64');
}

const auth = { Authorization: `Bearer ${KEY}` };

async function streamStats(id: string): Promise<{ framesIn: number; framesOut: number } | undefined> {
  const list = (await (await fetch(`${server.url}/v1/streams`, { headers: auth })).json()) as { streams: { id: string; stats: { framesIn: number; framesOut: number } }[] };
  return list.streams.find((s) => s.id === id)?.stats;
}

async function until(predicate: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('WHIP: an offer with parameters in the query starts a stream; its video becomes the stream input; DELETE ends it', async () => {
  const publisher = peer();
  publisher.send({ cmd: 'publish', url: server.url, path: `/v1/whip?steps=1&width=${SIZE}&height=${SIZE}&prompt=42&similarity_threshold=1`, token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15 });
  const published = await publisher.next('published');
  assert.equal(published.status, 201, published.body);
  assert.match(published.body, /^v=0\r\n/);
  assert.match(published.body, /a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 \d+ typ host/, 'a loopback host candidate (server bound to 127.0.0.1)');
  assert.doesNotMatch(published.body, /a=candidate:.* (192\.0\.2\.2|10\.|172\.|192\.168\.)/, 'no LAN candidate on a loopback server');
  const id = published.streamId!;
  assert.equal(published.location, `/v1/whip/${id}`);

  // media in: the session counts frames and sends lag metadata on the control channel
  await until(async () => ((await streamStats(id))?.framesIn ?? 0) >= 5, 'five input frames');
  const greeting = await publisher.next('control');
  assert.equal(greeting.message['type'], 'started', 'the channel opens with the WebSocket\'s started message');
  assert.equal(greeting.message['stream_id'], id);
  assert.equal(greeting.message['whep_url'], `/v1/whep/${id}`);
  await until(() => publisher.events.some((e) => e.event === 'control' && e.message['type'] === 'frame'), 'frame metadata');
  const meta = publisher.events.find((e) => e.event === 'control' && e.message['type'] === 'frame') as { message: Record<string, unknown> };
  assert.equal(meta.message['width'], SIZE);
  assert.equal(typeof meta.message['latency_ms'], 'number');
  assert.equal(typeof meta.message['input_id'], 'number');
  const listed = (await (await fetch(`${server.url}/v1/streams`, { headers: auth })).json()) as { streams: { id: string; params: { prompt: string; steps: number } }[] };
  const params = listed.streams.find((s) => s.id === id)!.params;
  assert.equal(params.prompt, '42', 'prompt stays text');
  assert.equal(params.steps, 1);

  // a snapshot of a WebRTC stream (which makes no JPEGs for its own output) is encoded from its latest frame
  const snapshot = await fetch(`${server.url}/v1/streams/${id}/snapshot`, { headers: auth });
  assert.equal(snapshot.status, 200);
  const { width: snapWidth, format: snapFormat } = await sharp(Buffer.from(await snapshot.arrayBuffer())).metadata();
  assert.deepEqual([snapFormat, snapWidth], ['jpeg', SIZE]);

  // live update on the data channel, answered like the WebSocket's
  const from = publisher.events.length;
  publisher.send({ cmd: 'control', message: { type: 'update', params: { prompt: 'a green square' } } });
  await until(() => publisher.events.slice(from).some((e) => e.event === 'control' && e.message['type'] === 'updated'), 'updated');
  const updated = publisher.events.slice(from).find((e) => e.event === 'control' && e.message['type'] === 'updated');
  assert.equal((updated as unknown as { message: { params: { prompt: string } } }).message.params.prompt, 'a green square');
  const bad = publisher.events.length;
  publisher.send({ cmd: 'control', message: { type: 'update', params: { steps: 99 } } });
  await until(() => publisher.events.slice(bad).some((e) => e.event === 'control' && e.message['type'] === 'error'), 'an error for a bad update');

  // WHEP: two viewers get the stream's video at its size
  const viewers = [peer(), peer()];
  for (const v of viewers) {
    v.send({ cmd: 'play', url: server.url, path: `/v1/whep/${id}`, token: KEY });
    const playing = await v.next('playing');
    assert.equal(playing.status, 201, playing.body);
    assert.match(playing.location ?? '', new RegExp(`^/v1/whep/${id}/[0-9a-f-]{36}$`));
    v.send({ cmd: 'frames', count: 2 });
  }
  for (const v of viewers) {
    const frame = await v.next('frame');
    assert.deepEqual([frame.width, frame.height], [SIZE, SIZE]);
  }
  // a viewer leaving (DELETE of its resource) leaves the other playing
  assert.equal(await viewers[0]!.stop(), 0, 'the wrtc child closed cleanly');
  const seen = viewers[1]!.events.length;
  viewers[1]!.send({ cmd: 'frames', count: 1 });
  await viewers[1]!.next('frame', seen);

  // DELETE ends the stream
  const gone = await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth });
  assert.equal(gone.status, 200);
  assert.equal(await streamStats(id), undefined);
  assert.equal((await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth })).status, 404);
});

test('WHEP plays a WebSocket stream too', async () => {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream?token=${KEY}`);
  await new Promise((ok, fail) => {
    ws.once('open', ok);
    ws.once('error', fail);
  });
  let id: string | undefined;
  ws.on('message', (data, binary) => {
    if (binary) return ws.send(JSON.stringify({ type: 'ack', frames: 1 }));
    const message = JSON.parse(data.toString()) as { type: string; stream_id?: string };
    if (message.type === 'started') id = message.stream_id;
  });
  ws.send(JSON.stringify({ type: 'start', params: { steps: 1, width: SIZE, height: SIZE, similarity_threshold: 1 } }));
  await until(() => id !== undefined, 'started');
  const frames = [await shapeFrame({ size: SIZE, x: 20 }), await shapeFrame({ size: SIZE, x: 44 })];
  let n = 0;
  const sender = setInterval(() => ws.send(frames[n++ % 2]!, { binary: true }), 60);
  try {
    const viewer = peer();
    viewer.send({ cmd: 'play', url: server.url, path: `/v1/whep/${id}`, token: KEY });
    assert.equal((await viewer.next('playing')).status, 201);
    viewer.send({ cmd: 'frames', count: 1 });
    const frame = await viewer.next('frame');
    assert.deepEqual([frame.width, frame.height], [SIZE, SIZE]);
  } finally {
    clearInterval(sender);
    ws.close();
  }
});

test('POST /v1/streams makes a stream that waits for its publisher; a second publisher is refused', async () => {
  const made = await fetch(`${server.url}/v1/streams`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ params: { steps: 1, width: SIZE, height: SIZE, seed: 7 } }) });
  assert.equal(made.status, 201);
  const body = (await made.json()) as { stream_id: string; whip_url: string; whep_url: string; params: { seed: number } };
  assert.equal(body.whip_url, `/v1/whip/${body.stream_id}`);
  assert.equal(body.whep_url, `/v1/whep/${body.stream_id}`);
  assert.equal(body.params.seed, 7);
  const bad = await fetch(`${server.url}/v1/streams`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ params: { steps: 0 } }) });
  assert.equal(bad.status, 400);
  assert.equal(((await bad.json()) as { error: { field: string } }).error.field, 'steps');

  const publisher = peer();
  publisher.send({ cmd: 'publish', url: server.url, path: body.whip_url, token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15 });
  const published = await publisher.next('published');
  assert.equal(published.status, 201, published.body);
  assert.equal(published.streamId, body.stream_id);
  await until(async () => ((await streamStats(body.stream_id))?.framesOut ?? 0) >= 2, 'outputs of the pre-made stream');
  // the MJPEG URL (OBS's Browser Source) shows the WebRTC stream too
  const mjpeg = await fetch(`${server.url}${(body as { mjpeg_url?: string }).mjpeg_url}?token=${KEY}`);
  assert.equal(mjpeg.status, 200);
  const reader = mjpeg.body!.getReader();
  let head = '';
  while (!/Content-Type: image\/jpeg\r\nContent-Length: \d+/.test(head)) {
    const { value, done } = await reader.read();
    assert.ok(!done, 'a JPEG part');
    head += Buffer.from(value).toString('latin1');
  }
  await reader.cancel();

  const second = peer();
  second.send({ cmd: 'publish', url: server.url, path: body.whip_url, token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15 });
  assert.equal((await second.next('published')).status, 409);
  assert.equal((await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth })).status, 200);
});

test('X-Stream-Params carries the parameters as JSON; bad parameters fail the request and leave no stream', async () => {
  const publisher = peer();
  publisher.send({ cmd: 'publish', url: server.url, path: '/v1/whip', token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15, headers: { 'X-Stream-Params': JSON.stringify({ steps: 1, width: SIZE, height: SIZE, seed: 11 }) } });
  const published = await publisher.next('published');
  assert.equal(published.status, 201, published.body);
  const listed = (await (await fetch(`${server.url}/v1/streams`, { headers: auth })).json()) as { streams: { id: string; params: { seed: number } }[] };
  assert.equal(listed.streams.find((s) => s.id === published.streamId)?.params.seed, 11);
  await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth });

  const before = (await (await fetch(`${server.url}/v1/streams`, { headers: auth })).json()) as { streams: unknown[] };
  const refused = peer();
  refused.send({ cmd: 'publish', url: server.url, path: '/v1/whip?steps=99', token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15 });
  const answer = await refused.next('published');
  assert.equal(answer.status, 400);
  assert.equal((JSON.parse(answer.body) as { error: { field: string } }).error.field, 'steps');
  const after = (await (await fetch(`${server.url}/v1/streams`, { headers: auth })).json()) as { streams: unknown[] };
  assert.equal(after.streams.length, before.streams.length);
});

test('stream names over WebRTC: X-Stream-Name on WHIP and "name" in POST /v1/streams give stable URLs, one stream per name', async () => {
  const publisher = peer();
  publisher.send({ cmd: 'publish', url: server.url, path: '/v1/whip', token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15, headers: { 'X-Stream-Params': JSON.stringify({ steps: 1, width: SIZE, height: SIZE }), 'X-Stream-Name': 'whip-cam' } });
  const published = await publisher.next('published');
  assert.equal(published.status, 201, published.body);
  const byName = async (name: string) => (await (await fetch(`${server.url}/v1/streams/by-name/${name}`, { headers: auth })).json()) as { running: boolean; stream_id: string | null };
  const info = await byName('whip-cam');
  assert.deepEqual([info.running, info.stream_id], [true, published.streamId]);
  // WHEP by name plays the stream running under it; a name nobody runs is a 404
  const viewer = peer();
  viewer.send({ cmd: 'play', url: server.url, path: '/v1/whep/by-name/whip-cam', token: KEY });
  const playing = await viewer.next('playing');
  assert.equal(playing.status, 201);
  assert.ok(playing.location?.startsWith(`/v1/whep/${published.streamId}/`), `viewer of the named stream: ${playing.location}`);
  viewer.send({ cmd: 'frames', count: 1 });
  const frame = await viewer.next('frame');
  assert.deepEqual([frame.width, frame.height], [SIZE, SIZE]);
  const nobody = await fetch(`${server.url}/v1/whep/by-name/nobody-here`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/sdp' }, body: 'v=0' });
  assert.equal(nobody.status, 404);
  const taken = await fetch(`${server.url}/v1/streams`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'whip-cam', params: { steps: 1 } }) });
  assert.equal(taken.status, 409);
  assert.equal(((await taken.json()) as { error: { field: string } }).error.field, 'name');
  await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth });
  await until(async () => !(await byName('whip-cam')).running, 'the name to be free');
  const made = await fetch(`${server.url}/v1/streams`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'whip-cam', params: { steps: 1 } }) });
  assert.equal(made.status, 201);
  const body = (await made.json()) as { stream_id: string; mjpeg_url: string; whip_url: string; whep_url: string };
  assert.equal(body.mjpeg_url, '/v1/streams/by-name/whip-cam/mjpeg');
  assert.equal(body.whep_url, '/v1/whep/by-name/whip-cam');
  assert.equal((await byName('whip-cam')).stream_id, body.stream_id);
  assert.equal((await fetch(`${server.url}${body.whip_url}`, { method: 'DELETE', headers: auth })).status, 200);
});

test('access rules: the key, foreign origins, SDP bodies, unknown streams; trickle ICE by PATCH', async () => {
  const offer = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n';
  const post = (path: string, headers: Record<string, string>, body = offer) => fetch(`${server.url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/sdp', ...headers }, body });
  assert.equal((await post('/v1/whip', {})).status, 401, 'no key');
  assert.equal((await post('/v1/whip', { Authorization: 'Bearer wrong' })).status, 401, 'wrong key');
  assert.equal((await post('/v1/whep/00000000-0000-4000-8000-000000000000', {})).status, 401);
  assert.equal((await post('/v1/whip', { ...auth, Origin: 'http://evil.example' })).status, 403, 'foreign origin');
  const notSdp = await post('/v1/whip', { ...auth, 'Content-Type': 'text/plain' }, 'hello');
  assert.equal(notSdp.status, 400);
  assert.match(((await notSdp.json()) as { error: { message: string } }).error.message, /application\/sdp/);
  const audioOnly = await post('/v1/whip', auth, 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n');
  assert.equal(audioOnly.status, 400);
  assert.match(((await audioOnly.json()) as { error: { message: string } }).error.message, /no video/);
  assert.equal((await post('/v1/whep/00000000-0000-4000-8000-000000000000', auth)).status, 404, 'unknown stream');
  assert.equal((await fetch(`${server.url}/v1/whip/00000000-0000-4000-8000-000000000000`, { method: 'DELETE', headers: auth })).status, 404);
  // a listed origin gets CORS headers that expose the WHIP resource
  const preflight = await fetch(`${server.url}/v1/whip`, { method: 'OPTIONS', headers: { Origin: 'http://allowed.example', 'Access-Control-Request-Method': 'POST' } });
  assert.equal(preflight.status, 204);
  assert.match(preflight.headers.get('access-control-allow-methods') ?? '', /PATCH/);
  assert.match(preflight.headers.get('access-control-expose-headers') ?? '', /Location/);

  // trickle ICE: a candidate fragment is accepted on a live publisher's resource; garbage is refused
  const publisher = peer();
  publisher.send({ cmd: 'publish', url: server.url, path: `/v1/whip?steps=1&width=${SIZE}&height=${SIZE}`, token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15 });
  const published = await publisher.next('published');
  const patch = (body: string) => fetch(`${server.url}${published.location}`, { method: 'PATCH', headers: { ...auth, 'Content-Type': 'application/trickle-ice-sdpfrag' }, body });
  assert.equal((await patch('a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n')).status, 204);
  assert.equal((await patch('a=mid:0\r\na=candidate:garbage\r\n')).status, 400);
  assert.equal((await fetch(`${server.url}${published.location}`, { method: 'PATCH', headers: auth, body: 'x' })).status, 400, 'not a trickle fragment');
  await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth });
});

test('reconnects: publishers that leave (DELETE, or closing the connection without a word) leave no stream behind', async () => {
  const publisher = peer();
  for (let cycle = 0; cycle < 4; cycle++) {
    const from = publisher.events.length;
    publisher.send({ cmd: 'publish', url: server.url, path: `/v1/whip?steps=1&width=${SIZE}&height=${SIZE}`, token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 15 });
    const published = await publisher.next('published', from);
    assert.equal(published.status, 201, `cycle ${cycle}: ${published.body}`);
    await until(async () => ((await streamStats(published.streamId!))?.framesIn ?? 0) >= 2, `cycle ${cycle}: frames`);
    if (cycle % 2 === 0) {
      assert.equal((await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth })).status, 200);
    } else {
      publisher.send({ cmd: 'drop' });
      await publisher.next('dropped', from);
    }
    // 20 s: the media timeout (10 s) ends a silent publisher; ICE consent alone would take about 30 s
    await until(async () => (await streamStats(published.streamId!)) === undefined, `cycle ${cycle}: the stream to end`, 20_000);
  }
});

test('WHEP output is timed by the input: RTP timestamps advance with the publisher\'s clock (a second stack: werift)', async () => {
  const publisher = peer();
  publisher.send({ cmd: 'publish', url: server.url, path: `/v1/whip?steps=1&width=${SIZE}&height=${SIZE}&similarity_threshold=1`, token: KEY, width: SIZE, height: SIZE, rgb: picture(), fps: 10 });
  const published = await publisher.next('published');
  assert.equal(published.status, 201, published.body);
  // the viewer is werift itself, reading RTP: the timestamps the server wrote, not a player's rendering
  const viewer = new RTCPeerConnection({ codecs: { video: [new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90_000 })], audio: [] }, ...icePeerOptions(true, []) });
  viewer.addTransceiver('video', { direction: 'recvonly' });
  const frames: { timestamp: number; at: number }[] = [];
  viewer.onTrack.subscribe((track) => track.onReceiveRtp.subscribe((rtp) => rtp.header.marker && frames.push({ timestamp: rtp.header.timestamp, at: performance.now() })));
  await viewer.setLocalDescription(await viewer.createOffer());
  const res = await fetch(`${server.url}/v1/whep/${published.streamId}`, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/sdp' }, body: viewer.localDescription!.sdp });
  assert.equal(res.status, 201);
  await viewer.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  try {
    await until(() => frames.length >= 12, 'twelve output frames');
    // from the second frame on (the encoder restarts once for the new viewer)
    for (let i = 2; i < frames.length; i++) assert.ok(frames[i]!.timestamp > frames[i - 1]!.timestamp, 'timestamps increase');
    // each output carries its input's arrival time: with a 10 fps camera no two outputs are much under 100 ms
    // apart on the 90 kHz clock (a fixed step per output frame would put them 33 ms apart)
    const steps = frames.slice(2).map((f, i) => (f.timestamp - frames[i + 1]!.timestamp) / 90);
    assert.ok(steps.filter((ms) => ms < 60).length <= steps.length / 4, `steps on the RTP clock, ms: ${steps.map((ms) => ms.toFixed(0)).join(' ')}`);
  } finally {
    await viewer.close();
    await fetch(`${server.url}${published.location}`, { method: 'DELETE', headers: auth });
  }
});
