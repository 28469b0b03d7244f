/** A real WebSocket stream client for tests and benchmarks (the protocol of server/PROTOCOL.md). */
import WebSocket from 'ws';
import sharp from 'sharp';

export interface ReceivedFrame {
  readonly meta: Record<string, unknown> & { output_id: number; input_id: number | null; skipped: boolean; latency_ms: number };
  readonly bytes: Buffer;
}

export class StreamClient {
  readonly frames: ReceivedFrame[] = [];
  readonly errors: Record<string, unknown>[] = [];
  readonly messages: Record<string, unknown>[] = [];
  started: Record<string, unknown> | undefined;
  /** When false, the client stops acking (a slow reader). */
  autoAck = true;
  private pendingMeta: ReceivedFrame['meta'] | undefined;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        if (this.pendingMeta) this.frames.push({ meta: this.pendingMeta, bytes: data as Buffer });
        this.pendingMeta = undefined;
        if (this.autoAck) this.send({ type: 'ack', frames: 1 });
      } else {
        const msg = JSON.parse(data.toString()) as Record<string, unknown>;
        this.messages.push(msg);
        if (msg['type'] === 'frame') this.pendingMeta = msg as ReceivedFrame['meta'];
        else if (msg['type'] === 'started') this.started = msg;
        else if (msg['type'] === 'error') this.errors.push(msg);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Opens a stream on the server at `url` (http://host:port); `token` when the server has an API key; `timeoutMs` for `started`. */
  static async connect(url: string, start: Record<string, unknown>, options: { token?: string; timeoutMs?: number } = {}): Promise<StreamClient> {
    const ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/stream' + (options.token ? `?token=${encodeURIComponent(options.token)}` : ''));
    await new Promise<void>((ok, fail) => {
      ws.once('open', () => ok());
      ws.once('error', fail);
    });
    const client = new StreamClient(ws);
    client.send({ type: 'start', ...start });
    await client.until(() => client.started !== undefined || client.errors.length > 0, options.timeoutMs);
    if (!client.started) throw new Error(`stream did not start: ${JSON.stringify(client.errors)}`);
    return client;
  }

  get streamId(): string {
    return this.started!['stream_id'] as string;
  }

  send(message: object): void {
    this.ws.send(JSON.stringify(message));
  }

  sendFrame(bytes: Buffer): void {
    this.ws.send(bytes, { binary: true });
  }

  /** Resolves when `predicate` holds, checking after every message and every 20 ms; rejects after `timeoutMs`. */
  until(predicate: () => boolean, timeoutMs = 30_000): Promise<void> {
    if (predicate()) return Promise.resolve();
    return new Promise((ok, fail) => {
      const done = () => {
        clearTimeout(timer);
        clearInterval(poll);
      };
      const timer = setTimeout(() => {
        done();
        fail(new Error('timed out waiting for the stream'));
      }, timeoutMs);
      const check = () => {
        if (predicate()) {
          done();
          ok();
          return true;
        }
        return false;
      };
      const poll = setInterval(check, 20);
      const onMessage = () => {
        if (!check()) this.waiters.push(onMessage);
      };
      this.waiters.push(onMessage);
    });
  }

  /** Sends a frame and waits for the output that answers it (output count grows). */
  async roundTrip(bytes: Buffer, timeoutMs?: number): Promise<ReceivedFrame> {
    const before = this.frames.length;
    const errorsBefore = this.errors.length;
    this.sendFrame(bytes);
    await this.until(() => this.frames.length > before || this.errors.length > errorsBefore, timeoutMs);
    if (this.errors.length > errorsBefore) throw new Error(JSON.stringify(this.errors[this.errors.length - 1]));
    return this.frames[this.frames.length - 1]!;
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((ok) => {
      this.ws.once('close', () => ok());
      this.ws.close();
    });
  }
}

/** A JPEG of a coloured shape on a background, drawn with SVG (test input frames). */
export async function shapeFrame(opts: { bg?: string; fg?: string; x?: number; shape?: 'circle' | 'square'; size?: number; width?: number; height?: number } = {}): Promise<Buffer> {
  const { bg = '#2040e0', fg = '#e02020', x = 64, shape = 'circle', size = 128, width = size, height = size } = opts;
  const body = shape === 'circle' ? `<circle cx="${x}" cy="${height / 2}" r="${width / 5}" fill="${fg}"/>` : `<rect x="${x - width / 5}" y="${height / 2 - width / 5}" width="${(2 * width) / 5}" height="${(2 * width) / 5}" fill="${fg}"/>`;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="${bg}"/>${body}</svg>`;
  return sharp(Buffer.from(svg)).jpeg({ quality: 90 }).toBuffer();
}
