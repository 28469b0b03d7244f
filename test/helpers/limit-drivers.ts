/**
 * Drivers that push each client-growable bound of a running server (a child process, as `npm start` runs it)
 * and report what a client got and what the server's process used: the memory test (test/server/limits.test.ts)
 * asserts ceilings on them, the benchmark's "limits" section (test/bench/limits.ts) reports them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { shapeFrame } from './stream-client.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Usage {
  readonly rssMb: number;
  readonly threads: number;
}

export interface ServerProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** The server process's resident memory and threads now (/proc). */
  usage(): Usage;
  stop(): Promise<number | null>;
}

/** `node --import tsx server/main.ts` on the embedded pack with a fresh data folder and `args`. */
export async function spawnServer(args: readonly string[] = []): Promise<ServerProcess> {
  const dataDir = await mkdtemp(join(tmpdir(), 'limits-'));
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--port', '0', '--data-dir', dataDir, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`no URL in 90 s: ${out}`)), 90_000);
    child.stdout!.on('data', () => {
      const m = /streamdiffusion-node on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
    void exited.then((code) => fail(new Error(`exited with ${code}: ${out}`)));
  });
  return {
    url,
    child,
    usage() {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN);
      return { rssMb: field('VmRSS') / 1024, threads: field('Threads') };
    },
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** What one limit did: how far it was pushed, what a client got, and the server's usage around it. */
export interface LimitRun {
  readonly limit: string;
  readonly bound: string;
  readonly pushed: string;
  /** Answers by kind ("200", "429 rate_limited, Retry-After 5", "close 1013" ...) and how many. */
  readonly answers: Record<string, number>;
  readonly before: Usage;
  readonly peak: Usage;
  readonly after: Usage;
}

/** Samples usage every 100 ms while `work` runs: the peak, and the usage 1 s after it ends. */
async function measured(server: ServerProcess, work: () => Promise<Omit<LimitRun, 'before' | 'peak' | 'after'>>): Promise<LimitRun> {
  const before = server.usage();
  let peak = before;
  const timer = setInterval(() => {
    const u = server.usage();
    peak = { rssMb: Math.max(peak.rssMb, u.rssMb), threads: Math.max(peak.threads, u.threads) };
  }, 100);
  try {
    const result = await work();
    await new Promise((r) => setTimeout(r, 1000));
    const after = server.usage();
    return { ...result, before, peak: { rssMb: Math.max(peak.rssMb, after.rssMb), threads: Math.max(peak.threads, after.threads) }, after };
  } finally {
    clearInterval(timer);
  }
}

function count(answers: Record<string, number>, key: string): void {
  answers[key] = (answers[key] ?? 0) + 1;
}

/** The answer of an HTTP response in words: status, error code, Retry-After. */
async function describe(res: Response): Promise<string> {
  if (res.ok) {
    await res.body?.cancel();
    return String(res.status);
  }
  const body = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
  const retry = res.headers.get('retry-after');
  return `${res.status} ${body.error?.code ?? ''}${retry ? ', Retry-After' : ''}`.trim();
}

/** An HTTP request from a given loopback source address (the server limits per client address). */
function postFrom(url: string, path: string, localAddress: string, body: unknown): Promise<{ status: number; code: string; retryAfter: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((ok, fail) => {
    const req = request({ host: hostname, port, path, method: 'POST', localAddress, headers: { 'content-type': 'application/json' } }, (res) => {
      let data = '';
      res.on('data', (d: Buffer) => (data += d.toString()));
      res.on('end', () => {
        let code = '';
        try {
          code = (JSON.parse(data) as { error?: { code?: string } }).error?.code ?? '';
        } catch {
          // not JSON
        }
        ok({ status: res.statusCode ?? 0, code, retryAfter: res.headers['retry-after'] !== undefined });
      });
    });
    req.on('error', fail);
    req.end(JSON.stringify(body));
  });
}

/** Merged adapter variants: renders with `n` distinct weights of one adapter, `parallel` at a time (the issue's 0.31, 0.32 ...). */
export function driveVariants(server: ServerProcess, n = 48, parallel = 6): Promise<LimitRun> {
  return measured(server, async () => {
    const answers: Record<string, number> = {};
    for (let i = 0; i < n; i += parallel) {
      await Promise.all(
        Array.from({ length: Math.min(parallel, n - i) }, async (_, k) => {
          const weight = (0.3 + (i + k) / 100).toFixed(2);
          const res = await fetch(`${server.url}/sdapi/v1/txt2img`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ prompt: `a large red ring in the centre on a blue background <lora:ring:${weight}>`, width: 64, height: 64, steps: 1 }),
          });
          count(answers, await describe(res));
        }),
      );
    }
    return { limit: 'merged adapter variants', bound: '--max-variants (4): sessions and worker threads alive at once', pushed: `${n} renders, each with its own adapter weight, ${parallel} at a time`, answers };
  });
}

/** Opens a WebSocket and sends `start`: resolves with "started" or the close code and error code it got. */
function openStream(url: string, params: Record<string, unknown>, localAddress?: string): Promise<{ ws: WebSocket; answer: string }> {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/stream`, localAddress ? { localAddress } : {});
  return new Promise((ok) => {
    let error = '';
    ws.on('unexpected-response', (_req, res) => ok({ ws, answer: `HTTP ${res.statusCode}${res.headers['retry-after'] ? ', Retry-After' : ''}` }));
    ws.on('error', () => undefined);
    ws.once('open', () => ws.send(JSON.stringify({ type: 'start', params })));
    ws.on('message', (d, binary) => {
      if (binary) return;
      const m = JSON.parse(d.toString()) as { type: string; code?: string };
      if (m.type === 'started') ok({ ws, answer: 'started' });
      if (m.type === 'error') error = m.code ?? '';
    });
    ws.once('close', (code) => ok({ ws, answer: `close ${code}${error ? ` ${error}` : ''}` }));
  });
}

/** Streams of `side` x `side` until refused (the server's bound is `maxArea`), each run for `frames` frames, then closed. */
export function driveLatentArea(server: ServerProcess, options: { side?: number; streams?: number; frames?: number; maxArea?: number } = {}): Promise<LimitRun> {
  const { side = 1024, streams = 4, frames = 3, maxArea = 2 * 128 * 128 } = options;
  return measured(server, async () => {
    const answers: Record<string, number> = {};
    const frame = await shapeFrame({ size: side });
    const open: WebSocket[] = [];
    for (let i = 0; i < streams; i++) {
      const { ws, answer } = await openStream(server.url, { width: side, height: side, steps: 2, similarity_threshold: 1 });
      count(answers, answer);
      if (answer === 'started') open.push(ws);
    }
    await Promise.all(
      open.map(async (ws) => {
        for (let f = 0; f < frames; f++) {
          const out = new Promise((ok) => ws.once('message', ok));
          ws.send(frame, { binary: true });
          await out;
          ws.send(JSON.stringify({ type: 'ack', frames: 1 }));
        }
        ws.close();
      }),
    );
    const each = (side / 8) ** 2;
    return { limit: 'latent area of open streams', bound: `${maxArea} latent pixels (${Math.floor(maxArea / each)} streams of ${side}x${side})`, pushed: `${streams} streams at ${side}x${side}, ${frames} frames each`, answers };
  });
}

/** Text messages far over the control-message limit, before and after start, while /health is timed. */
export function driveControlMessages(server: ServerProcess, messages = 20, bytes = 2 * 2 ** 20): Promise<LimitRun & { healthMaxMs: number }> {
  let healthMaxMs = 0;
  return measured(server, async () => {
    const answers: Record<string, number> = {};
    let done = false;
    const health = (async () => {
      while (!done) {
        const t0 = performance.now();
        await (await fetch(`${server.url}/health`)).json();
        healthMaxMs = Math.max(healthMaxMs, performance.now() - t0);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const big = JSON.stringify({ type: 'start', params: { prompt: 'x'.repeat(bytes) } });
    for (let i = 0; i < messages; i++) {
      const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream`);
      await new Promise((ok) => ws.once('open', ok));
      let code = '';
      ws.on('message', (d) => (code = (JSON.parse(d.toString()) as { code?: string }).code ?? code));
      const closed = new Promise<number>((ok) => ws.once('close', (c) => ok(c)));
      ws.send(big);
      count(answers, `before start: ${code || 'error'} close ${await closed}`.replace('error close', `${code} close`));
    }
    const { ws } = await openStream(server.url, { steps: 1 });
    for (let i = 0; i < messages; i++) {
      const answer = new Promise<string>((ok) => ws.once('message', (d) => ok((JSON.parse(d.toString()) as { code?: string }).code ?? '')));
      ws.send(JSON.stringify({ type: 'update', params: { prompt: 'y'.repeat(bytes) } }));
      count(answers, `after start: ${await answer}, stream goes on`);
    }
    ws.close();
    done = true;
    await health;
    return { limit: 'control (text) messages', bound: '16 KiB each, checked before parsing', pushed: `${messages} messages of ${bytes / 2 ** 20} MiB before start and ${messages} after`, answers };
  }).then((run) => ({ ...run, healthMaxMs }));
}

/** Sockets that never send start, from `addresses` loopback source addresses. */
export function drivePendingSockets(server: ServerProcess, sockets = 300, addresses = 10): Promise<LimitRun> {
  return measured(server, async () => {
    const answers: Record<string, number> = {};
    const open: WebSocket[] = [];
    await Promise.all(
      Array.from({ length: sockets }, async (_, i) => {
        const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream`, { localAddress: `127.0.0.${1 + (i % addresses)}` });
        ws.on('error', () => undefined);
        const answer = await new Promise<string>((ok) => {
          ws.once('open', () => ok('open'));
          ws.once('unexpected-response', (_req, res) => ok(`HTTP ${res.statusCode}${res.headers['retry-after'] ? ', Retry-After' : ''}`));
        });
        count(answers, answer);
        if (answer === 'open') open.push(ws);
      }),
    );
    for (const ws of open) ws.close();
    return { limit: 'sockets without start', bound: '32 in all, 8 per client address; closed (4400) after 10 s', pushed: `${sockets} sockets from ${addresses} addresses`, answers };
  });
}

/** Jobs of 1000 images from `addresses` loopback source addresses (the issue's 200 x 1000); the accepted ones are canceled. */
export function driveJobQueue(server: ServerProcess, jobs = 200, addresses = 10): Promise<LimitRun & { pageSize: number }> {
  let pageSize = 0;
  return measured(server, async () => {
    const answers: Record<string, number> = {};
    for (let i = 0; i < jobs; i++) {
      const r = await postFrom(server.url, '/v1/jobs', `127.0.0.${1 + (i % addresses)}`, { kind: 'images', count: 1000, width: 64, height: 64, steps: 1 });
      count(answers, r.status === 201 ? '201' : `${r.status} ${r.code}${r.retryAfter ? ', Retry-After' : ''}`);
    }
    const page = (await (await fetch(`${server.url}/v1/jobs`)).json()) as { jobs: { id: string }[]; next_cursor: string | null };
    pageSize = page.jobs.length;
    let cursor: string | null = null;
    do {
      const p = (await (await fetch(`${server.url}/v1/jobs?limit=100${cursor ? `&cursor=${cursor}` : ''}`)).json()) as { jobs: { id: string; status: string }[]; next_cursor: string | null };
      for (const j of p.jobs) if (j.status === 'starting' || j.status === 'processing') await fetch(`${server.url}/v1/jobs/${j.id}`, { method: 'DELETE' });
      cursor = p.next_cursor;
    } while (cursor);
    return { limit: 'queued jobs', bound: '64 queued or running, 16 per client address; GET /v1/jobs pages of 20 (at most 100)', pushed: `${jobs} jobs of 1000 images from ${addresses} addresses`, answers };
  }).then((run) => ({ ...run, pageSize }));
}
