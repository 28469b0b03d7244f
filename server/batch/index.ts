/**
 * The batch API: AUTOMATIC1111- and OpenAI-compatible image endpoints, persistent async jobs (image
 * batches and videos). Mount `router` at the root behind JSON body parsing and auth; call
 * `jobs.start()` once listening (resumes jobs left by an earlier process) and `jobs.drain()` on SIGTERM.
 * One node keeps jobs and results in its data folder and renders itself; a cluster passes a `backend` that
 * keeps them in Redis and queues the work for its workers (server/cluster/).
 */
import { join } from 'node:path';
import express from 'express';
import type { AppContext } from '../context.ts';
import { defaultFfmpeg, type FfmpegPaths } from '../../pipelines/codecs/ffmpeg.ts';
import { a1111Router } from './a1111.ts';
import { imagesExecutor, videoExecutor } from './jobs/executors.ts';
import { DEFAULT_JOB_OPTIONS, JobManager, type JobManagerOptions, type Jobs } from './jobs/manager.ts';
import { jobsRouter } from './jobs/router.ts';
import type { Executor } from './jobs/run.ts';
import { FileJobStore, type JobRecord } from './jobs/store.ts';
import { openaiRouter } from './openai.ts';
import { localRenderer, RenderTracker, type Renderer } from './render.ts';
import { FileResultStore, type ResultStore } from './results.ts';
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

/** Where jobs, renders and results go: this node (the default) or a cluster. */
export interface BatchBackend {
  readonly jobs: Jobs;
  readonly renderer: Renderer;
  readonly results: ResultStore;
}

/** Makes a backend; `executors` run this node's share of jobs (a cluster worker's). */
export type BatchBackendFactory = (ctx: AppContext, executors: Record<JobRecord['kind'], Executor>, options: JobManagerOptions) => BatchBackend;

export interface BatchOptions extends Partial<JobManagerOptions> {
  /** Finds ffmpeg (default: FFMPEG_PATH, ffmpeg-static, PATH; see server/ffmpeg.ts). */
  readonly ffmpeg?: () => Promise<FfmpegPaths>;
  readonly backend?: BatchBackendFactory;
}

/** The single-node backend: jobs in <dataDir>/jobs, results in <dataDir>/results, renders on this engine. */
export const localBackend: BatchBackendFactory = (ctx, executors, options) => ({
  jobs: new JobManager(new FileJobStore(join(ctx.config.dataDir, 'jobs')), executors, ctx.log.child({ component: 'jobs' }), options),
  renderer: localRenderer(ctx),
  results: new FileResultStore(join(ctx.config.dataDir, 'results'), options.retentionMs),
});

export function createBatchApi(ctx: AppContext, options: BatchOptions = {}): BatchApi {
  const { ffmpeg = defaultFfmpeg, backend = localBackend, ...rest } = options;
  const jobOptions: JobManagerOptions = { ...DEFAULT_JOB_OPTIONS, maxQueued: ctx.config.maxQueuedJobs, maxQueuedPerClient: ctx.config.maxQueuedJobsPerClient, ...rest };
  const tracker = new RenderTracker();
  const { jobs, renderer, results } = backend(ctx, { images: imagesExecutor(ctx), video: videoExecutor(ctx, ffmpeg) }, jobOptions);
  const router = express.Router();
  router.use(a1111Router(ctx, tracker, renderer));
  router.use(openaiRouter(ctx, tracker, results, renderer));
  router.use(jobsRouter(ctx, jobs, ffmpeg));
  const start = async () => {
    await Promise.all([results.prune(), removeStaleUploads(ctx.config)]);
    await jobs.start();
  };
  const drain = () => jobs.drain();
  return { router, manager: jobs, jobs: { start, drain }, start, drain };
}
