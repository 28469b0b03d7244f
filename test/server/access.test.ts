import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startServer } from '../../server/app.ts';
import { loadConfig, DEFAULT_CONFIG } from '../../server/config.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient } from '../helpers/stream-client.ts';

const KEY = 'test-key-1234';
const engine = await Engine.load(BASE_PACK);
const server = await startServer({ port: 0, apiKey: KEY, corsOrigins: ['http://allowed.example'], rateLimitPerMinute: 30 }, { engine });
after(() => server.close());

test('binds 127.0.0.1 by default and refuses another address without a key', () => {
  assert.equal(DEFAULT_CONFIG.host, '127.0.0.1');
  assert.equal(loadConfig([], {}).host, '127.0.0.1');
  assert.throws(() => loadConfig(['--host', '0.0.0.0'], {}), /refusing to bind 0\.0\.0\.0 without an API key/);
  assert.equal(loadConfig(['--host', '0.0.0.0'], { API_KEY: 'k' }).apiKey, 'k');
});

test('HTTP needs the key as a Bearer token; health and the UI do not', async () => {
  assert.equal((await fetch(`${server.url}/v1/streams`)).status, 401);
  assert.equal((await fetch(`${server.url}/v1/streams`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
  assert.equal((await fetch(`${server.url}/v1/streams`, { headers: { authorization: `Bearer ${KEY}` } })).status, 200);
  assert.equal((await fetch(`${server.url}/metrics?token=${KEY}`)).status, 200);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('WebSocket needs ?token=; MJPEG URLs take it too', async () => {
  const ws = new WebSocket(server.url.replace(/^http/, 'ws') + '/v1/stream');
  const status = await new Promise<number>((ok) => ws.once('unexpected-response', (_req, res) => ok(res.statusCode ?? 0)));
  assert.equal(status, 401);
  const client = await StreamClient.connect(`${server.url}`.replace(/\/$/, ''), { params: {} }).catch((e: Error) => e);
  assert.ok(client instanceof Error);
  const authed = await connectWithToken();
  const mjpeg = await fetch(`${server.url}/v1/streams/${authed.id}/mjpeg?token=${KEY}`);
  assert.equal(mjpeg.status, 200);
  await mjpeg.body?.cancel();
  assert.equal((await fetch(`${server.url}/v1/streams/${authed.id}/mjpeg`)).status, 401);
  authed.ws.close();
});

async function connectWithToken(): Promise<{ ws: WebSocket; id: string }> {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream?token=${KEY}`);
  await new Promise((ok, fail) => {
    ws.once('open', ok);
    ws.once('error', fail);
  });
  ws.send(JSON.stringify({ type: 'start', params: {} }));
  const started = await new Promise<Record<string, unknown>>((ok) => ws.on('message', (d, bin) => !bin && ok(JSON.parse(d.toString()) as Record<string, unknown>)));
  return { ws, id: started['stream_id'] as string };
}

test('CORS: listed origins get headers, others are refused on preflight and on WebSocket', async () => {
  const allowed = await fetch(`${server.url}/v1/streams`, { headers: { origin: 'http://allowed.example', authorization: `Bearer ${KEY}` } });
  assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://allowed.example');
  const preflight = await fetch(`${server.url}/v1/streams`, { method: 'OPTIONS', headers: { origin: 'http://evil.example' } });
  assert.equal(preflight.status, 403);
  const other = await fetch(`${server.url}/v1/streams`, { headers: { origin: 'http://evil.example', authorization: `Bearer ${KEY}` } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream?token=${KEY}`, { origin: 'http://evil.example' });
  const status = await new Promise<number>((ok) => ws.once('unexpected-response', (_req, res) => ok(res.statusCode ?? 0)));
  assert.equal(status, 403);
});

test('per-client request rate limit -> 429', async () => {
  let limited = 0;
  for (let i = 0; i < 40; i++) {
    const r = await fetch(`${server.url}/v1/streams`, { headers: { authorization: `Bearer ${KEY}` } });
    if (r.status === 429) limited++;
  }
  assert.ok(limited > 0);
});
