/**
 * A load-generating client in its own process (so its work does not run on the server's event loop): N streams
 * over WebSockets, each keeping `window` frames in flight as a camera does (a new frame goes out whenever an
 * output arrives), for `seconds` after a warm-up, and optionally a /health prober. Prints one JSON line:
 * outputs, the server's latency_ms of each output, the client's own latency (send of the input an output shows
 * -> receipt of that output), and /health round trips.
 *
 * node --import tsx test/bench/ws-load.ts '{"url": "http://127.0.0.1:7860", "streams": 1, "seconds": 5, "params": {...}}'
 */
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';

interface LoadArgs {
  readonly url: string;
  readonly streams: number;
  readonly seconds: number;
  readonly warmupSeconds?: number;
  readonly window?: number;
  readonly params: Record<string, unknown>;
  /** Probe GET /health every this many ms while the streams run (0: no probe). */
  readonly healthEveryMs?: number;
  /** More fields of the start message (target_fps, max_latency_ms, degrade, min_budget). */
  readonly start?: Record<string, unknown>;
  /** Send frames at this rate, as a camera at a fixed rate does (the server keeps the latest), instead of one per output. */
  readonly sendFps?: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as LoadArgs;
const window = args.window ?? 2;
const size = typeof args.params['width'] === 'number' ? args.params['width'] : 128;
const frames = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => shapeFrame({ x: 24 + i * 10, size })));
const clients = await Promise.all(Array.from({ length: args.streams }, (_, i) => StreamClient.connect(args.url, { ...args.start, params: { ...args.params, seed: i + 1 }, window })));

const serverLatency: number[] = [];
const clientLatency: number[] = [];
const health: number[] = [];
/** Outputs by what they got: "<expert>/<steps> steps" or "skipped" (the similarity filter repeated one). */
const applied: Record<string, number> = {};
let outputs = 0;
let measuring = false;
let running = true;

const streaming = clients.map(async (c, i) => {
  const sentAt: number[] = []; // by input id - 1
  let k = i;
  const send = () => {
    sentAt.push(performance.now());
    c.sendFrame(frames[k++ % frames.length]!);
  };
  const paced = args.sendFps
    ? setInterval(() => running && send(), 1000 / args.sendFps)
    : undefined;
  if (!paced) for (let j = 0; j < window; j++) send();
  while (running) {
    await c.until(() => c.frames.length > 0 || c.errors.length > 0, 60_000);
    if (c.errors.length > 0) throw new Error(JSON.stringify(c.errors[0]));
    const now = performance.now();
    const got = c.frames.splice(0);
    for (const f of got) {
      if (running && !paced) send(); // one new frame per output: `window` stay in flight
      if (!measuring) continue;
      outputs++;
      serverLatency.push(f.meta.latency_ms);
      const kind = f.meta.skipped ? 'skipped' : `${String(f.meta['expert'])}/${String(f.meta['steps'])} steps`;
      applied[kind] = (applied[kind] ?? 0) + 1;
      const input = f.meta.input_id;
      if (input !== null && sentAt[input - 1] !== undefined) clientLatency.push(now - sentAt[input - 1]!);
    }
  }
  clearInterval(paced);
});

const probing = (async () => {
  if (!args.healthEveryMs) return;
  while (running) {
    const t0 = performance.now();
    const res = await fetch(`${args.url}/health`);
    await res.arrayBuffer();
    if (measuring) health.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, args.healthEveryMs));
  }
})();

await new Promise((r) => setTimeout(r, (args.warmupSeconds ?? 1.5) * 1000));
measuring = true;
const t0 = performance.now();
await new Promise((r) => setTimeout(r, args.seconds * 1000));
measuring = false;
const seconds = (performance.now() - t0) / 1000;
running = false;
await Promise.all([...streaming, probing]);
await Promise.all(clients.map((c) => c.close()));
console.log(JSON.stringify({ outputs, seconds, serverLatency, clientLatency, health, applied }));
