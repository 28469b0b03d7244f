/**
 * A worker thread that holds ONNX sessions (worker-pool.ts starts it). onnxruntime-node runs a session
 * synchronously on the thread that calls it (REFERENCE §9), so every session of the service lives on a worker
 * and the main thread only posts feeds and receives outputs. Outputs are transferred back, never copied.
 *
 * Messages in:  {type: 'load', id, source, options} | {type: 'run', id, session, feeds, rgb8Output?, evict?}
 *               | {type: 'release', id, session} | {type: 'close'}
 * Messages out: {type: 'started'} | {type: 'loaded', id, inputs, outputs} | {type: 'ran', id, outputs}
 *               | {type: 'released', id} | {type: 'error', id, message, code?}
 */
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { ServiceError } from '../errors.ts';
import type { Feed, Outputs, Rgb8Tensor, SessionOptions } from './contract.ts';
import { OnnxModel } from './onnx.ts';

/** A feed on the wire: data, or the key of data the worker already keeps. */
export type WireFeed = Feed | { readonly kept: string; readonly dims: readonly number[] };

export type WorkerRequest =
  | { type: 'load'; id: number; source: string | Uint8Array; options: SessionOptions }
  | { type: 'run'; id: number; session: number; feeds: Record<string, WireFeed>; rgb8Output?: string; evict?: readonly string[] }
  | { type: 'release'; id: number; session: number }
  | { type: 'close' };

export type WorkerReply =
  | { type: 'started' }
  | { type: 'loaded'; id: number; session: number; inputs: OnnxModel['inputs']; outputs: OnnxModel['outputs'] }
  | { type: 'ran'; id: number; outputs: Outputs | { rgb8: Rgb8Tensor } }
  | { type: 'released'; id: number }
  | { type: 'error'; id: number; message: string; code?: ServiceError['code'] };

const port = parentPort!;
try {
  // this thread only (Linux keeps a nice value per thread); sessions' intra-op threads start from it and inherit it
  setPriority(Math.min(19, getPriority() + ((workerData as { nice?: number } | undefined)?.nice ?? 0)));
} catch {
  // a platform or sandbox that refuses: run at the main thread's priority
}
const sessions = new Map<number, OnnxModel>();
/** Feeds kept for later calls (prompt contexts), by key; the main thread decides what is kept and evicted. */
const kept = new Map<string, Feed>();
let nextSession = 1;

const fail = (id: number, error: unknown) =>
  port.postMessage({ type: 'error', id, message: (error as Error)?.message ?? String(error), code: error instanceof ServiceError ? error.code : undefined } satisfies WorkerReply);

function resolveFeeds(wire: Record<string, WireFeed>): Record<string, Feed> {
  const feeds: Record<string, Feed> = {};
  for (const [name, f] of Object.entries(wire)) {
    if ('kept' in f) {
      const data = kept.get(f.kept);
      if (!data) throw new ServiceError('internal', `feed ${name}: no kept data under ${f.kept}`);
      feeds[name] = data;
    } else {
      if (f.keep !== undefined) kept.set(f.keep, f);
      feeds[name] = f;
    }
  }
  return feeds;
}

async function run(msg: Extract<WorkerRequest, { type: 'run' }>): Promise<void> {
  for (const key of msg.evict ?? []) kept.delete(key);
  const feeds = resolveFeeds(msg.feeds); // first: the main thread counts a kept feed as kept once it is sent
  const model = sessions.get(msg.session);
  if (!model) throw new ServiceError('unavailable', `session ${msg.session} was released`);
  if (msg.rgb8Output !== undefined) {
    const rgb8 = await model.runRgb8(feeds, msg.rgb8Output);
    port.postMessage({ type: 'ran', id: msg.id, outputs: { rgb8 } } satisfies WorkerReply, [rgb8.data.buffer as ArrayBuffer]);
    return;
  }
  const outputs = await model.run(feeds);
  const buffers = new Set(Object.values(outputs).map((t) => t.data.buffer as ArrayBuffer));
  port.postMessage({ type: 'ran', id: msg.id, outputs } satisfies WorkerReply, [...buffers]);
}

port.on('message', (msg: WorkerRequest) => {
  switch (msg.type) {
    case 'load':
      OnnxModel.load(msg.source, msg.options).then((model) => {
        const session = nextSession++;
        sessions.set(session, model);
        port.postMessage({ type: 'loaded', id: msg.id, session, inputs: model.inputs, outputs: model.outputs } satisfies WorkerReply);
      }, (error) => fail(msg.id, error));
      return;
    case 'run':
      run(msg).catch((error) => fail(msg.id, error));
      return;
    case 'release': {
      const model = sessions.get(msg.session);
      sessions.delete(msg.session);
      Promise.resolve(model?.release()).then(() => port.postMessage({ type: 'released', id: msg.id } satisfies WorkerReply), (error) => fail(msg.id, error));
      return;
    }
    case 'close':
      // sessions are released before the thread ends: onnxruntime aborts the process when a live one is torn down
      void Promise.allSettled([...sessions.values()].map((m) => m.release())).finally(() => process.exit(0));
      return;
  }
});
port.postMessage({ type: 'started' } satisfies WorkerReply);
