/**
 * WHIP (RFC 9725) and WHEP signalling. A publisher POSTs an SDP offer and gets 201 with the answer and a
 * `Location` (its resource: DELETE ends the stream, PATCH trickles ICE candidates); a viewer does the same
 * on a stream's WHEP URL. Stream parameters come with the WHIP request (query string, or an `X-Stream-Params`
 * JSON header) or from a prior `POST /v1/streams`, which returns the stream's WHIP and WHEP URLs. The API's
 * access rules apply through the app's middleware (Host allow-list, Origin of state-changing requests, rate
 * limits, the key: Bearer header; ?token= is for WebSocket, MJPEG and result URLs only); origins again here.
 */
import express, { Router, type Request, type Response } from 'express';
import { ServiceError } from '../../models/errors.ts';
import { isRecord } from '../../models/files.ts';
import { originAllowed } from '../request-guards.ts';
import { coerceFormFields } from '../batch/jobs/schema.ts';
import type { AppContext } from '../context.ts';
import { STREAM_NAME, STREAM_NAME_RULE } from '../streams/protocol.ts';
import type { LiveStream, StreamRegistry } from '../streams/registry.ts';
import type { StreamSession } from '../streams/session.ts';
import { whepPath } from './control.ts';
import { StreamEgress } from './egress.ts';
import { MAX_SDP_BYTES } from './peer.ts';
import { WebrtcStreams } from './streams.ts';

const SDP = 'application/sdp';
const SDP_FRAGMENT = 'application/trickle-ice-sdpfrag';
/** Query keys that are not stream parameters: the API key, and the stream's name (stable output URLs). */
const RESERVED_QUERY = new Set(['token', 'name']);

/** Query values are strings: numbers, booleans and JSON are read as JSON, prompts stay text (as form fields are). */
export function paramsFromQuery(query: URLSearchParams): Record<string, unknown> {
  return coerceFormFields(Object.fromEntries([...query].filter(([key]) => !RESERVED_QUERY.has(key))));
}

function headerParams(req: Request): Record<string, unknown> | undefined {
  const header = req.get('x-stream-params');
  if (header === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(header);
  } catch {
    throw new ServiceError('bad_request', 'X-Stream-Params must be a JSON object of stream parameters', { field: 'X-Stream-Params' });
  }
  if (!isRecord(json)) throw new ServiceError('bad_request', 'X-Stream-Params must be a JSON object of stream parameters', { field: 'X-Stream-Params' });
  return json;
}

function sdpBody(req: Request, type: string): string {
  if (!req.is(type)) throw new ServiceError('bad_request', `the body must be ${type}`);
  if (typeof req.body !== 'string' || req.body.length === 0) throw new ServiceError('bad_request', `the body must be a non-empty ${type}`);
  return req.body;
}

function checkOrigin(ctx: AppContext, req: Request): void {
  if (!originAllowed(ctx.config, req)) throw new ServiceError('forbidden', `origin ${req.get('origin') ?? ''} is not allowed`);
}

function created(res: Response, location: string, answer: string, streamId: string): void {
  res.status(201).set({ Location: location, 'Content-Type': SDP, 'X-Stream-Id': streamId, 'Cache-Control': 'no-store' }).send(answer);
}

/**
 * The stream running under a name. A WHEP viewer is a connection to one stream: when the stream stops, the
 * viewer's track ends, and a player reconnects to the same URL for the next stream of that name.
 */
function runningByName(registry: StreamRegistry, name: string): LiveStream {
  if (!STREAM_NAME.test(name)) throw new ServiceError('bad_request', `stream name ${STREAM_NAME_RULE}`, { field: 'name' });
  const session = registry.names.running(name);
  if (!session) throw new ServiceError('not_found', `no stream named "${name}" is running (a WHEP player reconnects when it starts)`);
  return session;
}

export interface WebrtcRoutes {
  readonly router: Router;
  readonly streams: WebrtcStreams;
  /** Ends every WebRTC stream and viewer (server shutdown). */
  close(): Promise<void>;
}

/**
 * `whip: false` (a cluster gateway): no WebRTC ingest - its session would render where it lands, on the gateway,
 * outside the cluster's placement and failover; WHEP still plays every stream of `registry`.
 */
export function webrtcRoutes(ctx: AppContext, registry: StreamRegistry, options: { readonly whip?: boolean } = {}): WebrtcRoutes {
  const router = Router();
  const ingest = () => {
    if (options.whip === false) throw new ServiceError('unsupported', 'WebRTC ingest (WHIP) is not available on a cluster gateway: stream over the WebSocket /v1/stream, which the gateway places on a worker; WHEP plays every stream');
  };
  const streams = new WebrtcStreams(ctx, registry);
  const text = express.text({ type: [SDP, SDP_FRAGMENT], limit: MAX_SDP_BYTES });
  const client = (req: Request) => req.socket.remoteAddress ?? 'unknown';
  const urls = (session: StreamSession) => ({ whip_url: `/v1/whip/${session.id}`, whep_url: whepPath(session), mjpeg_url: session.outputPaths.mjpeg_url });

  // A stream made ahead of its publisher: {"params": {...}, "output": {...}} -> its WHIP and WHEP URLs.
  router.post('/v1/streams', async (req, res) => {
    checkOrigin(ctx, req);
    ingest();
    const body: unknown = req.body ?? {};
    if (!isRecord(body)) throw new ServiceError('bad_request', 'the body must be a JSON object {"params": {...}}');
    const stream = await streams.open(client(req), body);
    const { width, height } = stream.session.size;
    res.status(201).json({ stream_id: stream.session.id, params: stream.session.params, width, height, ...urls(stream.session) });
  });

  // WHIP: a new stream from this offer, parameters from the query string or X-Stream-Params.
  router.post('/v1/whip', text, async (req, res) => {
    checkOrigin(ctx, req);
    ingest();
    const offer = sdpBody(req, SDP);
    const query = new URL(req.originalUrl, 'http://localhost').searchParams;
    const params = { ...paramsFromQuery(query), ...headerParams(req) };
    const name = req.get('x-stream-name') ?? query.get('name') ?? undefined;
    const stream = await streams.open(client(req), { params, ...(name === undefined ? {} : { name }) });
    const id = stream.session.id;
    try {
      created(res, `/v1/whip/${id}`, await streams.publish(id, offer), id);
    } catch (error) {
      streams.end(id);
      throw error;
    }
  });

  // WHIP onto a stream made by POST /v1/streams.
  router.post('/v1/whip/:id', text, async (req, res) => {
    checkOrigin(ctx, req);
    ingest();
    const offer = sdpBody(req, SDP);
    const id = streams.get(req.params['id']!).session.id;
    created(res, `/v1/whip/${id}`, await streams.publish(id, offer), id);
  });

  router.patch('/v1/whip/:id', text, async (req, res) => {
    checkOrigin(ctx, req);
    const publisher = streams.get(req.params['id']!).publisher;
    if (!publisher) throw new ServiceError('conflict', 'this stream has no publisher yet');
    await publisher.addCandidates(sdpBody(req, SDP_FRAGMENT));
    res.status(204).end();
  });

  router.delete('/v1/whip/:id', (req, res) => {
    checkOrigin(ctx, req);
    if (!streams.end(req.params['id']!)) throw new ServiceError('not_found', `no WebRTC stream ${req.params['id']}`);
    res.status(200).end();
  });

  // WHEP: any stream (WebRTC or WebSocket) by id, or by name while a stream of that name runs, to any number of viewers.
  const play = async (req: Request, res: Response, session: LiveStream) => {
    checkOrigin(ctx, req);
    const offer = sdpBody(req, SDP);
    const egress = await StreamEgress.of(ctx, session);
    const { id, answer } = await egress.addViewer(offer);
    created(res, `/v1/whep/${session.id}/${id}`, answer, session.id);
  };
  router.post('/v1/whep/by-name/:name', text, (req, res) => play(req, res, runningByName(registry, req.params['name']!)));
  router.post('/v1/whep/:stream', text, (req, res) => play(req, res, registry.get(req.params['stream']!)));

  router.patch('/v1/whep/:stream/:viewer', text, async (req, res) => {
    checkOrigin(ctx, req);
    const egress = await StreamEgress.of(ctx, registry.get(req.params['stream']!));
    await egress.addCandidates(req.params['viewer']!, sdpBody(req, SDP_FRAGMENT));
    res.status(204).end();
  });

  router.delete('/v1/whep/:stream/:viewer', async (req, res) => {
    checkOrigin(ctx, req);
    const egress = await StreamEgress.of(ctx, registry.get(req.params['stream']!));
    if (!(await egress.removeViewer(req.params['viewer']!))) throw new ServiceError('not_found', `no viewer ${req.params['viewer']}`);
    res.status(200).end();
  });

  return { router, streams, close: () => streams.closeAll() };
}
