/**
 * Live streams on a real cluster on loopback: redis-server, a gateway (role api), a worker, and a node in role
 * all (a second gateway and a second worker), each its own process on the embedded pack. Four streams through
 * the gateway spread over the two workers; one worker is killed with SIGKILL and its streams resume on the
 * other within 2 s, without the clients noticing, and still follow their prompts (the pack's evaluator). Stream
 * URLs work on the other gateway too, and a worker told to stop (SIGTERM) hands its streams over first.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { WebSocket } from 'ws';
import { EMBEDDED_PACK_DIR } from '../../../models/pack.ts';
import { loadSceneSpec, scoreImage, type SceneAttributes } from '../../../pipelines/evaluation/evaluator.ts';
import { eventually, outputArrivals, resumedAfter, startNode, startRedis, type ClusterNodeProcess, type RedisServer } from '../../helpers/cluster.ts';
import { drawScenePng } from '../../helpers/scenes.ts';
import { StreamClient } from '../../helpers/stream-client.ts';
import { WrtcPeer } from '../../helpers/wrtc-peer.ts';
import type { Json } from '../batch/helpers.ts';

const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);
const scenes: { prompt: string; attrs: SceneAttributes }[] = [
  { prompt: 'a large red circle in the centre on a blue background', attrs: { background: { kind: 'plain', color: 'blue' }, objects: [{ shape: 'circle', color: 'red', size: 'large', position: 'centre' }] } },
  { prompt: 'a large yellow square in the centre on a black background', attrs: { background: { kind: 'plain', color: 'black' }, objects: [{ shape: 'square', color: 'yellow', size: 'large', position: 'centre' }] } },
];
// the input: a scene neither prompt describes
const input = await drawScenePng(spec, { background: { kind: 'plain', color: 'green' }, objects: [{ shape: 'triangle', color: 'white', size: 'small', position: 'left' }] });
const start = (prompt: string) => ({ params: { prompt, steps: 2, strength: 0.9, guidance: 'full', guidance_scale: 2, similarity_threshold: 1 } });

let redis: RedisServer;
let gateway: ClusterNodeProcess;
let worker: ClusterNodeProcess;
let both: ClusterNodeProcess;
const spare: ClusterNodeProcess[] = [];
const clients: StreamClient[] = [];
/** Wall time each client received each output, by output id. */
const arrivals: Map<number, number>[] = [];
let sending: NodeJS.Timeout | undefined;

before(async () => {
  redis = await startRedis();
  [gateway, worker, both] = await Promise.all([startNode({ role: 'api', redis: redis.url }), startNode({ role: 'worker', redis: redis.url }), startNode({ role: 'all', redis: redis.url })]);
});

after(async () => {
  clearInterval(sending);
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([gateway, worker, both, ...spare].filter(Boolean).map((n) => n.kill()));
  await redis?.stop();
});

async function cluster(base: string): Promise<Json> {
  const res = await fetch(`${base}/v1/cluster`);
  assert.equal(res.status, 200);
  return res.json();
}

async function score(bytes: Buffer, attrs: SceneAttributes) {
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return scoreImage(spec, { data, width: info.width, height: info.height }, attrs);
}

/** Each client gets a few more outputs than it has now. */
async function flowing(more = 3, timeoutMs = 60_000): Promise<void> {
  const counts = clients.map((c) => c.frames.length);
  await Promise.all(clients.map((c, i) => c.until(() => c.frames.length >= counts[i]! + more, timeoutMs)));
}

test('4 streams over 2 workers; kill -9 one: its streams resume on the other (time measured), clients stay connected and follow their prompts', { timeout: 600_000 }, async () => {
  // 1. four streams through the gateway, placed two and two
  for (let i = 0; i < 4; i++) {
    const client = await StreamClient.connect(gateway.url, start(scenes[i % 2]!.prompt));
    clients.push(client);
    arrivals.push(outputArrivals(client.ws));
  }
  const placed = (await cluster(gateway.url)).streams as Json[];
  assert.equal(placed.length, 4);
  const on = (id: string) => placed.filter((s) => s.worker === id).length;
  assert.deepEqual([on(worker.id), on(both.id)], [2, 2], JSON.stringify(placed));
  sending = setInterval(() => clients.forEach((c) => c.sendFrame(input)), 100);
  await flowing();

  // 2. the worker dies
  const moved = placed.filter((s) => s.worker === worker.id).map((s) => s.id as string);
  const killedAt = Date.now();
  await worker.kill();
  await flowing(4);
  for (const c of clients) assert.equal(c.ws.readyState, c.ws.OPEN, 'no client was disconnected');
  assert.deepEqual(clients.flatMap((c) => c.errors), []);

  // 3. measured (reported, not asserted: time belongs to the benchmark, see test/bench/cluster.ts): from the kill
  //    to the first output each moved stream's client got from the other worker
  for (const id of moved) {
    // the gateway's log line comes through its stdout, which may trail the frames
    const resumed = await eventually(async () => resumedAfter(gateway, id, arrivals[clients.findIndex((c) => c.streamId === id)]!, killedAt), 10_000);
    assert.equal(resumed.to, both.id);
    console.log(`stream ${id.slice(0, 8)} resumed ${resumed.ms} ms after the kill`);
  }
  const now = (await cluster(gateway.url)).streams as Json[];
  assert.ok(now.every((s) => s.worker === both.id), JSON.stringify(now));
  assert.equal(now.filter((s) => s.failovers === 1).length, 2);

  // 4. afterwards every stream still follows its own prompt
  await flowing(3);
  for (const [i, c] of clients.entries()) {
    const s = await score(c.frames.at(-1)!.bytes, scenes[i % 2]!.attrs);
    assert.ok(s.background && s.objects[0]!.color, `stream ${i}: ${JSON.stringify(s)}`);
  }
  const metrics = await (await fetch(`${gateway.url}/metrics`)).text();
  assert.match(metrics, /^sd_stream_failovers_total 2$/m);
  assert.match(metrics, /^sd_stream_failover_seconds_count 2$/m);
});

test('stream URLs (MJPEG, snapshot, WHEP) and the stream list on the other gateway', { timeout: 600_000 }, async () => {
  const id = clients[0]!.streamId;
  const list = (await (await fetch(`${both.url}/v1/streams`)).json()) as Json;
  assert.deepEqual(new Set(list.streams.map((s: Json) => s.id)), new Set(clients.map((c) => c.streamId)));
  const snapshot = await fetch(`${both.url}/v1/streams/${id}/snapshot`);
  assert.equal(snapshot.status, 200);
  assert.equal((await sharp(Buffer.from(await snapshot.arrayBuffer())).metadata()).format, 'jpeg');
  // MJPEG through the other gateway: parts keep coming
  const res = await fetch(`${both.url}/v1/streams/${id}/mjpeg`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /multipart\/x-mixed-replace/);
  const reader = res.body!.getReader();
  let text = '';
  while ((text.match(/--frame/g) ?? []).length < 3) text += Buffer.from((await reader.read()).value!).toString('latin1');
  await reader.cancel();
  assert.equal((await fetch(`${both.url}/v1/streams/00000000-0000-4000-8000-000000000000/snapshot`)).status, 404);
  // WHEP on the other gateway: signalling forwarded to the relaying gateway, which plays the relayed frames
  const viewer = WrtcPeer.start();
  try {
    viewer.send({ cmd: 'play', url: both.url, path: `/v1/whep/${id}`, token: 'unused' });
    const playing = await viewer.next('playing', 0, 60_000);
    assert.equal(playing.status, 201, playing.body);
    viewer.send({ cmd: 'frames', count: 1 });
    const frame = await viewer.next('frame', 0, 60_000);
    assert.deepEqual([frame.width, frame.height], [128, 128]);
  } finally {
    await viewer.stop();
  }
  // WHIP would run its session on the gateway itself: refused there
  const whip = await fetch(`${gateway.url}/v1/whip`, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: 'v=0' });
  assert.equal(whip.status, 501);
});

test('a named stream: its stable URLs work on every gateway and its name is unique across the cluster', { timeout: 600_000 }, async () => {
  const state = async (base: string) => {
    const res = await fetch(`${base}/v1/streams/by-name/studio-cam/snapshot`);
    assert.equal(res.status, 200);
    assert.equal((await sharp(Buffer.from(await res.arrayBuffer())).metadata()).format, 'jpeg');
    return res.headers.get('x-stream-state');
  };
  assert.equal(await state(gateway.url), 'waiting', 'no stream of that name yet: the placeholder');
  // started through the node in role all, watched through the other gateway
  const named = await StreamClient.connect(both.url, { ...start(scenes[0]!.prompt), name: 'studio-cam' });
  try {
    assert.equal(named.started!['name'], 'studio-cam');
    assert.equal(named.started!['mjpeg_url'], '/v1/streams/by-name/studio-cam/mjpeg');
    // the fields a single node's started has (server/PROTOCOL.md), the worker's notes among them
    assert.deepEqual(Object.keys(named.started!).sort(), ['height', 'mjpeg_url', 'name', 'notes', 'params', 'protocol', 'snapshot_url', 'stream_id', 'type', 'width', 'window']);
    assert.ok(Array.isArray(named.started!['notes']));
    named.sendFrame(input);
    await named.until(() => named.frames.length > 0, 60_000);
    assert.equal(await state(gateway.url), 'running', 'the other gateway forwards to the one relaying it');
    const info = (await (await fetch(`${gateway.url}/v1/streams/by-name/studio-cam`)).json()) as Json;
    assert.deepEqual([info.running, info.stream_id], [true, named.streamId]);
    // WHEP by name through the other gateway
    const sending = setInterval(() => named.sendFrame(input), 100);
    const viewer = WrtcPeer.start();
    try {
      viewer.send({ cmd: 'play', url: gateway.url, path: '/v1/whep/by-name/studio-cam', token: 'unused' });
      const playing = await viewer.next('playing', 0, 60_000);
      assert.equal(playing.status, 201, playing.body);
      viewer.send({ cmd: 'frames', count: 1 });
      const frame = await viewer.next('frame', 0, 60_000);
      assert.deepEqual([frame.width, frame.height], [128, 128]);
    } finally {
      clearInterval(sending);
      await viewer.stop();
    }
    // the same name through the other gateway: refused, as on one node
    const ws = new WebSocket(`${gateway.url.replace(/^http/, 'ws')}/v1/stream`);
    await new Promise((ok) => ws.once('open', ok));
    ws.send(JSON.stringify({ type: 'start', ...start(scenes[1]!.prompt), name: 'studio-cam' }));
    const answer = await new Promise<string>((ok) => {
      ws.once('close', (code: number, reason: Buffer) => ok(`close ${code} ${reason.toString()}`));
      ws.on('message', (data: Buffer) => JSON.parse(data.toString()).type === 'started' && ok('started'));
    });
    if (ws.readyState !== ws.CLOSED) ws.close();
    assert.match(answer, /^close 4409 a stream named "studio-cam" is already running/);
  } finally {
    await named.close();
  }
  await eventually(async () => ((await state(gateway.url)) === 'waiting' ? true : undefined), 10_000);
  assert.equal(await state(both.url), 'waiting');
});

test('a snapshot of a WebP stream nobody watches as MJPEG: encoded on demand by the relaying gateway', { timeout: 600_000 }, async () => {
  const webp = await StreamClient.connect(both.url, { ...start(scenes[1]!.prompt), output: { format: 'webp' } });
  try {
    webp.sendFrame(input);
    await webp.until(() => webp.frames.length > 0, 60_000);
    const res = await fetch(`${gateway.url}/v1/streams/${webp.streamId}/snapshot`);
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await sharp(Buffer.from(await res.arrayBuffer())).metadata()).format, 'jpeg');
  } finally {
    await webp.close();
  }
});

test('SIGTERM drains a worker: its streams move to other workers first, clients stay connected', { timeout: 600_000 }, async () => {
  spare.push(...(await Promise.all([0, 1].map(() => startNode({ role: 'worker', redis: redis.url })))));
  const ids = spare.map((n) => n.id);
  await eventually(async () => (((await cluster(gateway.url)).nodes as Json[]).filter((n) => ids.includes(n.id)).length === 2 ? true : undefined));
  await both.terminate();
  await flowing(3);
  const streams = (await cluster(gateway.url)).streams as Json[];
  const moves = gateway.logs.filter((l) => l['msg'] === 'stream moving to another worker').map((l) => l['reason']);
  assert.ok(streams.every((s) => ids.includes(s.worker)), JSON.stringify({ streams, moves }));
  assert.ok(ids.every((id) => streams.some((s) => s.worker === id)), `both spare workers took streams: ${JSON.stringify({ streams, moves })}`);
  for (const c of clients) assert.equal(c.ws.readyState, c.ws.OPEN);
  await eventually(async () => (gateway.logs.some((l) => l['msg'] === 'stream moving to another worker' && String(l['reason']).includes('1001')) ? true : undefined), 10_000);
});

test('a worker that goes silent (SIGSTOP: its sockets stay open) is noticed by its heartbeat: its streams move', { timeout: 600_000 }, async () => {
  const [frozen, other] = spare as [ClusterNodeProcess, ClusterNodeProcess];
  const moving = ((await cluster(gateway.url)).streams as Json[]).filter((s) => s.worker === frozen.id).map((s) => s.id as string);
  const since = Date.now();
  frozen.process.kill('SIGSTOP');
  await flowing(3);
  for (const id of moving) {
    const resumed = await eventually(async () => resumedAfter(gateway, id, arrivals[clients.findIndex((c) => c.streamId === id)]!, since), 10_000);
    assert.equal(resumed.to, other.id);
    console.log(`stream ${id.slice(0, 8)} resumed ${resumed.ms} ms after its worker froze`);
  }
  await eventually(async () => (gateway.logs.some((l) => l['msg'] === 'stream moving to another worker' && String(l['reason']).includes('heartbeat')) ? true : undefined), 10_000);
  for (const c of clients) assert.equal(c.ws.readyState, c.ws.OPEN);
});
