/**
 * The WebSocket side of streams (protocol in server/PROTOCOL.md): ws://HOST/v1/stream.
 * The first message must be a `start`; then binary frames, `update`, `ack`, `stop` and `ping` messages.
 * Every error of a frame or message is reported on the socket and the stream goes on.
 * Bounded: upgrades pass the Host/Origin guards, the rate limits and the key check; sockets not started yet
 * are limited in number (in all and per client) and time; text messages in size (MAX_CONTROL_BYTES, checked
 * before parsing); a stream's place and latent area are reserved in the registry before it opens.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { ServiceError, toServiceError } from '../../models/errors.ts';
import { parseParams } from '../../pipelines/params.ts';
import { checkKey } from '../auth.ts';
import type { AppContext } from '../context.ts';
import type { RateLimits } from '../rate-limits.ts';
import { checkRequest } from '../request-guards.ts';
import { CLOSE, MAX_CONTROL_BYTES, PROTOCOL_VERSION, closeCodeFor, errorMessage, parseClientMessage } from './protocol.ts';
import type { Reservation, StreamRegistry } from './registry.ts';
import { StreamSession, streamArea } from './session.ts';
import { refuseWhileDraining } from '../shutdown.ts';

export const STREAM_PATH = '/v1/stream';

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function sendJson(ws: WebSocket, message: object): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

/** Answers an upgrade with an HTTP error (the body is the error's JSON, as on every other route). */
function reject(socket: Duplex, error: ServiceError): void {
  const body = JSON.stringify({ error: { code: error.code, message: error.message } });
  const retry = error.retryAfter === undefined ? '' : `Retry-After: ${error.retryAfter}\r\n`;
  socket.end(`HTTP/1.1 ${error.status} ${error.code}\r\nConnection: close\r\nContent-Type: application/json\r\n${retry}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

/** Sockets connected and not started yet, in all and per client address. */
class PendingSockets {
  private readonly perClient = new Map<string, number>();
  private total = 0;

  constructor(private readonly max: number, private readonly maxPerClient: number) {}

  /** Takes a place; throws rate_limited when there is none. Returns its release (idempotent). */
  take(client: string): () => void {
    const mine = this.perClient.get(client) ?? 0;
    if (this.total >= this.max) throw new ServiceError('rate_limited', `${this.max} sockets are waiting to start a stream; try again shortly`, { retryAfter: 2 });
    if (mine >= this.maxPerClient) throw new ServiceError('rate_limited', `this client already has ${this.maxPerClient} sockets that have not sent start`, { retryAfter: 2 });
    this.total++;
    this.perClient.set(client, mine + 1);
    let taken = true;
    return () => {
      if (!taken) return;
      taken = false;
      this.total--;
      const n = (this.perClient.get(client) ?? 1) - 1;
      if (n <= 0) this.perClient.delete(client);
      else this.perClient.set(client, n);
    };
  }
}

/**
 * Takes an accepted stream socket (a session here, or a cluster gateway's relay). `release` gives back the
 * socket's place among unstarted sockets (once it starts a stream; it is also given back when the socket closes).
 */
export type StreamSocketHandler = (ws: WebSocket, req: IncomingMessage, release: () => void) => void;

/** The stream endpoint on this node: sessions run here. */
export function localStreams(ctx: AppContext, registry: StreamRegistry): StreamSocketHandler {
  return (ws, req, release) => handleConnection(ws, req, ctx, registry, release);
}

/**
 * Serves stream WebSockets: by default /v1/stream runs sessions here; a cluster node passes its own table
 * (a gateway relays /v1/stream to workers, which take them on an internal path).
 */
export function attachStreamServer(server: Server, ctx: AppContext, registry: StreamRegistry, limits: RateLimits, paths: Readonly<Record<string, StreamSocketHandler>> = { [STREAM_PATH]: localStreams(ctx, registry) }): WebSocketServer {
  // Frames up to 4x the limit are read and answered with a too_large error (the stream survives);
  // anything larger is cut off by ws itself with close code 1009.
  const wss = new WebSocketServer({ noServer: true, maxPayload: ctx.config.maxFrameBytes * 4 });
  const pending = new PendingSockets(ctx.config.maxPendingSockets, ctx.config.maxPendingSocketsPerClient);

  // 1. path, 2. Host and Origin, 3. rate limits, 4. key, 5. draining, 6. a place among unstarted sockets
  const admit = async (req: IncomingMessage): Promise<{ handler: StreamSocketHandler; release: () => void }> => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const handler = paths[path];
    if (!handler) throw new ServiceError('not_found', `no WebSocket at ${path}`);
    checkRequest(ctx.config, req, true);
    await limits.admitUpgrade(req);
    try {
      checkKey(ctx.config, req);
    } catch (error) {
      await limits.upgradeFailed(req);
      throw error;
    }
    refuseWhileDraining(ctx.draining);
    return { handler, release: pending.take(req.socket.remoteAddress ?? 'unknown') };
  };

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy()); // a client gone during the checks must not crash the server
    admit(req).then(
      ({ handler, release }) =>
        wss.handleUpgrade(req, socket, head, (ws) => {
          ws.once('close', release);
          handler(ws, req, release);
        }),
      (error: unknown) => reject(socket, error instanceof ServiceError ? error : new ServiceError('internal', 'internal error', { cause: error })),
    );
  });
  return wss;
}

/** Messages that may wait while a stream opens; more is a client not waiting for `started` at all. */
const MAX_EARLY_MESSAGES = 32;

/** A message that arrived while the stream was opening: text in full; of frames only the latest is kept. */
type EarlyMessage = { readonly text: string } | { readonly frame: Buffer; readonly at: number } | { readonly dropped: number };

function handleConnection(ws: WebSocket, req: IncomingMessage, ctx: AppContext, registry: StreamRegistry, releasePending: () => void): void {
  const client = req.socket.remoteAddress ?? 'unknown';
  let session: StreamSession | undefined;
  let opening = false;
  /** Messages received between `start` and `started`, replayed in order once the stream is open. */
  let early: EarlyMessage[] = [];
  const startTimer = setTimeout(() => ws.close(CLOSE.badStart, 'no start message'), ctx.config.startTimeoutMs);

  const report = (error: unknown) => sendJson(ws, errorMessage(error));

  /** Holds a message until the stream is open (latest-frame-wins for frames, as once it runs). */
  const hold = (data: RawData, isBinary: boolean, at: number) => {
    if (!isBinary) {
      if (early.filter((m) => 'text' in m).length >= MAX_EARLY_MESSAGES) return report(new ServiceError('rate_limited', `more than ${MAX_EARLY_MESSAGES} messages before \`started\``));
      early.push({ text: rawToBuffer(data).toString('utf8') });
      return;
    }
    // the frame waiting so far is replaced; it still counts as a received (and dropped) frame
    const waiting = early.findIndex((m) => 'frame' in m);
    if (waiting >= 0) {
      const before = early[waiting - 1];
      if (before && 'dropped' in before) early.splice(waiting - 1, 2, { dropped: before.dropped + 1 });
      else early[waiting] = { dropped: 1 };
    }
    early.push({ frame: rawToBuffer(data), at });
  };

  /** A bug while handling a message ends the stream with 1011 instead of the process. */
  const handle = (text: string) =>
    onText(text).catch((error: unknown) => {
      ctx.log.error('stream message failed', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
      report(new ServiceError('internal', 'internal error'));
      ws.close(CLOSE.internal, 'internal error');
    });

  /** Hands the held messages to the open stream, in the order they came. */
  const replay = (open: StreamSession) => {
    const held = early;
    early = [];
    for (const m of held) {
      if ('text' in m) void handle(m.text);
      else if ('frame' in m) open.onFrame(m.frame, m.at);
      else for (let i = 0; i < m.dropped; i++) open.onDroppedFrame();
    }
  };

  ws.on('message', (data: RawData, isBinary: boolean) => {
    const at = performance.now();
    if (isBinary) {
      if (opening) return hold(data, isBinary, at);
      if (!session) return report(new ServiceError('bad_request', 'send a start message before frames'));
      return session.onFrame(rawToBuffer(data), at);
    }
    const bytes = rawToBuffer(data);
    // sized before it is held or parsed: parsing megabytes of JSON would stall every stream
    if (bytes.length > MAX_CONTROL_BYTES) {
      report(new ServiceError('too_large', `a text message may have at most ${MAX_CONTROL_BYTES} bytes, this one has ${bytes.length}`));
      if (!session && !opening) ws.close(CLOSE.tooBig, 'text message too large');
      return;
    }
    if (opening) return hold(bytes, false, at);
    void handle(bytes.toString('utf8'));
  });

  async function onText(text: string): Promise<void> {
    let message;
    try {
      message = parseClientMessage(text);
    } catch (error) {
      return report(error);
    }
    switch (message.type) {
      case 'start': {
        if (session || opening) return report(new ServiceError('conflict', 'the stream has already started'));
        opening = true;
        clearTimeout(startTimer); // the start came in time; opening may take a while (an adapter merge)
        let reservation: Reservation | undefined;
        try {
          reservation = registry.reserve(client, streamArea(ctx.engine, parseParams({ ...message.params })), message.name);
          const opened = await StreamSession.open(ctx, message, {
            sendJson: (m) => sendJson(ws, m),
            sendFrame: (f) => {
              if (ws.readyState !== ws.OPEN) return;
              ws.send(JSON.stringify(f.meta));
              ws.send(f.bytes, { binary: true });
            },
            get bufferedAmount() {
              return ws.bufferedAmount;
            },
          }, reservation);
          releasePending();
          registry.add(opened, client, reservation); // from here its close releases the reservation
          if (ws.readyState !== ws.OPEN) return opened.close();
          session = opened;
          ctx.metrics.streamsActive.set(registry.size);
          ctx.log.info('stream started', { stream: opened.id, name: opened.name, client, mode: message.mode });
          const { width, height } = opened.size;
          sendJson(ws, {
            type: 'started',
            protocol: PROTOCOL_VERSION,
            stream_id: opened.id,
            name: opened.name ?? null,
            params: opened.params,
            notes: opened.notes,
            width,
            height,
            window: message.window,
            ...opened.outputPaths,
          });
          opening = false;
          replay(opened);
        } catch (error) {
          reservation?.release();
          early = [];
          const e = toServiceError(error);
          report(e);
          ws.close(closeCodeFor(e), e.message.slice(0, 120));
        } finally {
          opening = false;
        }
        return;
      }
      case 'update':
        if (!session) return report(new ServiceError('bad_request', 'send a start message first'));
        try {
          const params = await session.update(message.params, message);
          sendJson(ws, { type: 'updated', params, notes: session.notes });
        } catch (error) {
          report(error);
        }
        return;
      case 'ack':
        session?.onAck(message.frames);
        return;
      case 'ping':
        sendJson(ws, { type: 'pong' });
        return;
      case 'stop':
        sendJson(ws, { type: 'stopped', stats: session?.stats ?? null });
        ws.close(CLOSE.normal, 'stopped');
        return;
    }
  }

  ws.on('close', () => {
    clearTimeout(startTimer);
    releasePending();
    if (session) {
      ctx.log.info('stream closed', { stream: session.id, ...session.stats });
      session.close();
      ctx.metrics.streamsActive.set(registry.size);
    }
  });
  ws.on('error', (error) => ctx.log.warn('socket error', { error: error.message }));
}
