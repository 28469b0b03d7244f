/**
 * Access control through the server's real interfaces: keys (Bearer, ?token= only where the README says),
 * the Host allow-list (DNS rebinding), Origin checks on state-changing requests and WebSockets, rate limits
 * with failed keys counted, security headers, and logs without secrets. (test/web/cross-site.test.ts plays the
 * same attacks from a real browser.)
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import WebSocket from 'ws';
import { startServer } from '../../server/app.ts';
import { loadConfig, DEFAULT_CONFIG } from '../../server/config.ts';
import { createLogger } from '../../server/log.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';
import { StreamClient } from '../helpers/stream-client.ts';
import { rawRequest, upgradeStatus } from '../helpers/raw-http.ts';

const KEY = 'test-key-1234';
const engine = await Engine.load(BASE_PACK);
const lines: string[] = [];
const sink = new Writable({
  write(chunk: Buffer, _encoding, done) {
    lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    done();
  },
});
const server = await startServer(
  { port: 0, apiKey: KEY, corsOrigins: ['http://allowed.example'], rateLimitPerMinute: 150, authFailuresPerMinute: 1000 },
  { engine, log: createLogger({}, 'info', sink) },
);
after(() => server.close());
const auth = { authorization: `Bearer ${KEY}` };

test('binds 127.0.0.1 by default; another address needs a key of at least 16 characters without whitespace', () => {
  assert.equal(DEFAULT_CONFIG.host, '127.0.0.1');
  assert.equal(loadConfig([], {}).host, '127.0.0.1');
  assert.throws(() => loadConfig(['--host', '0.0.0.0'], {}), /refusing to bind 0\.0\.0\.0 without an API key/);
  assert.throws(() => loadConfig(['--host', '0.0.0.0'], { API_KEY: 'k' }), /API key of 1 characters: use at least 16/);
  assert.throws(() => loadConfig(['--host', '0.0.0.0', '--api-key', 'short-key-123'], {}), /use at least 16/);
  assert.throws(() => loadConfig(['--host', '0.0.0.0'], { API_KEY: ' '.repeat(20) }), /must not contain whitespace/);
  assert.throws(() => loadConfig([], { API_KEY: 'has a space in it, long enough' }), /must not contain whitespace/);
  assert.equal(loadConfig(['--host', '0.0.0.0'], { API_KEY: '0123456789abcdef' }).apiKey, '0123456789abcdef');
  assert.equal(loadConfig([], { API_KEY: 'k' }).apiKey, 'k', 'loopback: a short key is the operator\'s choice');
  assert.deepEqual(loadConfig(['--allowed-hosts', 'Studio.lan, .example.org'], {}).allowedHosts, ['studio.lan', '.example.org']);
});

test('HTTP needs the key as a Bearer token; health and the UI do not; ?token= only on stream, image and result URLs', async () => {
  assert.equal((await fetch(`${server.url}/v1/streams`)).status, 401);
  assert.equal((await fetch(`${server.url}/v1/streams`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
  assert.equal((await fetch(`${server.url}/v1/streams`, { headers: auth })).status, 200);
  assert.equal((await fetch(`${server.url}/metrics`, { headers: auth })).status, 200);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
  assert.equal((await fetch(`${server.url}/`)).status, 200);
  for (const path of ['/metrics', '/v1/streams', '/v1/adapters']) {
    const r = await fetch(`${server.url}${path}?token=${KEY}`);
    assert.equal(r.status, 401, path);
    assert.match(((await r.json()) as { error: { message: string } }).error.message, /\?token= works only on stream, image and result URLs/);
  }
  const post = await fetch(`${server.url}/v1/streams/x/push?token=${KEY}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(post.status, 401, 'never on a POST');
});

test('WebSocket needs ?token=; MJPEG and snapshot URLs take it too', async () => {
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
  assert.notEqual((await fetch(`${server.url}/v1/streams/${authed.id}/snapshot?token=${KEY}`)).status, 401);
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
  const allowed = await fetch(`${server.url}/v1/streams`, { headers: { origin: 'http://allowed.example', ...auth } });
  assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://allowed.example');
  const preflight = await fetch(`${server.url}/v1/streams`, { method: 'OPTIONS', headers: { origin: 'http://evil.example' } });
  assert.equal(preflight.status, 403);
  const other = await fetch(`${server.url}/v1/streams`, { headers: { origin: 'http://evil.example', ...auth } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/stream?token=${KEY}`, { origin: 'http://evil.example' });
  const status = await new Promise<number>((ok) => ws.once('unexpected-response', (_req, res) => ok(res.statusCode ?? 0)));
  assert.equal(status, 403);
});

test('Host allow-list: a foreign Host (a DNS-rebinding page) gets 403 on every route and on WebSocket; loopback names and IPs pass', async () => {
  const host = `evil.example:${server.port}`;
  for (const path of ['/v1/streams', '/', '/health', '/assets/live.js', '/v1/jobs']) {
    const r = await rawRequest(server.url, { path, headers: { host, ...auth } });
    assert.equal(r.status, 403, path);
    assert.equal(r.json.error?.code, 'forbidden');
    assert.equal(r.json.error?.field, 'host');
    assert.match(r.json.error!.message, /host "evil\.example:\d+" is not served here: add it with --allowed-hosts/);
  }
  const ws = await upgradeStatus(server.url, `/v1/stream?token=${KEY}`, { host, origin: `http://${host}` });
  assert.equal(ws.status, 403, 'a WebSocket whose Origin equals the foreign Host');
  for (const ok of [`localhost:${server.port}`, `127.0.0.1:${server.port}`, `[::1]:${server.port}`, `app.localhost:${server.port}`, `192.168.1.20:${server.port}`, 'LOCALHOST.']) {
    assert.equal((await rawRequest(server.url, { path: '/v1/streams', headers: { host: ok, ...auth } })).status, 200, ok);
  }
  for (const bad of ['localhost.evil.example', 'evil.example', '127.0.0.1.nip.io', 'a b', 'x@localhost']) {
    assert.equal((await rawRequest(server.url, { path: '/health', headers: { host: bad } })).status, 403, bad);
  }
});

test('--allowed-hosts extends the list: exact names, .domain for a domain and its subdomains, * for any', async () => {
  const s = await startServer({ port: 0, allowedHosts: ['studio.lan', '.example.org'] }, { engine, log: createLogger({}, 'error') });
  try {
    for (const [host, status] of [['studio.lan', 200], ['example.org:7860', 200], ['cam.example.org', 200], ['evilexample.org', 403], ['studio.lan.evil.net', 403]] as const) {
      assert.equal((await rawRequest(s.url, { path: '/health', headers: { host } })).status, status, host);
    }
  } finally {
    await s.close();
  }
  const any = await startServer({ port: 0, allowedHosts: ['*'] }, { engine, log: createLogger({}, 'error') });
  try {
    assert.equal((await rawRequest(any.url, { path: '/health', headers: { host: 'whatever.example' } })).status, 200);
  } finally {
    await any.close();
  }
});

test('Origin: state-changing requests from a foreign page are refused (JSON, multipart, DELETE, null, Sec-Fetch-Site); same-origin, --cors and programs pass', async () => {
  const own = `http://127.0.0.1:${server.port}`;
  const json = { 'content-type': 'application/json', ...auth };
  const post = (headers: Record<string, string>, body = '{"url": "rtmp://x/y"}') => rawRequest(server.url, { method: 'POST', path: '/v1/streams/none/push', headers: { ...json, ...headers }, body });
  for (const origin of ['http://evil.example', 'null', `http://127.0.0.1:${server.port + 1}`, `https://evil.example:${server.port}`]) {
    const r = await post({ origin });
    assert.equal(r.status, 403, origin);
    assert.equal(r.json.error?.field, 'origin');
  }
  const form = '--b\r\nContent-Disposition: form-data; name="kind"\r\n\r\nimages\r\n--b--\r\n';
  const multipart = await rawRequest(server.url, { method: 'POST', path: '/v1/adapters?name=x', headers: { origin: 'http://evil.example', 'content-type': 'multipart/form-data; boundary=b', ...auth }, body: form });
  assert.equal(multipart.status, 403, 'a CORS-simple multipart form');
  const del = await rawRequest(server.url, { method: 'DELETE', path: '/v1/streams/none/push', headers: { origin: 'http://evil.example', ...auth } });
  assert.equal(del.status, 403);
  assert.equal((await post({ 'sec-fetch-site': 'cross-site' })).status, 403, 'a browser request without Origin');
  // allowed: they reach the route, which answers 404 for the unknown stream
  assert.equal((await post({ origin: own })).status, 404, 'same origin');
  assert.equal((await post({ origin: `http://localhost:${server.port}`, host: `localhost:${server.port}` })).status, 404, 'same origin by name');
  assert.equal((await post({ origin: 'http://allowed.example' })).status, 404, '--cors origin');
  assert.equal((await post({})).status, 404, 'a program (no Origin)');
  assert.equal((await post({ 'sec-fetch-site': 'same-origin' })).status, 404);
  // reading is not state-changing: a foreign Origin on GET gets an answer without CORS headers
  assert.equal((await rawRequest(server.url, { path: '/v1/streams', headers: { origin: 'http://evil.example', ...auth } })).status, 200);
});

test('WebRTC signalling (WHIP, WHEP) is behind the same rules: Host allow-list, Origin, the key as a Bearer header only', async () => {
  const s = await startServer({ port: 0, apiKey: KEY, rateLimitPerMinute: 0, authFailuresPerMinute: 1000 }, { engine, log: createLogger({}, 'error') });
  try {
    const sdp = { 'content-type': 'application/sdp' };
    const frag = { 'content-type': 'application/trickle-ice-sdpfrag' };
    const routes: { method: string; path: string; headers: Record<string, string>; body: string }[] = [
      { method: 'POST', path: '/v1/streams', headers: { 'content-type': 'application/json' }, body: '{"params": {}}' },
      { method: 'POST', path: '/v1/whip', headers: sdp, body: '' },
      { method: 'POST', path: '/v1/whip/none', headers: sdp, body: 'v=0' },
      { method: 'PATCH', path: '/v1/whip/none', headers: frag, body: 'a=candidate' },
      { method: 'DELETE', path: '/v1/whip/none', headers: {}, body: '' },
      { method: 'POST', path: '/v1/whep/none', headers: sdp, body: 'v=0' },
      { method: 'POST', path: '/v1/whep/by-name/none', headers: sdp, body: 'v=0' },
      { method: 'PATCH', path: '/v1/whep/none/viewer', headers: frag, body: 'a=candidate' },
      { method: 'DELETE', path: '/v1/whep/none/viewer', headers: {}, body: '' },
    ];
    for (const { method, path, headers, body } of routes) {
      const what = `${method} ${path}`;
      const send = (extra: Record<string, string>, at = path) => rawRequest(s.url, { method, path: at, headers: { ...headers, ...extra }, body });
      const rebound = await send({ host: `evil.example:${s.port}`, origin: `http://evil.example:${s.port}`, ...auth });
      assert.equal(rebound.status, 403, `${what}: foreign Host`);
      assert.equal(rebound.json.error?.field, 'host', what);
      const foreign = await send({ origin: 'http://evil.example', ...auth });
      assert.equal(foreign.status, 403, `${what}: foreign Origin`);
      assert.equal(foreign.json.error?.field, 'origin', what);
      assert.equal((await send({ 'sec-fetch-site': 'cross-site', ...auth })).status, 403, `${what}: a cross-site browser request without Origin`);
      assert.equal((await send({})).status, 401, `${what}: no key`);
      assert.equal((await send({}, `${path}?token=${KEY}`)).status, 401, `${what}: ?token= is not for signalling`);
      // with the key, from the server's own page: the route itself answers (the stream is unknown or the offer empty)
      const own = await send({ origin: `http://127.0.0.1:${s.port}`, ...auth });
      assert.ok([400, 404, 201].includes(own.status), `${what}: ${own.status} ${own.body}`);
      if (own.status === 201) assert.equal((await rawRequest(s.url, { method: 'DELETE', path: String(own.json['whip_url']), headers: auth })).status, 200);
    }
  } finally {
    await s.close();
  }
});

test('security headers: a Content-Security-Policy on the pages, nosniff, no referrer, no HSTS on plain HTTP', async () => {
  const r = await fetch(`${server.url}/`);
  const csp = r.headers.get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /object-src 'none'/);
  assert.match(csp, /frame-ancestors 'self'/);
  assert.doesNotMatch(csp, /upgrade-insecure-requests/);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
  assert.equal(r.headers.get('strict-transport-security'), null);
  assert.equal(r.headers.get('x-powered-by'), null);
});

test('logs: JSON lines with a request id (X-Request-Id), no key, no ?token= value', async () => {
  lines.length = 0;
  const r = await fetch(`${server.url}/v1/streams?token=${KEY}`, { headers: { authorization: `Bearer ${KEY}`, 'x-request-id': 'req-42' } });
  assert.equal(r.headers.get('x-request-id'), 'req-42');
  const generated = (await fetch(`${server.url}/v1/streams`, { headers: auth })).headers.get('x-request-id');
  assert.match(generated ?? '', /^[0-9a-f-]{36}$/);
  await new Promise((resolve) => setTimeout(resolve, 50));
  const entries = lines.map((l) => JSON.parse(l) as { req?: { id?: string; url?: string }; msg?: string; level?: string });
  const entry = entries.find((e) => e.req?.id === 'req-42');
  assert.ok(entry, lines.join('\n'));
  assert.equal(entry.level, 'info');
  assert.match(entry.req!.url!, /token=\[redacted\]/);
  assert.ok(entries.some((e) => e.req?.id === generated));
  assert.ok(!lines.join('\n').includes(KEY), 'the key appears in no log line');
});

test('rate limits: requests per client -> 429 with Retry-After; failed keys count, and over their limit even the right key waits', async () => {
  let limited: Response | undefined;
  for (let i = 0; i < 200 && !limited; i++) {
    const r = await fetch(`${server.url}/v1/streams`, { headers: { authorization: 'Bearer wrong' } });
    if (r.status === 429) limited = r;
  }
  assert.ok(limited, 'failed requests count against the request limit');
  assert.ok(Number(limited.headers.get('retry-after')) > 0);
  assert.equal(((await limited.json()) as { error: { code: string } }).error.code, 'rate_limited');

  const s = await startServer({ port: 0, apiKey: KEY, authFailuresPerMinute: 3 }, { engine, log: createLogger({}, 'error') });
  try {
    for (let i = 0; i < 2; i++) assert.equal((await fetch(`${s.url}/v1/streams`, { headers: { authorization: 'Bearer guess' } })).status, 401);
    assert.equal((await upgradeStatus(s.url, '/v1/stream?token=guess', {})).status, 401, 'a WebSocket with a wrong token counts too');
    const locked = await fetch(`${s.url}/v1/streams`, { headers: auth });
    assert.equal(locked.status, 429);
    assert.ok(Number(locked.headers.get('retry-after')) > 0);
    assert.match(((await locked.json()) as { error: { message: string } }).error.message, /more than 3 failed API key checks per minute/);
    const ws = await upgradeStatus(s.url, `/v1/stream?token=${KEY}`, {});
    assert.equal(ws.status, 429);
    assert.ok(Number(ws.headers['retry-after']) > 0);
    assert.equal((await fetch(`${s.url}/health`)).status, 200, 'health checks are not limited');
  } finally {
    await s.close();
  }
});
