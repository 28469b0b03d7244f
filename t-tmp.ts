import { Engine } from './pipelines/engine.ts';
import { StreamPipeline } from './pipelines/stream-pipeline.ts';
import { parseParams } from './pipelines/params.ts';
const t0 = performance.now();
const engine = await Engine.load();
console.log('loaded in', (performance.now() - t0).toFixed(0), 'ms; workers', engine.pack.sessions.workerCount);
const p = await StreamPipeline.create(engine, parseParams({ prompt: 'a large red circle in the centre on a blue background', steps: 2, strength: 0.6, similarity_threshold: 1 }));
const rgb = new Uint8Array(128 * 128 * 3).fill(120);
const outs = await Promise.all([p.process([rgb.slice()], 1), p.process([rgb.slice()], 2), p.process([rgb.slice()], 3)]);
console.log(outs.map((o) => [o[0]!.source, o[0]!.rgb.length, o[0]!.rgb[100]]));
const t1 = performance.now();
let n = 0;
while (performance.now() - t1 < 300) { await p.process([rgb.slice()], n++); }
console.log('sequential fps', (n / 3).toFixed(1));
const t2 = performance.now(); n = 0;
const inflight: Promise<unknown>[] = [];
while (performance.now() - t2 < 300) { await p.room(); inflight.push(p.process([rgb.slice()], n++, true)); }
await Promise.all(inflight);
console.log('pipelined fps', (n / ((performance.now() - t2) / 1000)).toFixed(1));
console.log('exiting naturally');
setTimeout(() => { console.log((process as any)._getActiveHandles().map((h: any) => h.constructor.name)); }, 2000).unref();
