/**
 * One glass-to-glass latency client, run as a child process by webrtc.ts (so its codec work does not run on
 * the server's event loop). A "camera" makes 30 frames a second, each showing its frame number as a 4 x 4
 * grid of black/white 32-pixel blocks; the frame goes to the server over WebRTC (libwebrtc's VP8 via wrtc:
 * WHIP up, WHEP down) or the WebSocket (JPEG up and down), and the latency is the time from the frame's
 * creation to its number being read back from the decoded output. Prints one JSON line with the latencies.
 * Usage: tsx g2g-client.ts webrtc|ws URL KEY SECONDS WARMUP_SECONDS
 */
import { createRequire } from 'node:module';
import sharp from 'sharp';
import WebSocket from 'ws';

const SIZE = 128;
const BLOCK = 32;
const FPS = 30;
/** Parameters that keep the blocks readable (strength 0.1 barely changes the picture; steps 1: no stream-batch lag). */
export const G2G_PARAMS = { prompt: 'a white square on a black background', steps: 1, strength: 0.1, similarity_threshold: 1, width: SIZE, height: SIZE };

/** Luma (or grey RGB) of the frame number's 16 blocks: bit k is block k (row-major), white = 1. */
function drawLuma(n: number): Uint8Array {
  const y = new Uint8Array(SIZE * SIZE);
  for (let row = 0; row < SIZE; row++) for (let col = 0; col < SIZE; col++) y[row * SIZE + col] = (n >> (Math.floor(row / BLOCK) * 4 + Math.floor(col / BLOCK))) & 1 ? 235 : 16;
  return y;
}

/** Reads the number back from `value(x, y)` (0-255 brightness), sampling the centre of each block. */
function readNumber(value: (x: number, y: number) => number): number {
  let n = 0;
  for (let k = 0; k < 16; k++) {
    const cx = (k % 4) * BLOCK + BLOCK / 2;
    const cy = Math.floor(k / 4) * BLOCK + BLOCK / 2;
    let sum = 0;
    for (let dy = -4; dy < 4; dy++) for (let dx = -4; dx < 4; dx++) sum += value(cx + dx, cy + dy);
    if (sum / 64 > 128) n |= 1 << k;
  }
  return n;
}

interface Run {
  sent: Map<number, number>;
  latencies: number[];
  measuring: boolean;
  /** Output frames decoded while measuring (read or not: a repeat of an already-read number counts here). */
  outputs: number;
}

function seen(run: Run, n: number): void {
  if (run.measuring) run.outputs++;
  const at = run.sent.get(n);
  if (at === undefined) return;
  run.sent.delete(n);
  if (run.measuring) run.latencies.push(performance.now() - at);
}

async function webrtc(url: string, key: string, run: Run): Promise<() => void> {
  type Pc = { addTransceiver(t: unknown, i: object): void; createOffer(): Promise<{ sdp: string }>; setLocalDescription(d: object): Promise<void>; setRemoteDescription(d: object): Promise<void>; localDescription: { sdp: string }; iceGatheringState: string; onicegatheringstatechange: (() => void) | null; ontrack: ((e: { track: unknown }) => void) | null; close(): void };
  type Frame = { width: number; height: number; data: Uint8ClampedArray };
  const wrtc = createRequire(import.meta.url)('@roamhq/wrtc') as {
    RTCPeerConnection: new (c: object) => Pc;
    nonstandard: { RTCVideoSource: new () => { createTrack(): { stop(): void }; onFrame(f: Frame): void }; RTCVideoSink: new (t: unknown) => { onframe: ((e: { frame: Frame }) => void) | null; stop(): void } };
  };
  const post = async (pc: Pc, path: string) => {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise<void>((ok) => (pc.iceGatheringState === 'complete' ? ok() : (pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok())));
    const res = await fetch(url + path, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` }, body: pc.localDescription.sdp });
    if (res.status !== 201) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    return res.headers.get('x-stream-id') ?? '';
  };
  const up = new wrtc.RTCPeerConnection({ iceServers: [] });
  const source = new wrtc.nonstandard.RTCVideoSource();
  const track = source.createTrack();
  up.addTransceiver(track, { direction: 'sendonly' });
  const id = await post(up, `/v1/whip?${new URLSearchParams(Object.entries(G2G_PARAMS).map(([k, v]) => [k, String(v)]))}`);
  const down = new wrtc.RTCPeerConnection({ iceServers: [] });
  down.addTransceiver('video', { direction: 'recvonly' });
  let sink: { stop(): void } | undefined;
  down.ontrack = ({ track: t }) => {
    const s = new wrtc.nonstandard.RTCVideoSink(t);
    sink = s;
    s.onframe = ({ frame }) => seen(run, readNumber((x, y) => frame.data[y * frame.width + x]!));
  };
  await post(down, `/v1/whep/${id}`);
  const i420 = new Uint8ClampedArray(SIZE * SIZE * 1.5).fill(128);
  let n = 0;
  const timer = setInterval(() => {
    const number = n++ & 0xffff;
    i420.set(drawLuma(number));
    run.sent.set(number, performance.now());
    source.onFrame({ width: SIZE, height: SIZE, data: i420 });
  }, 1000 / FPS);
  return () => {
    clearInterval(timer);
    sink?.stop();
    track.stop();
    down.close();
    up.close();
  };
}

async function websocket(url: string, key: string, run: Run): Promise<() => void> {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/stream?token=${key}`);
  await new Promise((ok, fail) => (ws.once('open', ok), ws.once('error', fail)));
  ws.on('error', () => undefined); // a send racing the server's close: the run ends anyway
  ws.send(JSON.stringify({ type: 'start', params: G2G_PARAMS, window: 2 }));
  ws.on('message', (data, binary) => {
    if (!binary) return;
    ws.send(JSON.stringify({ type: 'ack', frames: 1 }));
    void sharp(data as Buffer)
      .greyscale()
      .raw()
      .toBuffer()
      .then((grey) => seen(run, readNumber((x, y) => grey[y * SIZE + x]!)));
  });
  let n = 0;
  let encoding = false;
  const timer = setInterval(() => {
    const number = n++ & 0xffff;
    if (encoding) return; // the camera drops a frame while the last one is still being encoded, as a browser does
    encoding = true;
    run.sent.set(number, performance.now());
    void sharp(Buffer.from(drawLuma(number)), { raw: { width: SIZE, height: SIZE, channels: 1 } })
      .jpeg({ quality: 85 })
      .toBuffer()
      .then((jpeg) => ws.readyState === ws.OPEN && ws.send(jpeg, { binary: true }))
      .finally(() => (encoding = false));
  }, 1000 / FPS);
  return () => {
    clearInterval(timer);
    ws.close();
  };
}

if (process.argv[1]?.endsWith('g2g-client.ts')) {
  const [transport, url, key, seconds, warmup] = process.argv.slice(2);
  const run: Run = { sent: new Map(), latencies: [], measuring: false, outputs: 0 };
  const stop = await (transport === 'webrtc' ? webrtc : websocket)(url!, key!, run);
  await new Promise((r) => setTimeout(r, Number(warmup) * 1000));
  run.measuring = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
  run.measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  stop();
  console.log(JSON.stringify({ transport, latencies: run.latencies, fps: run.latencies.length / elapsed, outputFps: run.outputs / elapsed }));
  setTimeout(() => process.exit(0), 300); // libwebrtc's threads: leave through exit (see test/helpers/wrtc-peer.ts)
}
