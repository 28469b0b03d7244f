/**
 * What a job does, per kind. Image jobs write image-NNNN.<ext> one UNet batch at a time (each file written
 * to a temporary name and renamed), so a resumed job keeps the images already written and renders the rest:
 * image j depends only on seed + j. Video jobs render the whole file again when resumed.
 */
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AppContext } from '../../context.ts';
import type { FfmpegPaths } from '../../../pipelines/codecs/ffmpeg.ts';
import { resolveVideoPath } from '../paths.ts';
import { encodeResult, renderImages } from '../render.ts';
import { decodeBytes } from '../validate.ts';
import { renderVideo } from '../../../pipelines/video.ts';
import type { Executor } from './manager.ts';
import type { ImagesJobRequest, VideoJobRequest } from './schema.ts';

/** The name of result image `index`. */
export function imageName(index: number, format: ImagesJobRequest['output_format']): string {
  return `image-${String(index).padStart(4, '0')}.${format === 'jpeg' ? 'jpg' : format}`;
}

export const VIDEO_RESULT = 'output.mp4';

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

export function imagesExecutor(ctx: AppContext): Executor {
  return async (job) => {
    const request = job.record.request as ImagesJobRequest;
    const { params, count, lanes, output_format: format } = request;
    const plan = await ctx.plan(params, request.init_file ? 'img2img' : 'txt2img', 'job');
    job.record.notes = [...plan.notes];
    const { width, height } = plan.size;
    const init = request.init_file ? (await decodeBytes(await readFile(join(job.dir, request.init_file)), width, height, 'init_image', params.fit)).data : undefined;
    // 1. keep what an earlier run already wrote (on disk: a crash may have come before job.json was saved)
    let done = 0;
    while (done < count && (await isFile(join(job.dir, imageName(done, format))))) done++;
    job.record.results = Array.from({ length: done }, (_, i) => imageName(i, format));
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
        const tmp = join(job.dir, `${name}.partial`);
        await writeFile(tmp, await encodeResult(ctx, plan, image, format));
        await rename(tmp, join(job.dir, name));
        job.record.results.push(name);
      }
      job.progress((start + n) / count, { images: start + n });
      await job.save();
    }
  };
}

export function videoExecutor(ctx: AppContext, ffmpeg: () => Promise<FfmpegPaths>): Executor {
  return async (job) => {
    const request = job.record.request as VideoJobRequest;
    // the folder rules are checked again: the configuration may have changed since the job was accepted
    const input = 'path' in request.source ? await resolveVideoPath(ctx.config.videoDirs, request.source.path) : join(job.dir, request.source.upload);
    job.record.results = [];
    const stats = await renderVideo(ctx.engine, {
      ffmpeg: await ffmpeg(),
      input,
      output: join(job.dir, VIDEO_RESULT),
      params: request.params,
      runners: ctx.runners,
      defaults: ctx.defaults.job,
      signal: job.signal,
      onProgress: (frames, expected, s) => job.progress(Math.min(frames / expected, 0.99), { ...s }),
    });
    const { info: _info, ...summary } = stats;
    job.record.stats = { ...summary };
    job.record.results = [VIDEO_RESULT];
    ctx.metrics.images.inc({ endpoint: 'jobs_video' }, stats.frames);
  };
}
