/**
 * The render command: txt2img, img2img with --image, a folder of images with --input-dir, a video with --video.
 *   npm run render -- --prompt "a red circle on a blue background" --out out.png
 *   npm run render -- --image in.png --strength 0.6 --prompt "a green square" --out out.png
 *   npm run render -- --input-dir frames/ --prompt "a green square" --out styled/
 *   npm run render -- --video in.mp4 --prompt "a green square" --out out.mp4
 * Several images (--count N) are written as out-0.png, out-1.png, ...; folders and videos show a progress bar.
 */
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname, extname, join, parse } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { ServiceError } from '../../models/errors.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { parseProvider } from '../../models/runtime/contract.ts';
import { renderVideo } from '../video.ts';
import { Engine } from '../engine.ts';
import { img2img, txt2img, type GeneratedImage } from '../generate.ts';
import { decodeImage, encodeImage, INPUT_FORMATS, type OutputFormat } from '../codecs/image.ts';
import { DEFAULT_STEPS, parseParams, type GenerationParams } from '../params.ts';

const USAGE = `usage: npm run render -- --prompt TEXT --out FILE [options]
  --image FILE        img2img from this image (else txt2img)
  --input-dir DIR     img2img every PNG/JPEG/WebP in DIR into the folder --out (same names)
  --video FILE        render a video through the stream pipeline into --out (an .mp4; audio kept)
  --format F          png | jpeg | webp for --input-dir outputs (default: each input's own)
  --negative TEXT     negative prompt
  --width N --height N  output size (multiples of 8; default: the model's size)
  --steps N           denoising steps (default 4 for txt2img, 2 for img2img, folders and video)
  --strength X        img2img strength in (0, 1] (default 0.5)
  --seed N            seed (image i of --count uses seed + i; every file of a folder uses it)
  --guidance X        guidance scale gamma (default 1.2)
  --cfg KIND          none | full | self | initialize (default self)
  --similarity X      video: similarity filter threshold (default 0.98; 1 renders every frame)
  --count N           number of images
  --model DIR         model pack folder (default: the embedded tiny-shapes pack)
  --provider NAME     cpu | cuda | tensorrt | dml | coreml
  --tiny-vae          use the pack's tiny VAE (taesd_encoder/taesd_decoder) when it has one`;

function number(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new ServiceError('bad_request', `--${name} must be a number, got "${value}"`, { field: name });
  return n;
}

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

/** txt2img, or img2img of one --image; --count N images. */
async function renderImages(engine: Engine, params: GenerationParams, out: string, image: string | undefined, count: number): Promise<void> {
  const format = formatOf(out, 'out');
  const progress = count > 1 ? bar('images') : undefined;
  progress?.start(count, 0);
  const onProgress = (done: number) => progress?.update(done);
  let images: GeneratedImage[];
  if (image) {
    const size = engine.size(params);
    const input = await decodeImage(await readFile(image), size.width, size.height);
    images = await img2img(engine, params, Array.from({ length: count }, () => input.data), { onProgress });
  } else {
    images = await txt2img(engine, params, count, { onProgress });
  }
  progress?.stop();
  await mkdir(dirname(out), { recursive: true });
  for (const [i, img] of images.entries()) {
    const path = count === 1 ? out : out.replace(/(\.\w+)$/, `-${i}$1`);
    await writeFile(path, await encodeImage(img.data, img.width, img.height, format));
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
  const size = engine.size(params);
  const progress = bar('images');
  progress.start(names.length, 0);
  for (const [i, name] of names.entries()) {
    const input = await decodeImage(await readFile(join(inputDir, name)), size.width, size.height);
    const [img] = await img2img(engine, params, [input.data]);
    const f = format ?? formatOf(name, 'input-dir');
    const ext = f === 'jpeg' ? (/\.jpe?g$/i.test(name) ? extname(name) : '.jpg') : `.${f}`;
    await writeFile(join(outDir, `${parse(name).name}${ext}`), await encodeImage(img!.data, img!.width, img!.height, f));
    progress.update(i + 1);
  }
  progress.stop();
  console.log(`wrote ${names.length} images to ${outDir} (${size.width}x${size.height}, seed ${String(params.seed)})`);
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

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      prompt: { type: 'string' },
      negative: { type: 'string' },
      out: { type: 'string' },
      image: { type: 'string' },
      'input-dir': { type: 'string' },
      video: { type: 'string' },
      format: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      steps: { type: 'string' },
      strength: { type: 'string' },
      seed: { type: 'string' },
      guidance: { type: 'string' },
      cfg: { type: 'string' },
      similarity: { type: 'string' },
      count: { type: 'string' },
      model: { type: 'string' },
      provider: { type: 'string' },
      'tiny-vae': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help || !values.out) {
    console.log(USAGE);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const sources = [values.image, values['input-dir'], values.video].filter((v) => v !== undefined);
  if (sources.length > 1) throw new ServiceError('bad_request', 'give at most one of --image, --input-dir, --video');
  const fromImage = sources.length === 1;
  const params = parseParams({
    prompt: values.prompt ?? '',
    negative_prompt: values.negative ?? '',
    width: number(values.width, 'width'),
    height: number(values.height, 'height'),
    steps: number(values.steps, 'steps') ?? DEFAULT_STEPS[fromImage ? 'img2img' : 'txt2img'],
    strength: number(values.strength, 'strength'),
    seed: number(values.seed, 'seed'),
    guidance_scale: number(values.guidance, 'guidance'),
    guidance: values.cfg,
    similarity_threshold: number(values.similarity, 'similarity'),
    ...(values['tiny-vae'] ? { vae: 'tiny' } : {}),
  });
  const count = number(values.count, 'count') ?? 1;
  if (!Number.isInteger(count) || count < 1) throw new ServiceError('bad_request', '--count must be a positive integer', { field: 'count' });
  const format = values.format === undefined ? undefined : formatOf(`x.${values.format}`, 'format');
  const engine = await Engine.load(values.model ?? EMBEDDED_PACK_DIR, { provider: parseProvider(values.provider ?? 'cpu'), threads: 0 });
  if (values['input-dir']) await renderDirectory(engine, params, values['input-dir'], values.out, format);
  else if (values.video) await renderVideoFile(engine, params, values.video, values.out);
  else await renderImages(engine, params, values.out, values.image, count);
}

main().catch((error: unknown) => {
  const e = error instanceof ServiceError ? error : undefined;
  console.error(`render: ${e ? `${e.code}: ${e.message}` : error instanceof Error ? error.stack : String(error)}`);
  process.exitCode = 1;
});
