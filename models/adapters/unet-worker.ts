/**
 * Worker-thread side of a merged UNet (see worker-unet.ts). onnxruntime-node creates sessions and runs them
 * synchronously on the calling thread, so a session built on the main thread would stall every stream for
 * the whole build (hundreds of ms). Here the session is built and run on its own thread; the main thread
 * only posts rows and receives predictions. A worker starts empty (so one can be started ahead of time)
 * and builds its session on the first message.
 * Messages in: {type: 'load', bytes, options} | {type: 'predict', id, rows, h, w} | {type: 'close'};
 * out: {type: 'started'} | {type: 'ready', inputs, outputs} | {type: 'result', id, eps} | {type: 'error', id?, message, code?}.
 */
import { parentPort } from 'node:worker_threads';
import { Unet, type UnetRow } from '../components.ts';
import { ServiceError } from '../errors.ts';
import { OnnxModel, type SessionOptions } from '../runtime.ts';

export type WorkerRequest =
  | { type: 'load'; bytes: Uint8Array; options: SessionOptions }
  | { type: 'predict'; id: number; rows: UnetRow[]; h: number; w: number }
  | { type: 'close' };

const port = parentPort!;
const fail = (error: unknown, id?: number) =>
  port.postMessage({ type: 'error', id, message: (error as Error)?.message ?? String(error), code: error instanceof ServiceError ? error.code : undefined });

let unet: Unet | undefined;

port.on('message', (msg: WorkerRequest) => {
  switch (msg.type) {
    case 'load':
      OnnxModel.load(msg.bytes, msg.options).then(
        (model) => {
          unet = new Unet(model);
          port.postMessage({ type: 'ready', inputs: model.inputs, outputs: model.outputs });
        },
        (error) => fail(error),
      );
      return;
    case 'predict':
      if (!unet) return fail(new ServiceError('internal', 'predict before the session was loaded'), msg.id);
      unet.predict(msg.rows, msg.h, msg.w).then(
        (eps) => port.postMessage({ type: 'result', id: msg.id, eps }, eps.map((e) => e.buffer as ArrayBuffer)),
        (error) => fail(error, msg.id),
      );
      return;
    case 'close':
      void (unet?.model.release() ?? Promise.resolve()).finally(() => process.exit(0));
      return;
  }
});
port.postMessage({ type: 'started' });
