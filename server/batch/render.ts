/**
 * Whole-image renders for the batch endpoints: txt2img / img2img through the server's cross-stream UNet
 * batcher (ctx.runners), counted per endpoint, with step-level progress that /sdapi/v1/progress reports.
 * The endpoints ask a Renderer: this node's engine (localRenderer), or a cluster's workers (cluster-renders.ts).
 */
import { encodeImage, type OutputFormat } from '../../pipelines/codecs/image.ts';
import { render, DEFAULT_LANES, type GeneratedImage } from '../../pipelines/generate.ts';
import { writeInfotext } from '../../pipelines/infotext.ts';
import type { UnetRunner } from '../../pipelines/denoise-step.ts';
import type { GenerationParams } from '../../pipelines/params.ts';
import type { Mode, Plan } from '../../pipelines/plan.ts';
import type { UnetVariant } from '../../pipelines/variants.ts';
import { ServiceError } from '../../models/errors.ts';
import type { AppContext } from '../context.ts';

export interface RenderRequest {
  /** Built once per request by ctx.plan (the server's batcher runs its UNet calls). */
  readonly plan: Plan;
  readonly count: number;
  /** Endpoint label for the images metric. */
  readonly endpoint: string;
  /** img2img inputs [3, H, W] at the plan's size; image j starts from inits[j % inits.length]. */
  readonly inits?: readonly Float32Array[];
  readonly lanes?: number;
  /** Index of the first image in its request (seeds continue from seed + firstIndex). */
  readonly firstIndex?: number;
  readonly signal?: AbortSignal;
  /** After each UNet call: steps done, steps in all. */
  readonly onStep?: (done: number, total: number) => void;
}

/** A UNet runner that reports each finished call and stops before the next one once `signal` is aborted. */
export function countingRunner(runner: UnetRunner, onCall: () => void, signal?: AbortSignal): UnetRunner {
  return async (rows) => {
    signal?.throwIfAborted();
    const eps = await runner(rows);
    onCall();
    return eps;
  };
}

/** Renders `count` images (image j with seed + firstIndex + j) and counts them in the images metric. */
export async function renderImages(ctx: AppContext, request: RenderRequest): Promise<GeneratedImage[]> {
  const { plan, count, inits } = request;
  if (inits && inits.length === 0) throw new ServiceError('bad_request', 'no input image', { field: 'image' });
  const lanes = Math.max(1, Math.min(request.lanes ?? DEFAULT_LANES, count));
  const total = Math.ceil(count / lanes) * plan.coefficients.timesteps.length;
  let done = 0;
  const counted = { ...plan, runner: countingRunner(plan.runner, () => request.onStep?.(++done, total), request.signal) };
  const images = await render(ctx.engine, counted, count, {
    lanesPerCall: lanes,
    ...(inits ? { inits } : {}),
    ...(request.firstIndex !== undefined ? { firstIndex: request.firstIndex } : {}),
    ...(request.signal ? { signal: request.signal } : {}),
  });
  ctx.metrics.images.inc({ endpoint: request.endpoint }, images.length);
  return images;
}

/**
 * An interactive render as an endpoint asks for it: planned here (sizes, infotext), and the parameters and mode
 * the plan was made from (a cluster worker plans them again: the same plan, on its own engine).
 */
export interface ImagesRequest extends RenderRequest {
  readonly params: GenerationParams;
  readonly mode: Mode;
}

/** What an image tells of the UNet that made it (infotext, A1111's info): plain data a cluster worker can send. */
export type VariantInfo = Pick<UnetVariant, 'expert' | 'relativeMacs' | 'adapters'>;

/** A rendered image: [3, H, W] in [-1, 1], the seed and index it was drawn with, and its UNet. */
export type RenderedImage = Pick<GeneratedImage, 'data' | 'width' | 'height' | 'seed' | 'index'> & { readonly variant: VariantInfo };

export interface Renderer {
  render(request: ImagesRequest): Promise<RenderedImage[]>;
}

/** Renders on this node, on the request's plan. */
export function localRenderer(ctx: AppContext): Renderer {
  return {
    render: ({ params: _params, mode: _mode, ...request }) => renderImages(ctx, request),
  };
}

/** An image's bytes with its generation parameters written in (a PNG text chunk; XMP and EXIF in JPEG and WebP). */
export function encodeResult(ctx: AppContext, plan: Plan, image: RenderedImage, format: OutputFormat, quality?: number): Promise<Buffer> {
  return encodeImage(image.data, image.width, image.height, format, quality, writeInfotext(plan, image, ctx.engine.pack.name));
}

interface Active {
  readonly started: number;
  done: number;
  total: number;
}

export interface ProgressSnapshot {
  readonly progress: number;
  readonly eta_relative: number;
  readonly job_count: number;
  readonly sampling_step: number;
  readonly sampling_steps: number;
  readonly job_timestamp: string;
}

/** Synchronous renders in progress (A1111's /progress shows the oldest; job_count counts them all). */
export class RenderTracker {
  private readonly active = new Set<Active>();

  /** Registers a render; call step(done, total) as it goes and end() when it is over (success or not). */
  begin(): { step: (done: number, total: number) => void; end: () => void } {
    const entry: Active = { started: Date.now(), done: 0, total: 0 };
    this.active.add(entry);
    return {
      step: (done, total) => {
        entry.done = done;
        entry.total = total;
      },
      end: () => this.active.delete(entry),
    };
  }

  snapshot(now = Date.now()): ProgressSnapshot {
    const oldest = [...this.active].sort((a, b) => a.started - b.started)[0];
    if (!oldest) return { progress: 0, eta_relative: 0, job_count: 0, sampling_step: 0, sampling_steps: 0, job_timestamp: '0' };
    const progress = oldest.total > 0 ? oldest.done / oldest.total : 0;
    const elapsed = (now - oldest.started) / 1000;
    return {
      progress,
      eta_relative: progress > 0 ? (elapsed / progress) * (1 - progress) : 0,
      job_count: this.active.size,
      sampling_step: oldest.done,
      sampling_steps: oldest.total,
      job_timestamp: timestamp(new Date(oldest.started)),
    };
  }
}

/** A1111's job timestamp: YYYYMMDDHHMMSS. */
export function timestamp(date: Date): string {
  return date.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/** An AbortSignal that fires when the client goes away before the response is sent. */
export function clientGone(res: { on(event: 'close', fn: () => void): unknown; writableFinished: boolean }): AbortSignal {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) controller.abort(new ServiceError('unavailable', 'client closed the connection'));
  });
  return controller.signal;
}

/** A render's signal: the client went away, or the server's shutdown grace period is over (answered 503). */
export function requestSignal(ctx: AppContext, res: Parameters<typeof clientGone>[0]): AbortSignal {
  return AbortSignal.any([clientGone(res), ctx.shutdown]);
}
