/**
 * The WebSocket side of streams (protocol in server/PROTOCOL.md): ws://HOST/v1/stream.
 * The first message must be a `start`; then binary frames, `update`, `ack`, `stop` and `ping` messages.
 * Every error of a frame or message is reported on the socket and the stream goes on.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { ServiceError, toServiceError } from '../../models/errors.ts';
import { checkKey, originAllowed } from '../auth.ts';
import type { AppContext } from '../context.ts';
import { CLOSE, PROTOCOL_VERSION, closeCodeFor, errorMessage, parseClientMessage } from './protocol.ts';
import type { StreamRegistry } from './registry.ts';
import { StreamSession } from './session.ts';

export const STREAM_PATH = '/v1/stream';
/** A client must send `start` this soon after connecting. */
const START_TIMEOUT_MS = 10_000;

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function sendJson(ws: WebSocket, message: object): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message));
}

function reject(socket: Duplex, status: number, message: string): void {
  socket.write(`HTTP/1.1 ${status} ${message}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`);
  socket.destroy();
}

/** Takes an accepted stream socket (a session here, or a cluster gateway's relay). */
export type StreamSocketHandler = (ws: WebSocket, req: IncomingMessage) => void;

/** The stream endpoint on this node: sessions run here. */
export function localStreams(ctx: AppContext, registry: StreamRegistry): StreamSocketHandler {
  return (ws, req) => handleConnection(ws, req, ctx, registry);
}

/**
 * Serves stream WebSockets: by default /v1/stream runs sessions here; a cluster node passes its own table
 * (a gateway relays /v1/stream to workers, which take them on an internal path).
 */
export function attachStreamServer(server: Server, ctx: AppContext, registry: StreamRegistry, paths: Readonly<Record<string, StreamSocketHandler>> = { [STREAM_PATH]: localStreams(ctx, registry) }): WebSocketServer {
  // Frames up to 4x the limit are read and answered with a too_large error (the stream survives);
  // anything larger is cut off by ws itself with close code 1009.
  const wss = new WebSocketServer({ noServer: true, maxPayload: ctx.config.maxFrameBytes * 4 });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const handler = paths[path];
    if (!handler) return reject(socket, 404, 'Not Found');
    try {
      checkKey(ctx.config, req);
    } catch {
      return reject(socket, 401, 'Unauthorized');
    }
    if (!originAllowed(ctx.config, req)) return reject(socket, 403, 'Forbidden origin');
    if (ctx.draining) return reject(socket, 503, 'Shutting down');
    wss.handleUpgrade(req, socket, head, (ws) => handler(ws, req));
  });
  return wss;
}

/** Messages that may wait while a stream opens; more is a client not waiting for `started` at all. */
const MAX_EARLY_MESSAGES = 32;

/** A message that arrived while the stream was opening: text in full; of frames only the latest is kept. */
type EarlyMessage = { readonly text: string } | { readonly frame: Buffer; readonly at: number } | { readonly dropped: number };

function handleConnection(ws: WebSocket, req: IncomingMessage, ctx: AppContext, registry: StreamRegistry): void {
  const client = req.socket.remoteAddress ?? 'unknown';
  let session: StreamSession | undefined;
  let opening = false;
  /** Messages received between `start` and `started`, replayed in order once the stream is open. */
  let early: EarlyMessage[] = [];
  const startTimer = setTimeout(() => ws.close(CLOSE.badStart, 'no start message'), START_TIMEOUT_MS);

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
    if (opening) return hold(data, isBinary, at);
    if (isBinary) {
      if (!session) return report(new ServiceError('bad_request', 'send a start message before frames'));
      return session.onFrame(rawToBuffer(data), at);
    }
    void handle(rawToBuffer(data).toString('utf8'));
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
        let release: () => void = () => {};
        try {
          release = registry.reserve(client, message.name);
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
          });
          release();
          clearTimeout(startTimer);
          if (ws.readyState !== ws.OPEN) return opened.close();
          session = opened;
          registry.add(opened, client);
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
          release();
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
    if (session) {
      ctx.log.info('stream closed', { stream: session.id, ...session.stats });
      session.close();
      ctx.metrics.streamsActive.set(registry.size);
    }
  });
  ws.on('error', (error) => ctx.log.warn('socket error', { error: error.message }));
}
