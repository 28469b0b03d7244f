/**
 * Walks the parameter table of pipelines/PARAMETERS.md: every cell is rendered through its interface as a user
 * would send it (the render CLI's argv, the official openai SDK, a plain HTTP client for A1111 and jobs, a
 * WebSocket client), on the embedded tiny-shapes pack, over the base requests the page states. For each row:
 * - every image interface gives the same pixels and writes the same parameters text into its PNG, and that text
 *   reads back (parseInfotext) to the row's parameters as /v1/jobs spells them;
 * - the image differs from the same request without the row's parameter (it took effect);
 * - the WebSocket stream starts with the parameters and sends a frame (different from its base's frame).
 * A cell with two examples must give what either gives. Rows of stream parameters are checked where they apply;
 * rows marked (tiny VAE) run on the embedded pack with its own VAE linked in as a tiny VAE, on a server whose
 * streams default to the full VAE (tinyVae 'off'), so that choosing the tiny one changes the image everywhere.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI, { toFile } from 'openai';
import sharp from 'sharp';
import { createBatchApi } from '../../server/batch/index.ts';
import { startServer, type RunningServer } from '../../server/app.ts';
import { createLogger } from '../../server/log.ts';
import { Engine } from '../../pipelines/engine.ts';
import { readImageText } from '../../pipelines/codecs/image.ts';
import { parseInfotext } from '../../pipelines/infotext.ts';
import { paramsSchema } from '../../pipelines/params.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { runRender } from '../../pipelines/cli/render.ts';
import { paramsFromFlags, readFlags } from '../../pipelines/cli/render-args.ts';
import { StreamClient, shapeFrame } from '../helpers/stream-client.ts';
import { linkPackWithTinyVae } from '../helpers/fixtures.ts';
import { postJson, waitForJob, type Json } from '../server/batch/helpers.ts';

const DOC = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'pipelines', 'PARAMETERS.md');
const INTERFACES = ['cli', 'openai', 'a1111', 'jobs', 'ws'] as const;
type Interface = (typeof INTERFACES)[number];

interface Row {
  readonly name: string;
  readonly img2img: boolean;
  readonly stream: boolean;
  /** Runs on a pack with a tiny VAE. */
  readonly tinyVae: boolean;
  /** Each interface's examples (alternatives); empty: the interface has no way to say it. */
  readonly cells: Record<Interface, string[]>;
}

const spans = (text: string) => [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

/** The table's rows and the base requests of the paragraph above it. */
function readDoc(text: string): { rows: Row[]; cliBase: string[]; jsonBase: Json; a1111Base: Json } {
  const intro = text.slice(0, text.indexOf('| parameter |'));
  const code = spans(intro);
  const cli = code.find((c) => c.startsWith('npm run render --'))!;
  const [jsonBase, a1111Base] = code.filter((c) => c.startsWith('{')).map((c) => JSON.parse(c) as Json);
  const cliBase = shellWords(cli).slice(4).filter((w, i, all) => w !== '--out' && all[i - 1] !== '--out');
  const rows = text
    .split('\n')
    .filter((line) => line.startsWith('| `'))
    .map((line) => {
      const cells = line.slice(2, -2).split(' | ');
      assert.equal(cells.length, 7, `a row of 7 cells: ${line.slice(0, 60)}`);
      const [head, , cli, openai, a1111, jobs, ws] = cells as [string, string, string, string, string, string, string];
      return { name: head, img2img: head.includes('(img2img)'), stream: head.includes('(stream)'), tinyVae: head.includes('(tiny VAE)'), cells: { cli: spans(cli), openai: spans(openai), a1111: spans(a1111), jobs: spans(jobs), ws: spans(ws) } };
    });
  return { rows, cliBase, jsonBase: jsonBase!, a1111Base: a1111Base! };
}

/** Splits a command line the way a POSIX shell does for plain words and "double quoted" ones. */
function shellWords(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

/** The cell's flags replace the base's flags of the same names. */
function cliArgs(base: readonly string[], cell: string): string[] {
  const words = shellWords(cell);
  const names = new Set(words.filter((w) => w.startsWith('--')));
  const kept: string[] = [];
  for (let i = 0; i < base.length; i++) {
    const takesValue = i + 1 < base.length && !base[i + 1]!.startsWith('--');
    if (names.has(base[i]!)) {
      if (takesValue) i++;
      continue;
    }
    kept.push(base[i]!);
    if (takesValue) kept.push(base[++i]!);
  }
  return [...kept, ...words];
}

/** The base body with the cell's members (objects such as override_settings merged one level deep). */
function jsonBody(base: Json, cell: string): Json {
  const add = JSON.parse(`{${cell}}`) as Json;
  const out = { ...base };
  for (const [k, v] of Object.entries(add)) out[k] = typeof v === 'object' && v && !Array.isArray(v) && typeof out[k] === 'object' ? { ...out[k], ...v } : v;
  return out;
}

/** `actual` has every member of `expected` (deeply equal). */
function assertContains(actual: Json, expected: Json, what: string): void {
  for (const [k, v] of Object.entries(expected)) assert.deepEqual(actual[k], v, `${what}: ${k} is ${JSON.stringify(actual[k])}, expected ${JSON.stringify(v)}`);
}

/** A server, its engine and an OpenAI SDK client of it. */
interface Target {
  readonly name: string;
  readonly server: RunningServer;
  readonly engine: Engine;
  readonly client: OpenAI;
}

let work: string;
let input: Buffer;
const doc = readDoc(await readFile(DOC, 'utf8'));
const targets: Target[] = [];

async function start(name: string, packDir: string, tinyVae: 'live' | 'off'): Promise<Target> {
  const engine = await Engine.load(packDir);
  const server = await startServer({ port: 0, dataDir: join(work, name), tinyVae }, { engine, log: createLogger({}, 'error'), extensions: [(ctx) => createBatchApi(ctx)] });
  const target = { name, server, engine, client: new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 }) };
  targets.push(target);
  return target;
}

let embedded: Target;
let tinyVaeTarget: Promise<Target> | undefined;
/** The embedded pack, or (rows marked tiny VAE) the same pack with a tiny VAE, started on first use. */
function targetFor(row: Pick<Row, 'tinyVae'>): Promise<Target> {
  if (!row.tinyVae) return Promise.resolve(embedded);
  tinyVaeTarget ??= linkPackWithTinyVae(EMBEDDED_PACK_DIR).then((dir) => start('tiny-vae', dir, 'off'));
  return tinyVaeTarget;
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'params-table-'));
  embedded = await start('embedded', EMBEDDED_PACK_DIR, 'live');
  input = await shapeFrame({ bg: '#f0f0f0', fg: '#20a020', shape: 'square', x: 40 });
});

after(async () => {
  await Promise.all(targets.map((t) => t.server.close()));
});

interface Output {
  /** The PNG (image interfaces) or the stream's first frame. */
  readonly bytes: Buffer;
  /** What the stream started with (WebSocket). */
  readonly started?: Json;
}

let files = 0;
async function render(target: Target, via: Interface, cell: string | undefined, img2img: boolean): Promise<Output> {
  const { server, engine, client } = target;
  switch (via) {
    case 'cli': {
      const out = join(work, `cli-${files++}.png`);
      const inputFile = join(work, 'input.jpg');
      await writeFile(inputFile, input);
      await runRender([...cliArgs(doc.cliBase, cell ?? ''), '--out', out, ...(img2img ? ['--image', inputFile] : [])], { engine });
      return { bytes: await readFile(out) };
    }
    case 'openai': {
      const body = cell === undefined ? doc.jsonBase : jsonBody(doc.jsonBase, cell);
      // extension fields go through the SDK as they are (its types list only OpenAI's own)
      const res = (
        img2img
          ? await client.images.edit({ ...body, image: await toFile(input, 'input.jpg', { type: 'image/jpeg' }) } as OpenAI.ImageEditParamsNonStreaming)
          : await client.images.generate(body as OpenAI.ImageGenerateParamsNonStreaming)
      ) as OpenAI.ImagesResponse;
      return { bytes: Buffer.from(res.data![0]!.b64_json!, 'base64') };
    }
    case 'a1111': {
      const body = cell === undefined ? doc.a1111Base : jsonBody(doc.a1111Base, cell);
      const res = await postJson(`${server.url}/sdapi/v1/${img2img ? 'img2img' : 'txt2img'}`, { ...body, ...(img2img ? { init_images: [input.toString('base64')] } : {}) });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return { bytes: Buffer.from(res.body.images[0], 'base64') };
    }
    case 'jobs': {
      const body = cell === undefined ? doc.jsonBase : jsonBody(doc.jsonBase, cell);
      const created = await postJson(`${server.url}/v1/jobs`, { kind: 'images', count: 1, ...body, ...(img2img ? { init_image: input.toString('base64') } : {}) });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const job = await waitForJob(server.url, created.body.id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      return { bytes: Buffer.from(await (await fetch(job.urls[0])).arrayBuffer()), started: job.request.params };
    }
    case 'ws': {
      const params = cell === undefined ? doc.jsonBase : jsonBody(doc.jsonBase, cell);
      const stream = await StreamClient.connect(server.url, { params, mode: img2img ? 'img2img' : 'txt2img', window: 1 });
      try {
        if (img2img) return { bytes: (await stream.roundTrip(input)).bytes, started: stream.started!['params'] };
        await stream.until(() => stream.frames.length > 0);
        return { bytes: stream.frames[0]!.bytes, started: stream.started!['params'] };
      } finally {
        await stream.close();
      }
    }
  }
}

const pixels = (bytes: Buffer) => sharp(bytes).raw().toBuffer();
const baselines = new Map<string, Buffer>();
async function baseline(target: Target, via: Interface, img2img: boolean): Promise<Buffer> {
  const key = `${target.name}-${via}-${img2img}`;
  if (!baselines.has(key)) baselines.set(key, await pixels((await render(target, via, undefined, img2img)).bytes));
  return baselines.get(key)!;
}

test('the table lists every generation parameter and every interface', () => {
  const names = new Set(doc.rows.flatMap((r) => spans(r.name)));
  for (const key of Object.keys(paramsSchema.shape)) assert.ok(names.has(key), `a row for ${key}`);
  assert.deepEqual(doc.cliBase.slice(0, 2), ['--prompt', 'a large red circle in the centre on a blue background']);
});

test('the base requests of every interface give one image', async () => {
  for (const img2img of [false, true]) {
    // A1111's img2img keeps A1111's own default denoising_strength (0.75; the others' default strength is 0.5)
    const vias = img2img ? (['cli', 'openai', 'jobs'] as const) : (['cli', 'openai', 'a1111', 'jobs'] as const);
    const [first, ...rest] = await Promise.all(vias.map((via) => baseline(embedded, via, img2img)));
    for (const other of rest) assert.ok(other.equals(first!), `img2img ${img2img}: every interface renders the base request alike`);
  }
});

for (const row of doc.rows) {
  const expectedCell = row.cells.jobs[0];
  if (expectedCell === undefined) continue; // nothing says it (frame_buffer_size)
  test(`row ${row.name}: every interface renders it, alike`, async () => {
    const target = await targetFor(row);
    const { server } = target;
    const expected = JSON.parse(`{${expectedCell}}`) as Json;
    // 1. stream parameters: the CLI and jobs take them; a stream renders with them
    if (row.stream) {
      for (const cell of row.cells.cli) assertContains((await paramsFromFlags(readFlags(cliArgs(doc.cliBase, cell)), false)).params, expected, `CLI ${cell}`);
      const job = await postJson(`${server.url}/v1/jobs`, { kind: 'images', count: 1, ...jsonBody(doc.jsonBase, expectedCell) });
      assert.equal(job.status, 201, JSON.stringify(job.body));
      assertContains(job.body.request.params, expected, 'job');
      for (const cell of row.cells.ws) assertContains((await render(target, 'ws', cell, true)).started, expected, `WebSocket ${cell}`);
      return;
    }
    // 2. images: the same pixels and parameters text from every interface and every example
    const images: { via: string; pixels: Buffer; text: string }[] = [];
    for (const via of ['cli', 'openai', 'a1111', 'jobs'] as const) {
      for (const cell of row.cells[via]) {
        const { bytes } = await render(target, via, cell, row.img2img);
        const text = await readImageText(bytes);
        assert.ok(text, `${via} ${cell}: the image carries its parameters`);
        assertContains(parseInfotext(text).params, expected, `${via} ${cell}`);
        images.push({ via: `${via} ${cell}`, pixels: await pixels(bytes), text });
      }
    }
    const [first, ...rest] = images;
    for (const other of rest) {
      assert.ok(other.pixels.equals(first!.pixels), `${other.via} renders what ${first!.via} renders`);
      assert.equal(other.text, first!.text, `${other.via} writes what ${first!.via} writes`);
    }
    // the same request without the row's own parameters (a row may need others, e.g. a size for fit) differs
    const own = spans(row.name);
    const without = JSON.stringify(Object.fromEntries(Object.entries(expected).filter(([k]) => !own.includes(k)))).slice(1, -1);
    assert.ok(!first!.pixels.equals(await pixels((await render(target, 'jobs', without, row.img2img)).bytes)), `${row.name} changes the image`);
    // 3. a stream with it
    for (const cell of row.cells.ws) {
      const out = await render(target, 'ws', cell, row.img2img);
      assertContains(out.started, expected, `WebSocket ${cell}`);
      assert.ok(!(await pixels(out.bytes)).equals(await baseline(target, 'ws', row.img2img)), `WebSocket ${cell} changes the frame`);
    }
  });
}
