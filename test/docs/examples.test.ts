/**
 * Every prompt example in the README, the batch API doc and the render CLI's help (pipelines/cli/render.ts) draws
 * what it says on the embedded pack: the render commands run through the CLI exactly as written (output path aside,
 * and a fixed seed where the example names none; img2img, folder and video examples get a drawn scene of another
 * colour and shape as their input image), and the API doc's JSON bodies go through the same parameter schema the
 * HTTP API uses. Each image must show the named background and every named object in its colour
 * (pipelines/evaluation/loose-score.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadSceneSpec, type RgbImage } from '../../pipelines/evaluation/evaluator.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { Engine } from '../../pipelines/engine.ts';
import { txt2img } from '../../pipelines/generate.ts';
import { tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { parseJob } from '../../server/batch/jobs/schema.ts';
import { scoreLoose } from '../../pipelines/evaluation/loose-score.ts';
import { drawScenePng } from '../helpers/scenes.ts';
import { expectationOf } from '../helpers/prompts.ts';
import { tempDir } from '../server/batch/helpers.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'pipelines', 'cli', 'render.ts');
const spec = await loadSceneSpec(EMBEDDED_PACK_DIR);

/** `npm run render -- ...` lines of a document, split into arguments (double quotes group words). */
async function renderCommands(file: string): Promise<string[][]> {
  const text = await readFile(join(ROOT, file), 'utf8');
  // "[--format png]" marks optional flags: the example as run leaves them out; a usage line ("--prompt TEXT") is no example
  return [...text.matchAll(/npm run render -- ([^\n`]+)/g)].filter((m) => m[1]!.includes('--prompt "')).map((m) => [...m[1]!.replace(/\[[^\]]*\]/g, '').matchAll(/"([^"]*)"|(\S+)/g)].map((a) => a[1] ?? a[2]!));
}

function flag(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function readRgb(path: string): Promise<RgbImage> {
  const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

function check(prompt: string, img: RgbImage, where: string): void {
  const expect = expectationOf(spec, prompt);
  assert.ok(expect.objects.length > 0, `${where}: the prompt names no object`);
  const s = scoreLoose(spec, img, expect);
  assert.ok(s.allRight, `${where}: "${prompt}" drew background ${s.background ? 'right' : 'wrong'}, objects ${JSON.stringify(s.objects.map((o) => o.found ?? 'missing'))}`);
}

for (const file of ['README.md', 'server/batch/API.md', 'pipelines/cli/render.ts']) {
  test(`${file}: every render example draws what its prompt says`, async () => {
    const commands = (await renderCommands(file)).filter((a) => !a.includes('--model')); // --model: someone else's pack
    assert.ok(commands.length > 0, 'no examples found');
    for (const args of commands) {
      const prompt = flag(args, '--prompt')!;
      const dir = await tempDir('docs-');
      // the example's own flags, with our paths for its input and output
      const own = args.filter((_, i) => !['--out', '--image', '--input-dir', '--video'].includes(args[i - 1] ?? '') && !['--out', '--image', '--input-dir', '--video'].includes(args[i]!));
      const expect = expectationOf(spec, prompt);
      const takesImage = args.some((a) => ['--image', '--input-dir', '--video'].includes(a));
      const input = join(dir, 'in.png');
      if (takesImage) {
        const bgColor = expect.background?.kind === 'plain' ? expect.background.color : 'white';
        const other = (['red', 'green', 'blue', 'yellow'] as const).find((c) => !expect.objects.some((o) => o.color === c) && bgColor !== c)!;
        await writeFile(input, await drawScenePng(spec, { background: { kind: 'plain', color: bgColor }, objects: [{ shape: expect.objects[0]?.shape === 'circle' ? 'square' : 'circle', color: other, size: 'large', position: 'centre' }] }));
      }
      const out = join(dir, 'out.png');
      // an example without --seed draws a random one: the test gives it a fixed seed so that a run repeats
      const seed = args.includes('--seed') ? [] : ['--seed', '1'];
      const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...own, ...seed, ...(takesImage ? ['--image', input] : []), '--out', out], { encoding: 'utf8', cwd: ROOT });
      assert.equal(r.status, 0, r.stderr);
      const count = Number(flag(args, '--count') ?? 1);
      const outputs = count === 1 ? [out] : (await readdir(dir)).filter((f) => /^out-\d+\.png$/.test(f)).map((f) => join(dir, f));
      assert.equal(outputs.length, count);
      for (const path of outputs) check(prompt, await readRgb(path), `${file}: ${args.join(' ')}`);
    }
  });
}

test('server/batch/API.md: every image-job body with a prompt draws it in every image (parsed by the jobs API schema)', async () => {
  const text = await readFile(join(ROOT, 'server/batch/API.md'), 'utf8');
  const engine = await Engine.load(EMBEDDED_PACK_DIR);
  const jobs = [...text.matchAll(/-d '(\{[^']*"prompt"[^']*\})'/g)].map((m) => parseJob(JSON.parse(m[1]!), engine.pack.defaults));
  const images = jobs.flatMap((j) => (j.kind === 'images' ? [j.request] : []));
  assert.ok(images.length > 0, 'no image-job examples found');
  for (const { params, count } of images) {
    const prompt = typeof params.prompt === 'string' ? params.prompt : params.prompt[0]!.text;
    for (const img of await txt2img(engine, params, count)) {
      check(prompt, { data: tensorToRgb8(img.data, img.width, img.height), width: img.width, height: img.height }, `API.md job, seed ${img.seed}`);
    }
  }
});
