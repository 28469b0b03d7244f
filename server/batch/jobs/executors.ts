/**
 * What a job does, per kind. Image jobs write image-NNNN.<ext> one UNet batch at a time (each file stored
 * whole or not at all), so a resumed job - after a restart, or on another worker of a cluster - keeps the images
 * already written and renders the rest: image j depends only on seed + j. Video jobs render the whole file
 * again when resumed.
 */
import type { GenerationParams } from '../../../pipelines/params.ts';
import type { Plan } from '../../../pipelines/plan.ts';
import type { AppContext } from '../../context.ts';
import type { FfmpegPaths } from '../../../pipelines/codecs/ffmpeg.ts';
import { resolveVideoPath } from '../paths.ts';
import { encodeResult, renderImages } from '../render.ts';
import { decodeBytes } from '../validate.ts';
import { renderVideo } from '../../../pipelines/video.ts';
import type { Executor, RunningJob } from './run.ts';
import type { ImagesJobRequest, VideoJobRequest } from './schema.ts';

/** The name of result image `index`. */
export function imageName(index: number, format: ImagesJobRequest['output_format']): string {
  return `image-${String(index).padStart(4, '0')}.${format === 'jpeg' ? 'jpg' : format}`;
}

export const VIDEO_RESULT = 'output.mp4';

export function imagesExecutor(ctx: AppContext): Executor {
  return async (job) => {
    const request = job.record.request as ImagesJobRequest;
    const { params } = request;
    const plan = await ctx.plan(params, request.init_file ? 'img2img' : 'txt2img', 'job');
    job.record.notes = [...plan.notes];
    try {
      await renderJob(ctx, job, plan);
    } finally {
      plan.release();
    }
  };
}

/** An image job's images, one UNet batch at a time, after those an earlier run already wrote. */
async function renderJob(ctx: AppContext, job: RunningJob, plan: Plan): Promise<void> {
  const request = job.record.request as ImagesJobRequest;
  const { count, lanes, output_format: format } = request;
  const { width, height } = plan.size;
  const init = request.init_file ? (await decodeBytes(await job.files.read(request.init_file), width, height, 'init_image', request.params.fit)).data : undefined;
  // 1. keep what an earlier run already wrote (the files: a crash may have come before the record was saved)
  let done = 0;
  while (done < count && (await job.files.has(imageName(done, format)))) done++;
  job.record.results = Array.from({ length: done }, (_, i) => imageName(i, format));
  if (done > 0) job.progress(done / count, { resumed_from: done });
  // 2. the rest, one UNet batch at a time
  for (let start = done; start < count; start += lanes) {
    job.signal.throwIfAborted();
    const n = Math.min(lanes, count - start);
    const images = await renderImages(ctx, {
      plan,
      firstIndex: start,
      count: n,
      lanes: n,
      endpoint: 'jobs',
      signal: job.signal,
      onStep: (step, steps) => job.progress((start + (n * step) / steps) / count),
      ...(init ? { inits: [init] } : {}),
    });
    for (const [j, image] of images.entries()) {
      const name = imageName(start + j, format);
      await job.files.write(name, await encodeResult(ctx, plan, image, format));
      job.record.results.push(name);
    }
    job.progress((start + n) / count, { images: start + n });
    await job.save();
  }
}

export function videoExecutor(ctx: AppContext, ffmpeg: () => Promise<FfmpegPaths>): Executor {
  return async (job) => {
    const request = job.record.request as VideoJobRequest;
    // the folder rules are checked again: the configuration (or the node) may have changed since the job was accepted
    const upload = 'upload' in request.source ? await job.files.input(request.source.upload) : undefined;
    const input = 'path' in request.source ? await resolveVideoPath(ctx.config.videoDirs, request.source.path) : upload!.path;
    job.record.results = [];
    const output = await job.files.output(VIDEO_RESULT);
    let stats;
    try {
      stats = await renderVideo(ctx.engine, {
        ffmpeg: await ffmpeg(),
        input,
        output: output.path,
        params: request.params,
        runners: ctx.runners,
        defaults: ctx.defaults.job,
        signal: job.signal,
        onProgress: (frames, expected, s) => job.progress(Math.min(frames / expected, 0.99), { ...s }),
      });
    } catch (error) {
      await output.discard();
      throw error;
    } finally {
      await upload?.release();
    }
    await output.commit();
    const { info: _info, ...summary } = stats;
    job.record.stats = { ...summary };
    job.record.results = [VIDEO_RESULT];
    ctx.metrics.images.inc({ endpoint: 'jobs_video' }, stats.frames);
  };
}
