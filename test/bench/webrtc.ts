/**
 * Glass-to-glass latency, WebRTC against the WebSocket, at 128 x 128 for 1 and 4 streams: each stream is a
 * g2g-client.ts child process (a camera drawing its frame number, a player reading it back); the server runs
 * here on the embedded pack. The two transports alternate (WebSocket, WebRTC, WebSocket, WebRTC, ...), so a
 * drift of the shared machine hits both. `tsx test/bench/webrtc.ts [--quick]` runs this section alone.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../server/app.ts';
import { createLogger } from '../../server/log.ts';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { closeSharedPool } from '../../models/runtime/worker-pool.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const KEY = 'bench-key';

interface Options {
  readonly engine: Engine;
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

function client(transport: 'webrtc' | 'ws', url: string, seconds: number, warmup: number): Promise<{ latencies: number[]; fps: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, 'g2g-client.ts'), transport, url, KEY, String(seconds), String(warmup)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((ok, fail) =>
    child.once('exit', (code) => {
      const line = out.trim().split('\n').pop() ?? '';
      try {
        ok(JSON.parse(line) as { latencies: number[]; fps: number });
      } catch {
        fail(new Error(`g2g client (${transport}) exited ${code}: ${out.slice(-300)}`));
      }
    }),
  );
}

const quantile = (s: number[], q: number) => s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))] ?? NaN;

export async function benchWebrtc({ engine, quick, log }: Options): Promise<Record<string, unknown>> {
  const server = await startServer({ port: 0, apiKey: KEY, maxStreamsPerClient: 16 }, { engine, log: createLogger({}, 'error') });
  const seconds = quick ? 6 : 15;
  const warmup = 4;
  const rounds = quick ? 1 : 2;
  const results: Record<string, { latencies: number[]; fps: number[] }> = {};
  try {
    for (const streams of [1, 4]) {
      for (let r = 0; r < rounds; r++) {
        for (const transport of ['ws', 'webrtc'] as const) {
          const runs = await Promise.all(Array.from({ length: streams }, () => client(transport, server.url, seconds, warmup)));
          const key = `${transport} x${streams}`;
          results[key] ??= { latencies: [], fps: [] };
          for (const run of runs) {
            results[key].latencies.push(...run.latencies);
            results[key].fps.push(run.fps);
          }
        }
      }
    }
  } finally {
    await server.close();
  }
  log(`128 x 128, steps 1, strength 0.1, 30 fps cameras, ${rounds} x ${seconds} s per case after ${warmup} s warm-up; latency = frame drawn -> its number read from the decoded output.\n`);
  log('| transport | streams | p50 ms | p95 ms | frames seen / s per stream |\n| --- | --- | --- | --- | --- |');
  const figures: Record<string, unknown> = {};
  for (const [key, { latencies, fps }] of Object.entries(results)) {
    const s = [...latencies].sort((a, b) => a - b);
    const [transport, streams] = key.split(' x');
    const row = { p50: quantile(s, 0.5), p95: quantile(s, 0.95), n: s.length, fps: fps.reduce((a, b) => a + b, 0) / fps.length };
    figures[key] = row;
    log(`| ${transport === 'ws' ? 'WebSocket (JPEG)' : 'WebRTC (VP8)'} | ${streams} | ${row.p50.toFixed(1)} | ${row.p95.toFixed(1)} | ${row.fps.toFixed(1)} |`);
  }
  return figures;
}

if (process.argv[1]?.endsWith('webrtc.ts')) {
  const engine = await Engine.load(EMBEDDED_PACK_DIR);
  await benchWebrtc({ engine, quick: process.argv.includes('--quick'), log: (line) => console.log(line) });
  await closeSharedPool(); // before exit: onnxruntime aborts the process when live sessions are torn down
  process.exit(0);
}
