/**
 * The batch API: AUTOMATIC1111- and OpenAI-compatible image endpoints, persistent async jobs (image
 * batches and videos). Mount `router` at the root behind JSON body parsing and auth; call
 * `jobs.start()` once listening (resumes jobs left by an earlier process) and `jobs.drain()` on SIGTERM.
 */
import { join } from 'node:path';
import express from 'express';
import type { AppContext } from '../context.ts';
import { defaultFfmpeg, type FfmpegPaths } from '../../pipelines/codecs/ffmpeg.ts';
import { a1111Router } from './a1111.ts';
import { imagesExecutor, videoExecutor } from './jobs/executors.ts';
import { DEFAULT_JOB_OPTIONS, JobManager, type JobManagerOptions, type Jobs } from './jobs/manager.ts';
import { jobsRouter } from './jobs/router.ts';
import { FileJobStore } from './jobs/store.ts';
import { openaiRouter } from './openai.ts';
import { RenderTracker } from './render.ts';
import { ResultStore } from './results.ts';
import { removeStaleUploads } from './uploads.ts';

export interface BatchApi {
  readonly router: express.Router;
  readonly jobs: {
    /** Loads <dataDir>/jobs, deletes what is past retention, resumes queued and interrupted jobs. */
    start(): Promise<void>;
    /** No new jobs; a running job is interrupted and left queued on disk for the next start. */
    drain(): Promise<void>;
  };
  /** The job queue itself (tests, the bench). */
  readonly manager: Jobs;
  /** jobs.start / jobs.drain again, so the API is also a ServerExtension of server/app.ts as it is. */
  readonly start: () => Promise<void>;
  readonly drain: () => Promise<void>;
}

export interface BatchOptions extends Partial<JobManagerOptions> {
  /** Finds ffmpeg (default: FFMPEG_PATH, ffmpeg-static, PATH; see server/ffmpeg.ts). */
  readonly ffmpeg?: () => Promise<FfmpegPaths>;
}

export function createBatchApi(ctx: AppContext, options: BatchOptions = {}): BatchApi {
  const { ffmpeg = defaultFfmpeg, ...rest } = options;
  const jobOptions: JobManagerOptions = { ...DEFAULT_JOB_OPTIONS, ...rest };
  const tracker = new RenderTracker();
  const results = new ResultStore(join(ctx.config.dataDir, 'results'), jobOptions.retentionMs);
  const store = new FileJobStore(join(ctx.config.dataDir, 'jobs'));
  const manager = new JobManager(store, { images: imagesExecutor(ctx), video: videoExecutor(ctx, ffmpeg) }, ctx.log.child({ component: 'jobs' }), jobOptions);
  const router = express.Router();
  router.use(a1111Router(ctx, tracker));
  router.use(openaiRouter(ctx, tracker, results));
  router.use(jobsRouter(ctx, manager, ffmpeg));
  const start = async () => {
    await Promise.all([results.prune(), removeStaleUploads(ctx.config)]);
    await manager.start();
  };
  const drain = () => manager.drain();
  return { router, manager, jobs: { start, drain }, start, drain };
}
