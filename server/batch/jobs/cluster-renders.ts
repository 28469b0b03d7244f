/**
 * Interactive renders (A1111 txt2img/img2img, OpenAI generations/edits) in a cluster: the API node queues the
 * request on BullMQ's render queue of its pack - a queue of its own, so these never wait behind a batch job -
 * and waits for it; a worker renders it (through its UNet batcher, beside whatever batch job it runs) and
 * leaves the images in Redis for a minute. Progress reaches /sdapi/v1/progress through BullMQ's events; a
 * client that goes away cancels the render, wherever it runs. A worker that dies mid-render stops renewing
 * its lock and another worker renders it again.
 *
 * Images cross as raw RGB bytes, exactly what encoding reads: the API node encodes the same bytes a single
 * node would (byte-identical PNG, JPEG and WebP).
 */
import { randomUUID } from 'node:crypto';
import { Queue, QueueEvents, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { ServiceError } from '../../../models/errors.ts';
import { rgb8ToTensor, tensorToRgb8 } from '../../../pipelines/codecs/image.ts';
import type { GenerationParams } from '../../../pipelines/params.ts';
import type { Mode, Plan } from '../../../pipelines/plan.ts';
import { KEYS } from '../../cluster/redis.ts';
import type { Logger } from '../../log.ts';
import type { Renderer, RenderedImage, ImagesRequest } from '../render.ts';
import { errorReason, queueName, reasonError, workerOptions, type BullSettings, type CancelChannel } from './bull.ts';

/** Rendered images wait this long in Redis for their API node, ms. */
const IMAGE_TTL_MS = 60_000;
/** Finished render jobs stay in BullMQ this long (s) for a late waiter; the images are what matters. */
const KEEP_FINISHED_S = 60;
/** Renders a worker runs at once (they share its UNet through the batcher). */
const RENDER_CONCURRENCY = 2;
/** Progress events at most this often per render, ms (each is a Redis write). */
const PROGRESS_EVERY_MS = 100;

interface RenderData {
  readonly params: GenerationParams;
  readonly mode: Mode;
  readonly count: number;
  readonly lanes: number | undefined;
  readonly endpoint: string;
  /** img2img inputs as raw RGB (base64) at the render's size. */
  readonly inits: { readonly rgb: string; readonly width: number; readonly height: number }[] | undefined;
}

interface RenderResult {
  readonly images: Omit<RenderedImage, 'data'>[];
}

interface Progress {
  readonly done: number;
  readonly total: number;
}

export interface ClusterRendersOptions extends BullSettings {
  readonly redis: Redis;
  /** A connection for BullMQ's event reader (it blocks). */
  readonly eventsConnection: Redis;
  readonly cancels: CancelChannel;
  readonly pack: string;
  /** A worker's plan of a render's parameters (the API node planned the same for its answer). */
  readonly plan: (params: GenerationParams, mode: Mode) => Promise<Plan>;
  /** Whether a live worker serves this pack: without one a render fails at once instead of waiting. */
  readonly hasWorker: () => Promise<boolean>;
  readonly log: Logger;
}

export class ClusterRenders implements Renderer {
  private readonly queue: Queue<RenderData, RenderResult>;
  private readonly events: QueueEvents;
  private readonly listeners = new Map<string, (p: Progress) => void>();
  private worker: Worker<RenderData, RenderResult> | undefined;
  private stopListening: (() => void) | undefined;
  /** Renders this node is running. */
  active = 0;

  constructor(private readonly options: ClusterRendersOptions) {
    const name = queueName('renders', options.pack);
    this.queue = new Queue(name, { connection: options.connection });
    this.events = new QueueEvents(name, { connection: options.eventsConnection });
    this.events.on('progress', ({ jobId, data }) => this.listeners.get(jobId)?.(data as Progress));
  }

  async render(request: ImagesRequest): Promise<RenderedImage[]> {
    const { redis, pack } = this.options;
    if (!(await this.options.hasWorker())) throw new ServiceError('unavailable', `no worker of the cluster serves the model ${pack} now; try again later`);
    await this.events.waitUntilReady();
    // 1. queue it
    const data: RenderData = {
      params: request.params,
      mode: request.mode,
      count: request.count,
      lanes: request.lanes,
      endpoint: request.endpoint,
      inits: request.inits?.map((t) => {
        const { width, height } = request.plan.size;
        return { rgb: tensorToRgb8(t, width, height).toString('base64'), width, height };
      }),
    };
    const id = randomUUID();
    if (request.onStep) {
      const onStep = request.onStep;
      this.listeners.set(id, (p) => onStep(p.done, p.total));
    }
    const job = await this.queue.add('render', data, { jobId: id, removeOnComplete: { age: KEEP_FINISHED_S }, removeOnFail: { age: KEEP_FINISHED_S } });
    const abort = () => void this.abort(job);
    request.signal?.addEventListener('abort', abort, { once: true });
    // 2. wait for a worker to render it
    let result: RenderResult;
    try {
      result = await job.waitUntilFinished(this.events);
    } catch (error) {
      request.signal?.throwIfAborted();
      throw reasonError(error instanceof Error ? error.message : String(error));
    } finally {
      request.signal?.removeEventListener('abort', abort);
      this.listeners.delete(id);
    }
    // 3. fetch its images
    const keys = result.images.map((_, i) => KEYS.renderImage(id, i));
    const bytes = keys.length > 0 ? await redis.mgetBuffer(keys) : [];
    if (keys.length > 0) await redis.del(...keys);
    return result.images.map((image, i) => {
      const rgb = bytes[i];
      if (!rgb) throw new ServiceError('unavailable', `image ${i} of render ${id} expired before it was read`);
      return { ...image, data: rgb8ToTensor(rgb, image.width, image.height) };
    });
  }

  /** Takes renders of this node's pack (a worker). */
  startWorker(local: Renderer): void {
    this.worker = new Worker<RenderData, RenderResult>(queueName('renders', this.options.pack), (job, _token, signal) => this.process(local, job, signal), workerOptions(this.options, RENDER_CONCURRENCY));
    this.stopListening = this.options.cancels.listen((id) => this.worker?.cancelJob(id, 'cancel'));
  }

  /** Renders waiting and running, by queue (GET /v1/cluster, metrics). */
  async counts(): Promise<Record<string, Record<string, number>>> {
    return { [this.queue.name]: await this.queue.getJobCounts('waiting', 'prioritized', 'active') };
  }

  async close(): Promise<void> {
    this.stopListening?.();
    await this.worker?.close();
    await Promise.all([this.queue.close(), this.events.close()]);
  }

  private async abort(job: Job<RenderData, RenderResult>): Promise<void> {
    // a waiting render is removed; a running one is stopped by its worker
    if (!(await job.remove().then(() => true, () => false))) await this.options.cancels.cancel(job.id!);
  }

  private async process(local: Renderer, job: Job<RenderData, RenderResult>, signal: AbortSignal | undefined): Promise<RenderResult> {
    const d = job.data;
    this.active++;
    let last = 0;
    try {
      const images = await local.render({
        params: d.params,
        mode: d.mode,
        plan: await this.options.plan(d.params, d.mode),
        count: d.count,
        endpoint: d.endpoint,
        ...(d.lanes !== undefined ? { lanes: d.lanes } : {}),
        ...(d.inits ? { inits: d.inits.map((i) => rgb8ToTensor(Buffer.from(i.rgb, 'base64'), i.width, i.height)) } : {}),
        ...(signal ? { signal } : {}),
        onStep: (done, total) => {
          if (done < total && performance.now() - last < PROGRESS_EVERY_MS) return;
          last = performance.now();
          void job.updateProgress({ done, total }).catch(() => undefined);
        },
      });
      const tx = this.options.redis.multi();
      images.forEach((image, i) => tx.set(KEYS.renderImage(job.id!, i), tensorToRgb8(image.data, image.width, image.height), 'PX', IMAGE_TTL_MS));
      await tx.exec();
      return { images: images.map(({ seed, width, height, index, variant }) => ({ seed, width, height, index, variant: { expert: variant.expert, relativeMacs: variant.relativeMacs, adapters: variant.adapters } })) };
    } catch (error) {
      throw errorReason(error);
    } finally {
      this.active--;
    }
  }
}
