/**
 * Shutdown as a process manager does it: SIGTERM to the process it started, with the command the README gives
 * (`npm start` interactively and in the examples; `node --import tsx server/main.ts` for Docker and systemd).
 * The server must stop: renders in flight finish (or, past the grace period, are answered 503 with Retry-After),
 * new requests are refused, the process exits 0 and leaves no process behind holding the port or the data folder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Started {
  readonly child: ChildProcess;
  readonly url: string;
  readonly dataDir: string;
  readonly exited: Promise<number | null>;
}

/** Starts `command args` in the repository root as a process manager would, and waits for the URL it prints. */
async function start(command: string, args: readonly string[]): Promise<Started> {
  const dataDir = await mkdtemp(join(tmpdir(), 'shutdown-'));
  const child = spawn(command, [...args, '--port', '0', '--data-dir', dataDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info' } });
  const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`no URL printed in 90 s: ${out}`)), 90_000);
    child.stdout!.on('data', () => {
      const m = /streamdiffusion-node on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
    void exited.then((code) => fail(new Error(`exited with ${code} before listening: ${out}`)));
  });
  return { child, url, dataDir, exited };
}

/** Processes whose command line names the data folder (the server and anything it left behind). */
function processesUsing(dataDir: string): string[] {
  const ps = spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return ps.stdout.split('\n').filter((line) => line.includes(dataDir));
}

function portOpen(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((ok) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      ok(true);
    });
    socket.once('error', () => ok(false));
  });
}

/**
 * A render long enough to be in flight when the signal comes (one image per UNet call, so the server's event
 * loop stays free between calls); resolves with its status, Retry-After and images.
 */
async function longRender(url: string, images: number, side: number): Promise<{ status: number; retryAfter: string | null; images: number }> {
  const r = await fetch(`${url}/sdapi/v1/txt2img`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    // strict_size: the size asked for, not the model's own (a 512 x 512 render must really be large to be long)
    body: JSON.stringify({ prompt: 'a large red circle in the centre on a blue background', batch_size: 1, n_iter: images, width: side, height: side, steps: 4, override_settings: { strict_size: true } }),
  });
  const body = (await r.json()) as { images?: string[] };
  return { status: r.status, retryAfter: r.headers.get('retry-after'), images: body.images?.length ?? 0 };
}

/** Waits until the server says it is draining (or no longer answers): the signal has reached it. */
async function draining(url: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const status = await fetch(`${url}/health`).then(async (r) => ((await r.json()) as { status: string }).status, () => 'gone');
    if (status !== 'ok') return;
    assert.ok(Date.now() < deadline, 'the server is not draining a minute after SIGTERM: the signal did not reach it');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function renderRunning(url: string): Promise<void> {
  for (;;) {
    const p = await fetch(`${url}/sdapi/v1/progress`).then((r) => r.json() as Promise<{ state: { job_count: number; sampling_step: number } }>, () => undefined);
    if (p && p.state.job_count > 0 && p.state.sampling_step > 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('npm start: SIGTERM to npm (as a process manager sends it) drains: the render in flight completes, the process exits 0, nothing is left', async () => {
  // a grace far longer than the render: this machine may be slow, the point is that the render is let finish
  const s = await start('npm', ['start', '--', '--shutdown-grace', '120']);
  const render = longRender(s.url, 8, 128);
  await renderRunning(s.url);
  s.child.kill('SIGTERM');
  await draining(s.url);
  const late = await fetch(`${s.url}/sdapi/v1/txt2img`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt": "x"}' }).then((r) => r.status, () => 'refused');
  assert.ok(late === 'refused' || late === 503, `a new request after SIGTERM: ${late}`);
  const done = await render;
  assert.equal(done.status, 200, 'the render in flight finished');
  assert.equal(done.images, 8);
  assert.equal(await s.exited, 0);
  assert.equal(await portOpen(s.url), false, 'the port is free');
  assert.deepEqual(processesUsing(s.dataDir), [], 'no server left running');
});

test('node --import tsx server/main.ts (Docker, systemd): a render longer than the grace period gets 503 with Retry-After, then the process exits 0', async () => {
  const s = await start(process.execPath, ['--import', 'tsx', 'server/main.ts', '--shutdown-grace', '1']);
  const render = longRender(s.url, 16, 512);
  await renderRunning(s.url);
  const signalled = Date.now();
  s.child.kill('SIGTERM');
  const done = await render;
  assert.equal(done.status, 503);
  assert.ok(Number(done.retryAfter) > 0, `Retry-After ${done.retryAfter}`);
  assert.equal(await s.exited, 0);
  assert.ok(Date.now() - signalled < 30_000, 'it did not wait for the whole render');
  assert.equal(await portOpen(s.url), false);
  assert.deepEqual(processesUsing(s.dataDir), []);
});
