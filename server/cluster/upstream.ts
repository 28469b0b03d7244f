/**
 * A gateway's connection to the worker that runs one of its streams: a WebSocket to the worker's internal
 * stream endpoint speaking the ordinary stream protocol (server/PROTOCOL.md), its `frame` metadata paired with
 * the binary image that follows it.
 */
import WebSocket, { type RawData } from 'ws';
import type { NodeInfo } from './nodes.ts';

/** Where workers take streams from gateways (the public /v1/stream of a gateway relays to it). */
export const INTERNAL_STREAM_PATH = '/v1/internal/stream';

/** A server message as JSON. */
export type Message = Record<string, unknown> & { readonly type: string };

export interface UpstreamHandlers {
  /** Any text message but a `frame` (whose image is still to come). */
  onMessage(message: Message): void;
  onFrame(meta: Message, bytes: Buffer): void;
  /** The connection ended (or never opened: code 1006). */
  onClose(code: number, reason: string): void;
}

/** How often a gateway pings a worker's stream socket, ms (a live worker answers even with no frames to send). */
const PING_MS = 500;

export class Upstream {
  private readonly ws: WebSocket;
  private meta: Message | undefined;
  private ended = false;
  private readonly pinger: NodeJS.Timeout;
  /** performance.now() when the worker was last heard from (any message or pong). */
  lastHeard = performance.now();

  constructor(
    readonly worker: NodeInfo,
    start: object,
    apiKey: string | undefined,
    private readonly handlers: UpstreamHandlers,
  ) {
    const url = `${worker.url.replace(/^http/, 'ws')}${INTERNAL_STREAM_PATH}`;
    this.ws = new WebSocket(url, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, perMessageDeflate: false });
    this.ws.on('open', () => this.ws.send(JSON.stringify(start)));
    this.ws.on('message', (data: RawData, isBinary: boolean) => {
      this.lastHeard = performance.now();
      this.receive(toBuffer(data), isBinary);
    });
    this.ws.on('pong', () => (this.lastHeard = performance.now()));
    this.pinger = setInterval(() => this.open && this.ws.ping(), PING_MS);
    this.pinger.unref();
    this.ws.on('close', (code, reason) => this.end(code, reason.toString()));
    this.ws.on('error', (error) => this.end(1006, error.message));
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  sendText(text: string): void {
    if (this.open) this.ws.send(text);
  }

  sendFrame(bytes: Buffer): void {
    if (this.open) this.ws.send(bytes, { binary: true });
  }

  /** Milliseconds since the worker was last heard from. */
  get silentMs(): number {
    return performance.now() - this.lastHeard;
  }

  /** Ends it at once without telling the handlers (the stream has moved on). */
  drop(): void {
    this.ended = true;
    clearInterval(this.pinger);
    this.ws.terminate();
  }

  /** A clean end (the client stopped or left). */
  close(): void {
    this.ended = true;
    clearInterval(this.pinger);
    if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    else this.ws.close(1000, 'client left');
  }

  private receive(data: Buffer, isBinary: boolean): void {
    if (this.ended) return;
    if (isBinary) {
      const meta = this.meta;
      this.meta = undefined;
      if (meta) this.handlers.onFrame(meta, data);
      return;
    }
    let message: Message;
    try {
      message = JSON.parse(data.toString('utf8')) as Message;
    } catch {
      return; // a worker speaks JSON; anything else is dropped
    }
    if (message.type === 'frame') this.meta = message;
    else this.handlers.onMessage(message);
  }

  private end(code: number, reason: string): void {
    clearInterval(this.pinger);
    if (this.ended) return;
    this.ended = true;
    this.ws.terminate();
    this.handlers.onClose(code, reason);
  }
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}
