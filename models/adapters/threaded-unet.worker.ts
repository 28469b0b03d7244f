/**
 * Worker-thread side of a merged UNet (see threaded-unet.ts). onnxruntime-node creates sessions and runs them
 * synchronously on the calling thread, so a session built on the main thread would stall every stream for
 * the whole build (hundreds of ms). Here the session is built and run on its own thread; the main thread
 * only posts rows and receives predictions. A worker starts empty (so one can be started ahead of time)
 * and builds its session on the first message.
 * The worker can also hold the text encoders that go with the UNet (merged LoRA layers, an adapter's concept tokens).
 * Messages in: {type: 'load', bytes, options, texts} | {type: 'predict', id, rows, h, w} | {type: 'encode', id, model, feeds} | {type: 'close'};
 * out: {type: 'started'} | {type: 'ready', inputs, outputs, texts} | {type: 'result', id, eps} | {type: 'outputs', id, outputs}
 *   | {type: 'error', id?, message, code?}.
 */
import { parentPort } from 'node:worker_threads';
import { Unet, type UnetRow } from '../components.ts';
import { ServiceError } from '../errors.ts';
import { OnnxModel, type Feed, type SessionOptions } from '../runtime/onnx.ts';

export type WorkerRequest =
  | { type: 'load'; bytes: Uint8Array; options: SessionOptions; texts: { bytes: Uint8Array; options: SessionOptions }[] }
  | { type: 'predict'; id: number; rows: UnetRow[]; h: number; w: number }
  | { type: 'encode'; id: number; model: number; feeds: Record<string, Feed> }
  | { type: 'close' };

const port = parentPort!;
const fail = (error: unknown, id?: number) =>
  port.postMessage({ type: 'error', id, message: (error as Error)?.message ?? String(error), code: error instanceof ServiceError ? error.code : undefined });

let unet: Unet | undefined;
let texts: OnnxModel[] = [];

port.on('message', (msg: WorkerRequest) => {
  switch (msg.type) {
    case 'load':
      Promise.all([OnnxModel.load(msg.bytes, msg.options), ...msg.texts.map((t) => OnnxModel.load(t.bytes, t.options))]).then(
        ([model, ...textModels]) => {
          unet = new Unet(model!);
          texts = textModels;
          port.postMessage({ type: 'ready', inputs: model!.inputs, outputs: model!.outputs, texts: textModels.map((m) => ({ inputs: m.inputs, outputs: m.outputs })) });
        },
        (error) => fail(error),
      );
      return;
    case 'encode': {
      const text = texts[msg.model];
      if (!text) return fail(new ServiceError('internal', `encode with text encoder ${msg.model}, which was not loaded`), msg.id);
      text.run(msg.feeds).then(
        (outputs) => port.postMessage({ type: 'outputs', id: msg.id, outputs }),
        (error) => fail(error, msg.id),
      );
      return;
    }
    case 'predict':
      if (!unet) return fail(new ServiceError('internal', 'predict before the session was loaded'), msg.id);
      unet.predict(msg.rows, msg.h, msg.w).then(
        (eps) => port.postMessage({ type: 'result', id: msg.id, eps }, eps.map((e) => e.buffer as ArrayBuffer)),
        (error) => fail(error, msg.id),
      );
      return;
    case 'close':
      void Promise.all([unet?.model.release(), ...texts.map((t) => t.release())]).finally(() => process.exit(0));
      return;
  }
});
port.postMessage({ type: 'started' });
