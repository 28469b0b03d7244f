import { startServer } from '../server/app.ts';
import { Engine } from '../pipelines/engine.ts';
import { createLogger } from '../server/log.ts';
import { BASE_PACK } from './helpers/fixtures.ts';
import { WrtcPeer } from './helpers/wrtc-peer.ts';
const t0 = performance.now();
process.on('exit', () => console.log('exit at', ((performance.now() - t0) / 1000).toFixed(1)));
const server = await startServer({ port: 0, apiKey: 'k' }, { engine: await Engine.load(BASE_PACK), log: createLogger({}, 'error') });
const peer = WrtcPeer.start();
for (let i = 0; i < 3; i++) {
  const from = peer.events.length;
  peer.send({ cmd: 'publish', url: server.url, path: '/v1/whip?steps=1&width=64&height=64', token: 'k', width: 64, height: 64, rgb: Buffer.alloc(64 * 64 * 3, 90).toString('base64'), fps: 15 });
  const p = await peer.next('published', from);
  await new Promise((r) => setTimeout(r, 1000));
  const del = await fetch(server.url + p.location, { method: 'DELETE', headers: { Authorization: 'Bearer k' } });
  console.log('cycle', i, p.status, del.status, server.streams.size);
}
console.log('peer exit', await peer.stop());
await server.close();
console.log('closed at', ((performance.now() - t0) / 1000).toFixed(1));
