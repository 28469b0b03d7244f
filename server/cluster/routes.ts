/**
 * A gateway's HTTP routes for the cluster: GET /v1/cluster (nodes, their load, streams, queue depth), the
 * cluster-wide stream list, and the URLs of a stream (MJPEG, snapshot, push; by id and by name) on every gateway:
 * the gateway that relays the stream serves them from the frames that pass through it; any other gateway forwards
 * the request to that one, so a URL keeps working when the stream moves between workers. A name no stream runs
 * under shows the placeholder of the gateway asked.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import express, { Router } from 'express';
import { ServiceError } from '../../models/errors.ts';
import type { Logger } from '../log.ts';
import type { StreamRegistry } from '../streams/registry.ts';
import { streamRoutes } from '../streams/routes.ts';
import type { NodeInfo } from './nodes.ts';
import type { StreamDirectory } from './stream-directory.ts';

/** Headers that belong to one hop and are not forwarded (RFC 9110 §7.6.1). */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host', 'content-length']);

export interface ClusterView {
  nodes(): Promise<NodeInfo[]>;
  queues(): Promise<Record<string, Record<string, number>>>;
}

export function clusterRoutes(id: string, view: ClusterView, directory: StreamDirectory): Router {
  const router = Router();
  router.get('/v1/cluster', async (_req, res) => {
    const [nodes, streams, assigned, queues] = await Promise.all([view.nodes(), directory.list(), directory.assigned(), view.queues()]);
    res.json({
      node: id,
      nodes: nodes.map((n) => ({ ...n, streams_placed: assigned.get(n.id) ?? 0 })),
      streams,
      queues,
    });
  });
  return router;
}

/** The stream routes of a gateway: its own relayed streams here, other gateways' forwarded to them. */
export function gatewayStreamRoutes(self: { readonly id: string }, relayed: StreamRegistry, directory: StreamDirectory, apiKey: string | undefined, log: Logger): Router {
  const router = Router();
  router.get('/v1/streams', async (_req, res) => {
    const local = new Map(relayed.all().map((s) => [s.id, s]));
    const streams = await directory.list();
    res.json({
      streams: streams.map((e) => {
        const s = local.get(e.id);
        return { ...e, ...(s ? { params: s.params, stats: s.stats } : {}) };
      }),
    });
  });
  const toRelayingGateway = async (id: string, req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (relayed.all().some((s) => s.id === id)) return next();
    const entry = await directory.get(id).catch(() => undefined);
    if (!entry || entry.gateway === self.id) return next(); // not running anywhere: the routes answer 404 (or, by name, the placeholder)
    forward(req, res, entry.gateway_url, apiKey, (error) => {
      log.warn('forwarding to the stream\'s gateway failed', { stream: id, gateway: entry.gateway, error: error.message });
      if (!res.headersSent) next(new ServiceError('unavailable', `the gateway relaying stream ${id} does not answer`));
      else res.end();
    });
  };
  // a named stream's stable URLs (MJPEG, snapshot, WHEP): the gateway relaying the stream of that name, else this
  // one's placeholder (WHEP: 404)
  router.use(['/v1/streams/by-name/:name', '/v1/whep/by-name/:name'], async (req, res, next) => {
    const id = await directory.byName(String(req.params['name'])).catch(() => undefined);
    if (id === undefined) return next();
    await toRelayingGateway(id, req, res, next);
  });
  // a stream's URLs (MJPEG, snapshot, push; WHEP signalling) answered by the gateway that relays it
  router.use(['/v1/streams/:id', '/v1/whep/:id'], async (req, res, next) => {
    const id = String(req.params['id']);
    if (id === 'by-name') return next(); // not a stream id: the routes above
    await toRelayingGateway(id, req, res, next);
  });
  router.use(streamRoutes(relayed, log));
  return router;
}

/** Forwards a request to another node as it came (a JSON body already parsed is sent again, others as they come), streaming the answer. */
function forward(req: express.Request, res: express.Response, base: string, apiKey: string | undefined, onError: (error: Error) => void): void {
  const url = new URL(req.originalUrl, base);
  const headers: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (!HOP_HEADERS.has(name)) headers[name] = value;
  if (apiKey) headers['authorization'] = `Bearer ${apiKey}`;
  const body = req.body !== undefined && req.method !== 'GET' && req.method !== 'HEAD' ? Buffer.from(JSON.stringify(req.body)) : undefined;
  if (body) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(body.length);
  } else if (req.headers['content-length'] !== undefined) {
    headers['content-length'] = req.headers['content-length'];
  }
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const outgoing = send(url, { method: req.method, headers }, (incoming) => {
    res.writeHead(incoming.statusCode ?? 502, incoming.headers);
    res.flushHeaders(); // an MJPEG stream's headers at once, as the gateway that serves it does
    incoming.pipe(res);
  });
  outgoing.on('error', onError);
  res.on('close', () => outgoing.destroy());
  if (body || req.readableEnded) outgoing.end(body);
  else req.pipe(outgoing); // a body no parser read (an SDP offer)
}
