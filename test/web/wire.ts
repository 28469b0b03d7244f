/**
 * A page's stream WebSocket as seen on the wire (playwright's frame events): the start message, the input
 * frames the page sent, the output frames with their metadata, and every JSON message with the number of
 * inputs sent when it arrived (an input sent after an `updated` is rendered with the new parameters).
 */
import type { WebSocket } from 'playwright-core';

/** A parsed protocol message (server/PROTOCOL.md); tests index into it freely. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Message = Record<string, any>;

export interface Wire {
  readonly ws: WebSocket;
  start: Message | undefined;
  /** Binary messages the page sent: input frame `id` is inputs[id - 1]. */
  readonly inputs: Buffer[];
  readonly outputs: { meta: Message; bytes: Buffer }[];
  /** JSON messages from the server, each with the inputs sent by the time it arrived. */
  readonly messages: { msg: Message; inputsSent: number }[];
  /** JSON messages the page sent (start, update, ack, stop). */
  readonly sent: Message[];
  closed: boolean;
}

export function recordWire(ws: WebSocket): Wire {
  const wire: Wire = { ws, start: undefined, inputs: [], outputs: [], messages: [], sent: [], closed: false };
  let meta: Message | undefined;
  ws.on('framesent', ({ payload }) => {
    if (typeof payload !== 'string') return void wire.inputs.push(payload);
    const msg = JSON.parse(payload) as Message;
    wire.sent.push(msg);
    if (msg['type'] === 'start') wire.start = msg;
  });
  ws.on('framereceived', ({ payload }) => {
    if (typeof payload !== 'string') {
      if (meta) wire.outputs.push({ meta, bytes: payload });
      meta = undefined;
      return;
    }
    const msg = JSON.parse(payload) as Message;
    wire.messages.push({ msg, inputsSent: wire.inputs.length });
    if (msg['type'] === 'frame') meta = msg;
  });
  ws.on('close', () => (wire.closed = true));
  return wire;
}

/** The stream id the server gave this socket. */
export function streamIdOf(wire: Wire): string | undefined {
  return wire.messages.find((m) => m.msg['type'] === 'started')?.msg['stream_id'];
}

/**
 * The first output of an input sent after the first message matching `after` arrived (so rendered with
 * what that message confirmed), or undefined while there is none yet.
 */
export function outputAfter(wire: Wire, after: (msg: Message) => boolean): { meta: Message; bytes: Buffer } | undefined {
  const mark = wire.messages.find((m) => after(m.msg));
  if (!mark) return undefined;
  return wire.outputs.find((o) => o.meta['input_id'] > mark.inputsSent);
}
