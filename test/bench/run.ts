/**
 * `npm run bench [-- --quick] [-- --only live,batching]`: every speed claim, measured side by side in one
 * run on the embedded pack, written to test/bench/REPORT.md and test/bench/report.json with machine info.
 * With --only, the other sections of the existing report are kept and the chosen ones replaced.
 */
import { readFile, writeFile, access } from 'node:fs/promises';
import { cpus, totalmem, platform, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Engine } from '../../pipelines/engine.ts';
import { EMBEDDED_PACK_DIR } from '../../models/pack.ts';
import { closeSharedPool } from '../../models/runtime/worker-pool.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string' }, model: { type: 'string', default: EMBEDDED_PACK_DIR }, help: { type: 'boolean', default: false } } });
const only = values.only?.split(',');
const rounds = values.quick ? 5 : 20;

const lines: string[] = [];
const log = (line: string) => {
  lines.push(line);
  console.log(line);
};

/** Sections: name -> module file exporting the named async function (some land with later issues). */
const SECTIONS: [string, string, string][] = [
  ['pack', 'pack.ts', 'benchPack'],
  ['pipeline', 'pipeline.ts', 'benchPipeline'],
  ['live', 'live.ts', 'benchLive'],
  ['latency', 'latency.ts', 'benchLatency'],
  ['aspect', 'aspect.ts', 'benchAspect'],
  ['batching', 'batching.ts', 'benchBatching'],
  ['sched', 'sched.ts', 'benchSched'],
  ['batch', 'batch.ts', 'benchBatch'],
  ['experts', 'experts.ts', 'benchExperts'],
  ['adapters', 'adapters.ts', 'benchAdapters'],
  ['webrtc', 'webrtc.ts', 'benchWebrtc'],
  ['soak', 'soak.ts', 'benchSoak'],
  ['limits', 'limits.ts', 'benchLimits'],
  ['cluster', 'cluster.ts', 'benchCluster'],
  // full-size model families: builds multi-GB packs and takes an hour; only with --only families
  ['families', 'families.ts', 'benchFamilies'],
];
const ON_REQUEST = new Set(['families']);

if (values.help) {
  console.log(`npm run bench [-- options]
  --quick            shorter runs (about 5 minutes in all)
  --only a,b         only these sections (the others stay as they are in REPORT.md and report.json)
  --model DIR        another model pack (default: the embedded one)
sections: ${SECTIONS.map(([name]) => name).join(', ')} (${[...ON_REQUEST].join(', ')}: only when named)`);
  process.exit(0);
}
const unknown = only?.filter((name) => !SECTIONS.some(([s]) => s === name)) ?? [];
if (unknown.length > 0) throw new Error(`unknown section(s) ${unknown.join(', ')}; sections: ${SECTIONS.map(([name]) => name).join(', ')}`);

const engine = await Engine.load(values.model);
const started = new Date();
log(`# Benchmark report\n`);
log(`Run ${started.toISOString()} with \`npm run bench${values.quick ? ' -- --quick' : ''}\` on model **${engine.pack.name}** (${values.model}).`);
log(`Machine: ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${platform()} ${release()}, Node ${process.version}, onnxruntime-node CPU.`);
log(`Each comparison runs its cases interleaved (rotating order) for ${rounds} rounds after warm-up; times are medians with p10/p90.`);
const report: Record<string, unknown> = { started: started.toISOString(), quick: values.quick, model: engine.pack.name, machine: { cpus: cpus().length, model: cpus()[0]?.model, memory_gib: totalmem() / 2 ** 30, node: process.version } };

for (const [name, file, fn] of SECTIONS) {
  if (only ? !only.includes(name) : ON_REQUEST.has(name)) continue;
  const path = join(HERE, file);
  if (!(await access(path).then(() => true, () => false))) {
    log(`\n## ${name}\n\nNot measured: ${file} is not in this build.`);
    continue;
  }
  log(`\n## ${name}\n`);
  const t0 = performance.now();
  try {
    const mod = (await import(pathToFileURL(path).href)) as Record<string, (o: object) => Promise<unknown>>;
    const logged = lines.length;
    const result = await mod[fn]!({ engine, pack: values.model, rounds, repeats: values.quick ? 2 : 5, quick: values.quick, log });
    report[name] = result;
    // Sections that only return figures get them printed as a table.
    if (lines.length === logged && result && typeof result === 'object') {
      log('| figure | value |\n| --- | --- |');
      for (const [k, v] of Object.entries(result as Record<string, unknown>)) {
        log(`| ${k} | ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : typeof v === 'object' ? JSON.stringify(v) : String(v)} |`);
      }
    }
  } catch (error) {
    log(`\nFAILED: ${(error as Error).stack ?? String(error)}`);
    report[name] = { error: String(error) };
  }
  log(`\n_(${name}: ${((performance.now() - t0) / 1000).toFixed(0)} s)_`);
}

/** REPORT.md as its header and `## name` sections. */
function splitSections(markdown: string): { head: string; sections: Map<string, string> } {
  const parts = markdown.split(/^(?=## \S+\n)/m);
  const sections = new Map<string, string>();
  for (const part of parts.slice(1)) sections.set(/^## (\S+)/.exec(part)![1]!, part.trimEnd());
  return { head: parts[0]!.trimEnd(), sections };
}

let markdown = `${lines.join('\n')}\n`;
let json: Record<string, unknown> = report;
if (only) {
  // keep the sections not run: replace the chosen ones in the existing report, in the report's order
  const old = splitSections(await readFile(join(HERE, 'REPORT.md'), 'utf8').catch(() => ''));
  const fresh = splitSections(markdown);
  for (const [name, text] of fresh.sections) old.sections.set(name, `${text}\n\n_(updated ${started.toISOString()} with \`--only ${only.join(',')}${values.quick ? ' --quick' : ''}\`)_`);
  const order = SECTIONS.map(([name]) => name).filter((name) => old.sections.has(name));
  markdown = `${old.head || fresh.head}\n\n${order.map((name) => old.sections.get(name)).join('\n\n')}\n`;
  const previous = JSON.parse(await readFile(join(HERE, 'report.json'), 'utf8').catch(() => '{}')) as Record<string, unknown>;
  json = { ...previous, ...Object.fromEntries(only.map((name) => [name, report[name]])), [`${only.join(',')}_run`]: { started: started.toISOString(), quick: values.quick, machine: report['machine'] } };
}
await writeFile(join(HERE, 'REPORT.md'), markdown);
await writeFile(join(HERE, 'report.json'), `${JSON.stringify(json, null, 2)}\n`);
console.log(`\nwrote ${join(HERE, 'REPORT.md')} and report.json`);
await closeSharedPool(); // before exit: onnxruntime aborts the process when live sessions are torn down
process.exit(0);
