/**
 * Async jobs (Replicate / fal style, REFERENCE §7):
 *   POST   /v1/jobs                      accept an image batch or a video (JSON, or multipart with a `video` file) -> 201 job
 *   GET    /v1/jobs                      a page of jobs, newest first: ?limit= (20, at most 100), ?cursor= (the last
 *                                        page's next_cursor), ?status= filters -> {jobs, next_cursor}
 *   GET    /v1/jobs/:id                  {id, status, progress, eta_seconds, urls, error, notes, ...}
 *   DELETE /v1/jobs/:id                  cancel a queued or running job; a finished one is deleted with its files
 *   GET    /v1/jobs/:id/results/:file    a result file
 */
import { rm } from 'node:fs/promises';
import express from 'express';
import { z } from 'zod';
import { ServiceError } from '../../../models/errors.ts';
import { fitRequest } from '../../../pipelines/plan.ts';
import type { AppContext } from '../../context.ts';
import { asyncHandler } from '../../http-errors.ts';
import type { FfmpegPaths } from '../../../pipelines/codecs/ffmpeg.ts';
import { resolveVideoPath } from '../paths.ts';
import { videoExtension, videoUpload } from '../uploads.ts';
import { decodeBase64Image, parseBody } from '../validate.ts';
import type { Jobs } from './manager.ts';
import { jobView } from './run.ts';
import { coerceFormFields, parseJob, type ImagesJobRequest, type VideoJobRequest } from './schema.ts';
import { FINISHED, JOB_STATUSES, newJobId, isJobId, type JobRecord, type JobStatus } from './store.ts';
import { refuseWhileDraining } from '../../shutdown.ts';

const INIT_IMAGE_FILE = 'input-image.bin';
/** Jobs per page of GET /v1/jobs when ?limit= is not given. */
export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

const listQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(DEFAULT_PAGE_SIZE),
    cursor: z.string().max(200).optional(),
    status: z.enum(JOB_STATUSES).optional(),
  })
  .strict();

/** A page boundary: the last job shown, as created_at and id (the list's order), opaque to clients. */
function cursorOf(record: JobRecord): string {
  return Buffer.from(`${record.created_at}\n${record.id}`).toString('base64url');
}

function afterCursor(cursor: string): (record: JobRecord) => boolean {
  const [createdAt, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('\n');
  if (!createdAt || !id || !isJobId(id)) throw new ServiceError('bad_request', 'cursor: not a cursor this server gave', { field: 'cursor' });
  return (r) => r.created_at < createdAt || (r.created_at === createdAt && r.id < id);
}

function jobId(raw: unknown): string {
  const id = String(raw);
  if (!isJobId(id)) throw new ServiceError('bad_request', `id: "${id.slice(0, 64)}" is not a job id`, { field: 'id' });
  return id;
}

function baseUrl(req: express.Request): string {
  return `${req.protocol}://${req.get('host')}`;
}

export function jobsRouter(ctx: AppContext, jobs: Jobs, ffmpeg: () => Promise<FfmpegPaths>): express.Router {
  const router = express.Router();
  const store = jobs.store;

  router.post(
    '/v1/jobs',
    // before the upload is read: a full queue or a draining server costs nothing
    (req, _res, next) => {
      try {
        refuseWhileDraining(ctx.draining, 'the server is shutting down: no new jobs');
        jobs.admit?.(req.socket.remoteAddress);
        next();
      } catch (error) {
        next(error);
      }
    },
    videoUpload(ctx.config),
    asyncHandler(async (req, res) => {
      const upload = req.file;
      try {
        const client = req.socket.remoteAddress;
        // 1. validate (a multipart form's fields arrive as text; a file means a video job)
        const multipart = typeof req.is('multipart/form-data') === 'string';
        const body = multipart ? coerceFormFields({ kind: 'video', ...(req.body as Record<string, unknown>) }) : req.body;
        const parsed = parseJob(body, ctx.engine.pack.defaults);
        const provider = parsed.kind === 'images' ? parsed.request.provider : parsed.provider;
        // one node runs on its own provider; a cluster queues the job for workers of the one asked for
        if (provider !== undefined && ctx.config.redisUrl === undefined && provider !== ctx.config.provider) {
          throw new ServiceError('bad_request', `provider: this server runs on ${ctx.config.provider}, not ${provider}`, { field: 'provider' });
        }
        const id = newJobId();
        const files = store.files(id);
        const common = {
          version: 1 as const,
          id,
          status: 'starting' as JobStatus,
          created_at: new Date().toISOString(),
          started_at: null,
          completed_at: null,
          progress: 0,
          results: [],
          error: null,
          base_url: baseUrl(req),
          ...(client ? { client } : {}),
          stats: {},
        };
        let record: JobRecord;
        if (parsed.kind === 'images') {
          if (upload) throw new ServiceError('bad_request', 'video: a file upload makes a video job (kind "video")', { field: 'video' });
          const { size, notes } = fitRequest(ctx.engine, parsed.request.params);
          // 2a. an init image is checked now, stored beside the job
          const init = parsed.initImage;
          if (init) await decodeBase64Image(init, size.width, size.height, 'init_image');
          const request: ImagesJobRequest = { ...parsed.request, init_file: init ? INIT_IMAGE_FILE : null };
          if (init) await files.write(INIT_IMAGE_FILE, Buffer.from(init.replace(/^data:[\w/+.-]+;base64,/, ''), 'base64'));
          record = { ...common, kind: 'images', request, webhook: webhookState(parsed.webhook), notes: [...notes] };
        } else {
          // 2b. a video: an upload or an allowed server-side path, and an ffmpeg to read it
          const { notes } = fitRequest(ctx.engine, parsed.params, 'stream');
          if (!!upload === !!parsed.path) {
            throw new ServiceError('bad_request', upload ? 'path: give a file upload or a path, not both' : 'video: upload a file (multipart field "video") or give a path', { field: upload ? 'path' : 'video' });
          }
          // the request's own mistakes (a path outside the video folders: 403) before the server's missing tool
          const path = parsed.path ? await resolveVideoPath(ctx.config.videoDirs, parsed.path) : undefined;
          await ffmpeg(); // 503 ffmpeg_missing now rather than a failed job later
          let source: VideoJobRequest['source'];
          if (path) {
            source = { path };
          } else {
            const name = `input.${videoExtension(upload!.originalname)}`;
            await files.move(name, upload!.path);
            source = { upload: name };
          }
          record = { ...common, kind: 'video', request: { params: parsed.params, source, ...(provider ? { provider } : {}) }, webhook: webhookState(parsed.webhook), notes: [...notes] };
        }
        // 3. persisted before it is acknowledged
        await jobs.submit(record, req.socket.remoteAddress ?? 'unknown').catch(async (error: unknown) => {
          await store.remove(id);
          throw error;
        });
        res.status(201).location(`/v1/jobs/${id}`).json(jobView(record, baseUrl(req)));
      } finally {
        if (upload) await rm(upload.path, { force: true });
      }
    }),
  );

  router.get('/v1/jobs', async (req, res) => {
    const query = parseBody(listQuery, { ...req.query });
    const after = query.cursor === undefined ? () => true : afterCursor(query.cursor);
    const matching = (await jobs.list()).filter((r) => (query.status === undefined || r.status === query.status) && after(r));
    const page = matching.slice(0, query.limit);
    const more = matching.length > page.length;
    res.json({ jobs: page.map((r) => jobView(r, baseUrl(req))), next_cursor: more ? cursorOf(page.at(-1)!) : null });
  });

  router.get('/v1/jobs/:id', async (req, res) => {
    res.json(jobView(await jobs.get(jobId(req.params['id'])), baseUrl(req)));
  });

  router.delete('/v1/jobs/:id', async (req, res) => {
    const id = jobId(req.params['id']);
    // a queued or running job is canceled (and kept); a finished one is deleted with its files
    if (!FINISHED.includes((await jobs.get(id)).status)) res.json(jobView(await jobs.cancel(id), baseUrl(req)));
    else res.json({ ...jobView(await jobs.remove(id), baseUrl(req)), urls: [], deleted: true });
  });

  router.get('/v1/jobs/:id/results/:file', async (req, res, next) => {
    const record = await jobs.get(jobId(req.params['id']));
    const file = String(req.params['file']);
    if (!record.results.includes(file)) throw new ServiceError('not_found', `job ${record.id} has no result ${file}`, { field: 'file' });
    const found = await store.files(record.id).locate(file);
    if ('path' in found) res.sendFile(found.path, (error) => error && next(error));
    else res.type(file.slice(file.lastIndexOf('.'))).send(found.bytes);
  });

  return router;
}

function webhookState(url: string | undefined): JobRecord['webhook'] {
  return url ? { url, status: 'pending', attempts: 0, last_error: null } : null;
}
