import { WorkerPool } from './models/runtime/worker-pool.ts';
const pool = new WorkerPool(1);
if (process.argv[2] === 'prewarm') pool.prewarm();
const m = await pool.load('models/packs/tiny-shapes/vae_decoder/model.onnx', { provider: 'cpu', threads: 1, label: 'dec' }, [0]);
console.log('loaded');
setTimeout(() => { console.log((process as any)._getActiveHandles().map((h: any) => h.constructor.name)); }, 1000).unref();
