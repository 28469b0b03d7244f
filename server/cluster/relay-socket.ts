/**
 * A gateway's public /v1/stream: the same protocol as a single node's (server/PROTOCOL.md). It waits for
 * `start`, checks the parameters and the client's stream limit, then hands the socket to a RelayedStream that
 * places the stream on a worker and relays it (relay.ts).
 */
import type { IncomingMessage } from 'node:http';
import type { RawData, WebSocket } from 'ws';
import { ServiceError, toServiceError } from '../../models/errors.ts';
import { CLOSE, closeCodeFor, errorMessage, parseClientMessage } from '../streams/protocol.ts';
import type { Reservation, StreamRegistry } from '../streams/registry.ts';
import { RelayedStream, type RelayDeps } from './relay.ts';

/** A client must send `start` this soon after connecting, ms (as on a single node). */
const START_TIMEOUT_MS = 10_000;

/**
 * The public /v1/stream of a gateway: waits for `start` (holding what comes before `started`, the newest frame
 * only), places the stream and relays it.
 */
export function relayConnection(ws: WebSocket, req: IncomingMessage, deps: RelayDeps, registry: StreamRegistry<RelayedStream>): void {
  const client = req.socket.remoteAddress ?? 'unknown';
  let stream: RelayedStream | undefined;
  const startTimer = setTimeout(() => ws.close(CLOSE.badStart, 'no start message'), START_TIMEOUT_MS);
  const report = (error: unknown) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(errorMessage(error)));
  };

  ws.on('message', (data: RawData, isBinary: boolean) => {
    const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    if (stream) {
      if (isBinary) stream.onClientFrame(bytes);
      else stream.onClientText(bytes.toString('utf8'));
      return;
    }
    if (isBinary) return report(new ServiceError('bad_request', 'send a start message before frames'));
    let message;
    try {
      message = parseClientMessage(bytes.toString('utf8'));
    } catch (error) {
      return report(error);
    }
    if (message.type === 'ping') return ws.send(JSON.stringify({ type: 'pong' }));
    if (message.type !== 'start') return report(new ServiceError('bad_request', 'send a start message first'));
    let reservation: Reservation | undefined;
    try {
      // the place and name on this gateway (no latent area: the worker's registry counts it); open() claims the name cluster-wide
      reservation = registry.reserve(client, 0, message.name);
      const opened = new RelayedStream(ws, message, deps); // checks the parameters
      clearTimeout(startTimer);
      stream = opened;
      registry.add(opened, client, reservation); // from here its close releases the reservation
      reservation = undefined;
      deps.ctx.metrics.streamsActive.set(registry.size);
      deps.ctx.log.info('stream relayed', { stream: opened.id, client, mode: message.mode });
      void opened.open();
    } catch (error) {
      reservation?.release();
      const e = toServiceError(error);
      report(e);
      ws.close(closeCodeFor(e), e.message.slice(0, 120));
    }
  });

  ws.on('close', () => {
    clearTimeout(startTimer);
    if (stream) {
      deps.ctx.log.info('stream closed', { stream: stream.id, ...stream.stats });
      stream.close();
      deps.ctx.metrics.streamsActive.set(registry.size);
    }
  });
  ws.on('error', (error) => deps.ctx.log.warn('socket error', { error: error.message }));
}
