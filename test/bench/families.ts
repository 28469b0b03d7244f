/**
 * Full-size model families on this machine (`npm run bench -- --only families`): for SD 1.5, SD-Turbo and
 * SDXL-Turbo at their published widths, fp32 and fp16, each in its own process (family-child.ts): load time,
 * peak RSS, seconds per 512x512 1-step frame, a batch render, /health latency while frames run, and RSS with
 * a second stream (sessions are shared between streams).
 * Packs are read from FAMILIES_FULL_DIR/<family>-<fp32|fp16> (default /tmp/families-full) and made there on
 * demand, one family at a time: models/train/families/build.py --width full writes the fp32 pack (Debian's
 * python3-torch; minutes to an hour and GBs each), fp16.py converts it tensor by tensor. A pack made here is
 * deleted after it is measured unless FAMILIES_KEEP=1 (the disk is shared).
 * FAMILIES=sd15,sd-turbo limits the families; FAMILIES_PRECISIONS=fp32 the precisions; packs not measured keep
 * their last figures from report.json (with the date they were measured).
 */
import { spawn, spawnSync } from 'node:child_process';
import { access, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmt } from './stats.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const TOOLS = join(HERE, '..', '..', 'models', 'train', 'families');
const ROOT = process.env['FAMILIES_FULL_DIR'] ?? '/tmp/families-full';
const FAMILIES = (process.env['FAMILIES'] ?? 'sd15,sd-turbo,sdxl-turbo').split(',');
const PRECISIONS = (process.env['FAMILIES_PRECISIONS'] ?? 'fp32,fp16').split(',');

export interface FamiliesBenchOptions {
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

const exists = (p: string) => access(p).then(() => true, () => false);

/** The fp32 pack from the builder, or the fp16 one converted from it. */
function make(family: string, precision: string, out: string, fp32: string, log: (line: string) => void): boolean {
  const t0 = performance.now();
  const args = precision === 'fp16' ? [join(TOOLS, 'fp16.py'), fp32, out] : [join(TOOLS, 'build.py'), '--family', family, '--width', 'full', '--fp32', '--out', out];
  const r = spawnSync('nice', ['-n', '5', '/usr/bin/python3', ...args], {
    encoding: 'utf8',
    env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' },
  });
  if (r.status !== 0) {
    log(`- ${family} ${precision}: build failed: ${(r.stderr || r.stdout || String(r.error)).split('\n').filter(Boolean).slice(-3).join(' / ')}`);
    return false;
  }
  log(`- ${family} ${precision}: made in ${fmt((performance.now() - t0) / 1000, 0)} s`);
  return true;
}

/** Runs the child; resolves with its JSON line, or an error with the last lines it printed (e.g. killed for memory). */
function measure(dir: string, frames: number): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, 'family-child.ts'), dir, String(frames)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code, signal) => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line) resolve(JSON.parse(line) as Record<string, unknown>);
      else resolve({ error: `exit ${code ?? signal}: ${out.split('\n').filter(Boolean).slice(-2).join(' / ').slice(0, 300)}` });
    });
  });
}

export async function benchFamilies({ quick, log }: FamiliesBenchOptions): Promise<Record<string, unknown>> {
  const frames = quick ? 2 : 4;
  const results: Record<string, unknown> = {};
  log(`Full-size packs (random weights, the published architectures), 2 intra-op threads, ${frames} stream frames each (the first not counted).\n`);
  const built: string[] = [];
  const keep = process.env['FAMILIES_KEEP'] === '1';
  for (const family of FAMILIES) {
    const fp32 = join(ROOT, `${family}-fp32`);
    const needFp32 = PRECISIONS.includes('fp32') || !(await exists(join(ROOT, `${family}-fp16`, 'model_index.json')));
    for (const precision of ['fp32', 'fp16']) {
      const dir = join(ROOT, `${family}-${precision}`);
      // fp32 is made when asked for or as the source of a missing fp16 pack; fp16 only when asked for
      if (precision === 'fp32' ? !needFp32 : !PRECISIONS.includes('fp16')) continue;
      if (!(await exists(join(dir, 'model_index.json')))) {
        if (!make(family, precision, dir, fp32, log)) break;
        built.push(dir);
      }
      if (PRECISIONS.includes(precision)) results[`${family}-${precision}`] = { ...(await measure(dir, frames)), measured: new Date().toISOString().slice(0, 10) };
    }
    if (!keep) for (const dir of built.splice(0)) await rm(dir, { recursive: true, force: true });
  }
  const previous = (JSON.parse(await readFile(join(HERE, 'report.json'), 'utf8').catch(() => '{}')) as Record<string, Record<string, unknown>>)['families'] ?? {};
  for (const [name, r] of Object.entries(previous)) if (!(name in results) && typeof r === 'object' && r !== null && !('error' in r) && name !== 'run') results[name] = r;
  log('\n| pack | measured | load s (CPU s) | peak RSS MiB | RSS 1 / 2 streams MiB | first frame s | s/frame (CPU s) | batch txt2img s | /health p50 / max ms |');
  log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const [name, r] of Object.entries(results) as [string, Record<string, number | string>][]) {
    if (r['error']) {
      log(`| ${name} | ${String(r['measured'] ?? '')} | failed: ${String(r['error'])} |||||||`);
      continue;
    }
    const n = (k: string, d = 1) => fmt(Number(r[k]), d);
    log(`| ${name} | ${String(r['measured'] ?? '')} | ${n('load_seconds')} (${n('load_cpu_seconds')}) | ${n('peak_rss_mib', 0)} | ${n('rss_one_stream_mib', 0)} / ${n('rss_two_streams_mib', 0)} | ${n('first_frame_seconds')} | ${n('frame_seconds')} (${n('frame_cpu_seconds')}) | ${n('batch_txt2img_seconds')} | ${n('health_ms_p50', 0)} / ${n('health_ms_max', 0)} |`);
  }
  return results;
}
