/**
 * A real cluster on loopback for tests and benchmarks: Debian's redis-server on a free port (no persistence),
 * and nodes started as `npm start` starts them (server/main.ts with --redis and --role), each its own process.
 */
import { AssertionError } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Every process started here: killed when this process exits, whatever the test did (a failed start, an exception). */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((ok) => server.close(() => ok()));
  return port;
}

export interface RedisServer {
  readonly url: string;
  readonly process: ChildProcess;
  stop(): Promise<void>;
}

/** redis-server on a free loopback port, without snapshots or an append-only file; stopped by stop(). */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const child = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('redis-server did not start within 10 s')), 10_000);
    const lines = createInterface({ input: child.stdout! });
    const onLine = (line: string) => {
      if (!line.includes('Ready to accept connections')) return;
      clearTimeout(timer);
      lines.off('line', onLine);
      ok();
    };
    lines.on('line', onLine);
    child.once('exit', (code) => fail(new Error(`redis-server exited with ${code} (is it installed? apt-get install redis-server)`)));
    child.once('error', fail);
  });
  child.stdout!.resume();
  return {
    url: `redis://127.0.0.1:${port}`,
    process: child,
    stop: () => stopProcess(child),
  };
}

export interface ClusterNodeProcess {
  readonly url: string;
  /** The node id it registered under. */
  readonly id: string;
  readonly process: ChildProcess;
  /** JSON log lines it wrote so far. */
  readonly logs: Record<string, unknown>[];
  /** SIGKILL, and wait until it is gone. */
  kill(): Promise<void>;
  /** SIGTERM (a drain), and wait for the exit. */
  terminate(): Promise<void>;
}

export interface NodeOptions {
  /** Without a Redis URL the node is a single node (plain `npm start`): no role. */
  readonly role?: 'api' | 'worker' | 'all';
  readonly redis?: string;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * Starts a node process (`npm start -- --redis URL --role R --port 0`) with a data folder of its own, as on a
 * machine of its own, and waits until it listens.
 */
export async function startNode(options: NodeOptions): Promise<ClusterNodeProcess> {
  const cluster = options.redis ? ['--redis', options.redis, '--role', options.role ?? 'all'] : [];
  const dataDir = await mkdtemp(join(tmpdir(), 'node-data-'));
  const args = ['--import', 'tsx', join(ROOT, 'server', 'main.ts'), ...cluster, '--port', '0', '--threads', '1', '--data-dir', dataDir, ...(options.args ?? [])];
  const child = track(spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, LOG_LEVEL: 'info', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] }));
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const listening = await new Promise<Record<string, unknown>>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`node (${options.role ?? 'single'}) did not start within 300 s: ${stderr}`)), 300_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      const entry = JSON.parse(line) as Record<string, unknown>;
      logs.push(entry);
      if (entry['msg'] === 'listening') {
        clearTimeout(timer);
        ok(entry);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`node (${options.role ?? 'single'}) exited with ${code}: ${stderr}`));
    });
  });
  return {
    url: String(listening['url']),
    id: String(listening['node']),
    process: child,
    logs,
    kill: () => stopProcess(child, 'SIGKILL'),
    terminate: () => stopProcess(child, 'SIGTERM'),
  };
}

/** Sends a signal and waits for the exit and the last of its output (SIGKILL after 15 s). */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((ok) => child.once('close', () => ok()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Polls `check` until it returns a value (not undefined) or `timeoutMs` passes. A failed request counts as
 * not yet (a node may be starting); a failed assertion ends the wait at once.
 */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch((error: unknown) => {
      if (error instanceof AssertionError) throw error;
      return undefined;
    });
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Records the wall time each output of a stream client arrives, by output id. */
export function outputArrivals(ws: { on(event: 'message', fn: (data: unknown, isBinary: boolean) => void): unknown }): Map<number, number> {
  const times = new Map<number, number>();
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const m = JSON.parse(String(data)) as { type?: string; output_id?: number };
    if (m.type === 'frame' && typeof m.output_id === 'number') times.set(m.output_id, Date.now());
  });
  return times;
}

/**
 * How long after `since` (wall time, ms) a moved stream's client got its first output from the next worker: the
 * gateway logs that output's id ('stream moved'); undefined until both have happened.
 */
export function resumedAfter(gateway: ClusterNodeProcess, stream: string, arrivals: ReadonlyMap<number, number>, since: number): { ms: number; to: string } | undefined {
  const entry = gateway.logs.find((l) => l['msg'] === 'stream moved' && l['stream'] === stream && Date.parse(String(l['time'])) >= since - 5);
  const at = entry && arrivals.get(entry['output_id'] as number);
  return entry && at !== undefined ? { ms: at - since, to: String(entry['to']) } : undefined;
}
