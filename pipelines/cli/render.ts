/**
 * The render command: txt2img, img2img with --image, a folder of images with --input-dir, a video with --video.
 *   npm run render -- --prompt "a large red circle in the centre on a blue background" --out out.png
 *   npm run render -- --image in.png --strength 0.6 --prompt "a large green square in the centre on a white background" --out out.png
 *   npm run render -- --input-dir frames/ --prompt "a large green square in the centre on a white background" --strength 0.6 --out styled/
 *   npm run render -- --video in.mp4 --prompt "a large green square in the centre on a white background" --strength 0.6 --out out.mp4
 *   npm run render -- --from-png earlier.png --seed 9 --out again.png
 * Several images (--count N) are written as out-0.png, out-1.png, ...; folders and videos show a progress bar.
 * Every image carries its parameters (pipelines/infotext.ts); flags: pipelines/cli/render-args.ts.
 */
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname, extname, join, parse, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import cliProgress from 'cli-progress';
import { ServiceError } from '../../models/errors.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { parseProvider } from '../../models/runtime/contract.ts';
import { renderVideo } from '../video.ts';
import { Engine } from '../engine.ts';
import { render } from '../generate.ts';
import { writeInfotext } from '../infotext.ts';
import { decodeImage, encodeImage, INPUT_FORMATS, type OutputFormat } from '../codecs/image.ts';
import { packParams, type GenerationParams } from '../params.ts';
import { planRequest, type Mode } from '../plan.ts';
import { number, paramsFromFlags, readFlags, USAGE } from './render-args.ts';

function formatOf(path: string, flag: string): OutputFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.png') return 'png';
  if (ext === '.jpg' || ext === '.jpeg') return 'jpeg';
  if (ext === '.webp') return 'webp';
  throw new ServiceError('bad_request', `--${flag} must end in .png, .jpg or .webp, got "${path}"`, { field: flag });
}

function bar(unit: string, extra = ''): cliProgress.SingleBar {
  return new cliProgress.SingleBar({ format: `rendering [{bar}] {value}/{total} ${unit} | {eta}s left${extra}`, etaBuffer: 20 }, cliProgress.Presets.shades_classic);
}

/** Plans a render and prints its notes (where it differs from what was asked). */
async function plan(engine: Engine, params: GenerationParams, mode: Mode) {
  const planned = await planRequest(engine, params, mode);
  for (const note of planned.notes) console.error(`note: ${note}`);
  return planned;
}

/** txt2img, or img2img of one --image; --count N images, each with its parameters written in. */
async function renderImages(engine: Engine, params: GenerationParams, out: string, image: string | undefined, count: number): Promise<void> {
  const format = formatOf(out, 'out');
  const planned = await plan(engine, params, image ? 'img2img' : 'txt2img');
  const progress = count > 1 ? bar('images') : undefined;
  progress?.start(count, 0);
  const onProgress = (done: number) => progress?.update(done);
  const { width, height } = planned.size;
  const inits = image ? [(await decodeImage(await readFile(image), width, height, { fit: params.fit })).data] : undefined;
  const images = await render(engine, planned, count, { onProgress, ...(inits ? { inits } : {}) });
  progress?.stop();
  await mkdir(dirname(out), { recursive: true });
  for (const [i, img] of images.entries()) {
    const path = count === 1 ? out : out.replace(/(\.\w+)$/, `-${i}$1`);
    await writeFile(path, await encodeImage(img.data, img.width, img.height, format, undefined, writeInfotext(planned, img, engine.pack.name)));
    console.log(`wrote ${path} (${img.width}x${img.height}, seed ${img.seed})`);
  }
}

/** Every image of a folder through img2img with the same parameters and seed, written under the same name. */
async function renderDirectory(engine: Engine, params: GenerationParams, inputDir: string, outDir: string, format: OutputFormat | undefined): Promise<void> {
  const names = (await readdir(inputDir, { withFileTypes: true }))
    .filter((e) => e.isFile() && /\.(png|jpe?g|webp)$/i.test(e.name))
    .map((e) => e.name)
    .sort();
  if (names.length === 0) throw new ServiceError('bad_request', `--input-dir ${inputDir} has no ${INPUT_FORMATS.join('/')} images`, { field: 'input-dir' });
  await mkdir(outDir, { recursive: true });
  const planned = await plan(engine, params, 'img2img');
  const { size } = planned;
  const progress = bar('images');
  progress.start(names.length, 0);
  for (const [i, name] of names.entries()) {
    const input = await decodeImage(await readFile(join(inputDir, name)), size.width, size.height, { fit: params.fit });
    const [img] = await render(engine, planned, 1, { inits: [input.data] });
    const f = format ?? formatOf(name, 'input-dir');
    const ext = f === 'jpeg' ? (/\.jpe?g$/i.test(name) ? extname(name) : '.jpg') : `.${f}`;
    await writeFile(join(outDir, `${parse(name).name}${ext}`), await encodeImage(img!.data, img!.width, img!.height, f, undefined, writeInfotext(planned, img!, engine.pack.name)));
    progress.update(i + 1);
  }
  progress.stop();
  console.log(`wrote ${names.length} images to ${outDir} (${planned.outputSize.width}x${planned.outputSize.height}, seed ${JSON.stringify(params.seed)})`);
}

/** A video through the stream pipeline (similarity filter on), encoded H.264 MP4 with the source's audio. */
async function renderVideoFile(engine: Engine, params: GenerationParams, input: string, out: string): Promise<void> {
  if (extname(out).toLowerCase() !== '.mp4') throw new ServiceError('bad_request', `--out must end in .mp4 for --video, got "${out}"`, { field: 'out' });
  await mkdir(dirname(out), { recursive: true });
  const progress = bar('frames', ' | {fps} frames/s | {skipped} skipped');
  let started = false;
  const stats = await renderVideo(engine, {
    input,
    output: out,
    params,
    onProgress: (done, expected, s) => {
      if (!started) progress.start(expected, 0, { fps: '0', skipped: 0 });
      started = true;
      progress.setTotal(expected);
      progress.update(done, { fps: s.render_fps.toFixed(1), skipped: s.skipped });
    },
  });
  if (started) progress.stop();
  console.log(
    `wrote ${out} (${stats.frames} frames ${stats.width}x${stats.height} at ${stats.info.frameRate} fps, ` +
      `${(stats.skip_rate * 100).toFixed(1)}% skipped by the similarity filter, ${stats.render_fps.toFixed(1)} frames/s${stats.audio ? ', audio kept' : ''})`,
  );
}

export interface RunOptions {
  /** The engine to render with instead of loading --model (tests reuse one). */
  readonly engine?: Engine;
}

/** The render command on `argv` (process.argv without node and the script), as `npm run render --` runs it. */
export async function runRender(argv: readonly string[], options: RunOptions = {}): Promise<void> {
  const values = readFlags(argv);
  if (values.help || !values.out) {
    console.log(USAGE);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const sources = [values.image, values['input-dir'], values.video].filter((v) => v !== undefined);
  if (sources.length > 1) throw new ServiceError('bad_request', 'give at most one of --image, --input-dir, --video');
  await paramsFromFlags(values, sources.length === 1); // flag errors before the model loads
  const count = number(values.count, 'count') ?? 1;
  if (!Number.isInteger(count) || count < 1) throw new ServiceError('bad_request', '--count must be a positive integer', { field: 'count' });
  const format = values.format === undefined ? undefined : formatOf(`x.${values.format}`, 'format');
  const engine = options.engine ?? (await Engine.load(values.model ?? EMBEDDED_PACK_DIR, { provider: parseProvider(values.provider ?? 'cpu'), threads: 0 }));
  // steps and guidance no flag gives come from the pack (Turbo: 1 step, no guidance)
  const { params, notes } = await paramsFromFlags(values, sources.length === 1, packParams(engine.pack.defaults, sources.length === 1 ? 'img2img' : 'txt2img'));
  for (const note of notes) console.error(`note: ${note}`);
  if (values['input-dir']) await renderDirectory(engine, params, values['input-dir'], values.out, format);
  else if (values.video) await renderVideoFile(engine, params, values.video, values.out);
  else await renderImages(engine, params, values.out, values.image, count);
}

// run as a command (not when a test imports runRender)
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  runRender(process.argv.slice(2)).catch((error: unknown) => {
    const e = error instanceof ServiceError ? error : undefined;
    console.error(`render: ${e ? `${e.code}: ${e.message}` : error instanceof Error ? error.stack : String(error)}`);
    process.exitCode = 1;
  });
}
