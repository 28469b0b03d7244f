// @ts-check
/**
 * Render backends of the render page, best first:
 * - the async job API (POST /v1/jobs, poll GET /v1/jobs/:id, DELETE to cancel): images as they are written,
 *   progress with an ETA, videos;
 * - AUTOMATIC1111's POST /sdapi/v1/txt2img|img2img, with GET /sdapi/v1/progress polled meanwhile (images only).
 * A server with neither says so in words instead of failing obscurely.
 */
import { ApiError, apiFetch, apiJson } from './api.js';

const POLL_MS = 400;
/** A1111's batch_size limit on this server (server/batch/a1111.ts). */
const A1111_MAX_BATCH = 16;
const FINISHED = ['succeeded', 'failed', 'canceled'];

/**
 * @typedef {Record<string, unknown>} Params
 * @typedef {{
 *   started?(job: { id: string | null, notes: string[] }): void,
 *   progress(fraction: number, text: string): void,
 *   result(blob: Blob, params: Params, index: number): void,
 * }} JobHandlers
 * @typedef {{ cancel(): void, done: Promise<void> }} RunningJob
 */

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Image j of a batch used seed + j: its own settings, to render it again alone.
 * @param {Params} params
 * @param {number} j
 * @returns {Params}
 */
export function imageParams(params, j) {
  const seed = params['seed'];
  /** @param {number} s */
  const shift = (s) => (s + j) % 2 ** 32;
  if (typeof seed === 'number') return { ...params, seed: shift(seed) };
  if (Array.isArray(seed)) return { ...params, seed: seed.map((s) => ({ ...s, seed: shift(s.seed) })) };
  return params;
}

/**
 * Follows a job until it finishes, handing over each new result as soon as it is listed.
 * @param {any} job the job as POST /v1/jobs answered it
 * @param {JobHandlers} handlers
 * @param {AbortSignal} signal
 */
async function followJob(job, handlers, signal) {
  handlers.started?.({ id: job.id, notes: Array.isArray(job.notes) ? job.notes : [] });
  let delivered = 0;
  for (;;) {
    const urls = Array.isArray(job.urls) ? job.urls : [];
    for (; delivered < urls.length; delivered++) {
      const blob = await (await apiFetch(urls[delivered])).blob();
      handlers.result(blob, imageParams(job.request?.params ?? {}, delivered), delivered);
    }
    const eta = typeof job.eta_seconds === 'number' ? ` · about ${Math.ceil(job.eta_seconds)} s left` : '';
    handlers.progress(job.progress ?? 0, `${job.status}${eta}`);
    if (FINISHED.includes(job.status)) break;
    await sleep(POLL_MS);
    if (signal.aborted) {
      job = await apiJson(`/v1/jobs/${job.id}`, undefined, 'DELETE').catch(() => job);
      throw new Error('canceled');
    }
    job = await apiJson(`/v1/jobs/${job.id}`);
  }
  if (job.status === 'failed') throw new ApiError(job.error?.code ?? 'failed', job.error?.message ?? 'the job failed', 500);
  if (job.status === 'canceled') throw new Error('canceled');
}

/**
 * @param {(signal: AbortSignal) => Promise<void>} run
 * @returns {RunningJob}
 */
function running(run) {
  const controller = new AbortController();
  return { cancel: () => controller.abort(), done: run(controller.signal) };
}

/**
 * Renders `count` images (img2img when `initImage`, a data: URL, is given).
 * @param {{ params: Params, count: number, initImage?: string }} request
 * @param {JobHandlers} handlers
 * @returns {RunningJob}
 */
export function renderImages(request, handlers) {
  return running(async (signal) => {
    const { params, count, initImage } = request;
    let job;
    try {
      job = await apiJson('/v1/jobs', { kind: 'images', count, output_format: 'png', ...params, ...(initImage ? { init_image: initImage } : {}) });
    } catch (e) {
      if (!(e instanceof ApiError && e.routeMissing)) throw e;
      return renderA1111(request, handlers, signal);
    }
    await followJob(job, handlers, signal);
  });
}

/**
 * The AUTOMATIC1111 fallback: one blocking request, progress polled beside it.
 * @param {{ params: Params, count: number, initImage?: string }} request
 * @param {JobHandlers} handlers
 * @param {AbortSignal} signal
 */
async function renderA1111({ params, count, initImage }, handlers, signal) {
  if (count > A1111_MAX_BATCH) throw new Error(`at most ${A1111_MAX_BATCH} images at once on this server (it has no job API)`);
  const body = {
    prompt: typeof params['prompt'] === 'string' ? params['prompt'] : '',
    negative_prompt: params['negative_prompt'] ?? '',
    seed: params['seed'] ?? -1,
    steps: params['steps'],
    width: params['width'],
    height: params['height'],
    batch_size: count,
    // A1111's cfg_scale means full classifier-free guidance here
    ...(params['guidance'] === 'full' ? { cfg_scale: params['guidance_scale'] } : {}),
    ...(initImage ? { init_images: [initImage], denoising_strength: params['strength'] } : {}),
  };
  let pending = true;
  const poll = (async () => {
    while (pending) {
      await sleep(POLL_MS);
      // null: the server has no progress endpoint (stop asking); undefined: this poll failed
      const p = await apiJson('/sdapi/v1/progress').catch((e) => (e instanceof ApiError && e.routeMissing ? null : undefined));
      if (p === null) return;
      if (pending && p) handlers.progress(p.progress ?? 0, p.state?.sampling_steps ? `step ${p.state.sampling_step} of ${p.state.sampling_steps}` : 'rendering');
    }
  })();
  let answer;
  try {
    answer = await apiFetch(`/sdapi/v1/${initImage ? 'img2img' : 'txt2img'}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal,
    }).then((r) => r.json());
  } catch (e) {
    if (e instanceof ApiError && e.routeMissing) throw new Error('this server has no render API (neither POST /v1/jobs nor POST /sdapi/v1/txt2img)');
    if (signal.aborted) throw new Error('canceled');
    throw e;
  } finally {
    pending = false;
    await poll;
  }
  const info = typeof answer.info === 'string' ? JSON.parse(answer.info) : {};
  handlers.started?.({ id: null, notes: Array.isArray(info.notes) ? info.notes : [] });
  const images = Array.isArray(answer.images) ? answer.images : [];
  for (const [j, b64] of images.entries()) {
    const blob = await (await fetch(`data:image/png;base64,${b64}`)).blob();
    const seed = info.all_seeds?.[j] ?? params['seed'];
    handlers.result(blob, { ...params, seed, steps: info.steps ?? params['steps'], width: info.width, height: info.height }, j);
  }
  handlers.progress(1, 'succeeded');
}

/**
 * Renders a video file through the job API (multipart upload).
 * @param {{ params: Params, file: File }} request
 * @param {JobHandlers} handlers
 * @returns {RunningJob}
 */
export function renderVideo({ params, file }, handlers) {
  return running(async (signal) => {
    const form = new FormData();
    form.set('kind', 'video');
    for (const [key, value] of Object.entries(params)) form.set(key, typeof value === 'string' ? value : JSON.stringify(value));
    form.set('video', file, file.name);
    let job;
    try {
      job = await apiJson('/v1/jobs', form);
    } catch (e) {
      if (e instanceof ApiError && e.routeMissing) throw new Error('video rendering needs the job API (POST /v1/jobs), which this server does not have');
      throw e;
    }
    await followJob(job, handlers, signal);
  });
}

/** Jobs per page of the gallery's listing. */
export const PAGE_SIZE = 10;

/**
 * A page of the server's jobs, newest first; null when the server has no job API.
 * @param {string | null} cursor the previous page's next_cursor
 * @returns {Promise<{ jobs: any[], next_cursor: string | null } | null>}
 */
export async function listJobs(cursor) {
  try {
    return await apiJson(`/v1/jobs?limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
  } catch (e) {
    if (e instanceof ApiError && e.routeMissing) return null;
    throw e;
  }
}

/**
 * Deletes a finished job with its files (DELETE on a queued or running job cancels it instead).
 * @param {string} id
 */
export function deleteJob(id) {
  return apiJson(`/v1/jobs/${id}`, undefined, 'DELETE');
}

/**
 * The generation parameters an image carries (POST /sdapi/v1/png-info reads PNG text, XMP or EXIF).
 * @param {Blob} image
 * @returns {Promise<{ params: Params | null, mode: string | null, notes: string[] }>}
 */
export async function imageSettings(image) {
  const bytes = new Uint8Array(await image.arrayBuffer());
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  const answer = await apiJson('/sdapi/v1/png-info', { image: btoa(binary) });
  return { params: answer.params ?? null, mode: answer.mode ?? null, notes: Array.isArray(answer.notes) ? answer.notes : [] };
}
