/**
 * The render command: txt2img, or img2img with --image.
 *   npm run render -- --prompt "a red circle on a blue background" --out out.png
 *   npm run render -- --image in.png --strength 0.6 --prompt "a green square" --out out.png
 * Several images (--count N) are written as out-0.png, out-1.png, ... with a progress bar.
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname, extname } from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { ServiceError } from '../models/errors.ts';
import { EMBEDDED_PACK_DIR } from '../models/pack.ts';
import { parseProvider } from '../models/runtime.ts';
import { Engine } from './engine.ts';
import { img2img, txt2img, type GeneratedImage } from './generate.ts';
import { decodeImage, encodeImage, type OutputFormat } from './image.ts';
import { parseParams } from './params.ts';

const USAGE = `usage: npm run render -- --prompt TEXT --out FILE [options]
  --image FILE        img2img from this image (else txt2img)
  --negative TEXT     negative prompt
  --width N --height N  output size (multiples of 8; default: the model's size)
  --steps N           denoising steps (default 4 for txt2img, 2 for img2img)
  --strength X        img2img strength in (0, 1] (default 0.5)
  --seed N            seed (image i of --count uses seed + i)
  --guidance X        guidance scale gamma (default 1.2)
  --cfg KIND          none | full | self | initialize (default self)
  --count N           number of images
  --model DIR         model pack folder (default: the embedded tiny-shapes pack)
  --provider NAME     cpu | cuda | tensorrt | dml | coreml`;

function number(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new ServiceError('bad_request', `--${name} must be a number, got "${value}"`, { field: name });
  return n;
}

function outputFormat(path: string): OutputFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.png') return 'png';
  if (ext === '.jpg' || ext === '.jpeg') return 'jpeg';
  if (ext === '.webp') return 'webp';
  throw new ServiceError('bad_request', `--out must end in .png, .jpg or .webp, got "${path}"`, { field: 'out' });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      prompt: { type: 'string' },
      negative: { type: 'string' },
      out: { type: 'string' },
      image: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      steps: { type: 'string' },
      strength: { type: 'string' },
      seed: { type: 'string' },
      guidance: { type: 'string' },
      cfg: { type: 'string' },
      count: { type: 'string' },
      model: { type: 'string' },
      provider: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help || !values.out) {
    console.log(USAGE);
    process.exitCode = values.help ? 0 : 2;
    return;
  }
  const format = outputFormat(values.out);
  const params = parseParams({
    prompt: values.prompt ?? '',
    negative_prompt: values.negative ?? '',
    width: number(values.width, 'width'),
    height: number(values.height, 'height'),
    steps: number(values.steps, 'steps') ?? (values.image ? 2 : 4),
    strength: number(values.strength, 'strength'),
    seed: number(values.seed, 'seed'),
    guidance_scale: number(values.guidance, 'guidance'),
    guidance: values.cfg,
  });
  const count = number(values.count, 'count') ?? 1;
  if (!Number.isInteger(count) || count < 1) throw new ServiceError('bad_request', '--count must be a positive integer', { field: 'count' });
  const engine = await Engine.load(values.model ?? EMBEDDED_PACK_DIR, {
    provider: parseProvider(values.provider ?? 'cpu'),
    threads: 0,
    tinyVae: false,
  });
  const bar = count > 1 ? new cliProgress.SingleBar({ format: 'rendering [{bar}] {value}/{total} images | {eta}s left' }, cliProgress.Presets.shades_classic) : undefined;
  bar?.start(count, 0);
  const onProgress = (done: number) => bar?.update(done);
  let images: GeneratedImage[];
  if (values.image) {
    const size = engine.size(params);
    const input = await decodeImage(await readFile(values.image), size.width, size.height);
    images = await img2img(engine, params, Array.from({ length: count }, () => input.data), { onProgress });
  } else {
    images = await txt2img(engine, params, count, { onProgress });
  }
  bar?.stop();
  await mkdir(dirname(values.out), { recursive: true });
  for (const [i, img] of images.entries()) {
    const path = count === 1 ? values.out : values.out.replace(/(\.\w+)$/, `-${i}$1`);
    await writeFile(path, await encodeImage(img.data, img.width, img.height, format));
    console.log(`wrote ${path} (${img.width}x${img.height}, seed ${img.seed})`);
  }
}

main().catch((error: unknown) => {
  const e = error instanceof ServiceError ? error : undefined;
  console.error(`render: ${e ? `${e.code}: ${e.message}` : error instanceof Error ? error.stack : String(error)}`);
  process.exitCode = 1;
});
