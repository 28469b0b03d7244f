/**
 * What the loaded model offers: its APTP experts and its adapters (list and upload). The UI reads these to
 * show budget, expert and adapter controls.
 */
import { Router, raw } from 'express';
import { ServiceError } from '../models/errors.ts';
import type { AppContext } from './context.ts';

export function modelRoutes(ctx: AppContext): Router {
  const router = Router();
  // read per request: a pack's sources can be attached after the routes are made
  const sources = () => ctx.engine.variants;

  router.get('/v1/experts', (_req, res) => {
    const { experts } = sources();
    const list = experts?.experts ?? [{ name: 'full', relativeMacs: 1, parameters: undefined, latencyMs: undefined }];
    res.json({
      experts: list.map((e) => ({ name: e.name, relative_macs: e.relativeMacs, parameters: e.parameters ?? null, latency_ms: e.latencyMs ?? null })),
      router: experts?.router !== undefined,
    });
  });

  router.get('/v1/adapters', async (_req, res) => {
    res.json({ adapters: (await sources().adapters?.list?.()) ?? [] });
  });

  // Upload: the safetensors bytes as the body (application/octet-stream), the name in the query.
  router.post('/v1/adapters', raw({ type: 'application/octet-stream', limit: ctx.config.maxUploadBytes }), async (req, res) => {
    const { adapters } = sources();
    if (!adapters?.add) throw new ServiceError('unsupported', 'this model takes no adapter uploads');
    const name = req.query['name'];
    if (typeof name !== 'string') throw new ServiceError('bad_request', 'name: give the adapter name as ?name=', { field: 'name' });
    if (!Buffer.isBuffer(req.body) || req.body.length === 0) throw new ServiceError('bad_request', 'send the adapter file as the body with Content-Type: application/octet-stream', { field: 'body' });
    res.status(201).json(await adapters.add(name, req.body));
  });

  return router;
}
