/**
 * Experts benchmark (APTP, issue 6): per expert of a pack, UNet time relative to the full UNet (interleaved,
 * medians, batch 1), MACs relative, evaluator accuracy on the held-out prompts the router sends to it against
 * the full model on the same prompts, the routing distribution, and the mean MACs and accuracy under a budget.
 *   npx tsx test/bench/experts.ts [--model DIR] [--limit 256] [--steps 4] [--budget 0.6] [--rounds 200] [--threads 0] [--json out.json]
 * Renders follow the evaluate CLI (LCM, CFG full, guidance 2, the held-out caption's seed).
 */
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { loadExperts, type Expert, type ExpertSet } from '../../models/aptp/experts.ts';
import { pickExpert } from '../../models/aptp/routing.ts';
import { accuracy, loadHeldOut, loadSceneSpec, scoreImage, type Accuracy, type HeldOutItem, type Score } from '../../pipelines/evaluation/evaluator.ts';
import { DEFAULT_PACK_OPTIONS, EMBEDDED_PACK_DIR, type PackOptions } from '../../models/pack.ts';
import type { UnetRow } from '../../models/components.ts';
import { Engine } from '../../pipelines/engine.ts';
import { txt2img } from '../../pipelines/generate.ts';
import { tensorToRgb8 } from '../../pipelines/codecs/image.ts';
import { parseParams } from '../../pipelines/params.ts';
import { interleave, type Summary } from './stats.ts';
import { closeSharedPool } from '../../models/runtime/worker-pool.ts';

export interface ExpertsBenchOptions {
  /** A loaded engine (npm run bench passes one); else --model / the embedded pack is loaded. */
  readonly engine?: Engine;
  readonly model?: string;
  /** Session options for the pack and its experts (threads: 1 keeps timings steady on a shared machine). */
  readonly packOptions?: PackOptions;
  /** Held-out captions used (256 = all). */
  readonly limit?: number;
  readonly steps?: number;
  readonly guidanceScale?: number;
  /** The capped budget reported beside 'auto' (0.6). */
  readonly budget?: number;
  /** Timing rounds (each runs every expert once, batch 1). */
  readonly rounds?: number;
  readonly quick?: boolean;
  readonly log?: (line: string) => void;
}

/** Mean of the evaluator's four fractions (background, object colour, shape, position). */
export function overall(a: Accuracy): number {
  return (a.background + a.objectColor + a.shape + a.position) / 4;
}

export interface ExpertBenchRow {
  readonly name: string;
  readonly relativeMacs: number;
  readonly parameters: number;
  readonly time: Summary;
  readonly relativeTime: number;
  /** Held-out prompts the router sends here ('auto'). */
  readonly routed: number;
  readonly routedAccuracy: Accuracy | undefined;
  /** The full model on the same prompts. */
  readonly fullOnSame: Accuracy | undefined;
  /** This expert on every held-out prompt (forced with an override). */
  readonly allPrompts: Accuracy;
}

export interface BudgetResult {
  readonly budget: number | 'auto';
  readonly meanRelativeMacs: number;
  readonly accuracy: Accuracy;
  readonly fullAccuracy: Accuracy;
  /** overall(accuracy) - overall(full), in points (x100). */
  readonly deltaPoints: number;
  readonly distribution: Record<string, number>;
}

export interface ExpertsBenchResult {
  readonly images: number;
  readonly experts: readonly ExpertBenchRow[];
  readonly auto: BudgetResult;
  readonly capped: BudgetResult;
}

export async function benchExperts(options: ExpertsBenchOptions = {}): Promise<ExpertsBenchResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const packOptions = options.packOptions ?? DEFAULT_PACK_OPTIONS;
  const engine = options.engine ?? (await Engine.load(options.model ?? EMBEDDED_PACK_DIR, packOptions));
  const set = await loadExperts(engine.pack);
  if (!set) throw new Error(`model pack ${engine.pack.dir} has no experts/ folder`);
  const steps = options.steps ?? 4;
  const guidanceScale = options.guidanceScale ?? 2;
  const budget = options.budget ?? 0.6;
  const rounds = options.rounds ?? (options.quick ? 50 : 200);
  const spec = await loadSceneSpec(engine.pack.dir);
  const items = (await loadHeldOut(engine.pack.dir)).slice(0, options.limit ?? (options.quick ? 64 : undefined));
  const size = engine.size({});

  // 1. timing: every expert's UNet, batch 1, interleaved
  const context = (await engine.embed(items[0]?.caption ?? '')).hidden;
  const row: UnetRow = { sample: engine.noise({ seed: 1 }, 1, 1, size, false).rows[0]!, timestep: 499, context };
  const times = await interleave(
    Object.fromEntries(set.experts.map((e) => [e.name, async () => void (await e.unet.predict([row], size.latentHeight, size.latentWidth))])),
    rounds,
    10,
  );

  // 2. quality: each (prompt, expert) rendered at most once
  const scores = new Map<string, Score>();
  const render = async (item: HeldOutItem, expert: Expert): Promise<Score> => {
    const key = `${item.seed}\u0000${expert.name}`; // every expert renders every prompt once
    const hit = scores.get(key);
    if (hit) return hit;
    const params = parseParams({ prompt: item.caption, seed: item.seed % 2 ** 32, steps, guidance: 'full', guidance_scale: guidanceScale, expert: expert.name });
    const [img] = await txt2img(engine, params, 1);
    const score = scoreImage(spec, { data: tensorToRgb8(img!.data, img!.width, img!.height), width: img!.width, height: img!.height }, item.attributes);
    scores.set(key, score);
    return score;
  };
  const choices = await Promise.all(
    items.map(async (item) => {
      const pooled = (await engine.embed(item.caption)).pooled;
      return { item, auto: pickExpert(set, pooled, 'auto'), capped: pickExpert(set, pooled, budget) };
    }),
  );
  for (const c of choices) {
    for (const e of set.experts) await render(c.item, e);
  }
  const scoreOf = (item: HeldOutItem, e: Expert) => scores.get(`${item.seed}\u0000${e.name}`)!;
  const fullAccuracy = accuracy(items.map((item) => scoreOf(item, set.full)));
  const summary = (which: 'auto' | 'capped', b: number | 'auto'): BudgetResult => {
    const picked = choices.map((c) => c[which]);
    const acc = accuracy(choices.map((c) => scoreOf(c.item, c[which])));
    const distribution = Object.fromEntries(set.experts.map((e) => [e.name, picked.filter((p) => p === e).length]));
    return {
      budget: b,
      meanRelativeMacs: picked.reduce((s, e) => s + e.relativeMacs, 0) / Math.max(1, picked.length),
      accuracy: acc,
      fullAccuracy,
      deltaPoints: 100 * (overall(acc) - overall(fullAccuracy)),
      distribution,
    };
  };
  const full1 = times[set.full.name]!.median;
  const experts = set.experts.map((e): ExpertBenchRow => {
    const mine = choices.filter((c) => c.auto === e);
    return {
      name: e.name,
      relativeMacs: e.relativeMacs,
      parameters: e.parameters,
      time: times[e.name]!,
      relativeTime: times[e.name]!.median / full1,
      routed: mine.length,
      routedAccuracy: mine.length ? accuracy(mine.map((c) => scoreOf(c.item, e))) : undefined,
      fullOnSame: mine.length ? accuracy(mine.map((c) => scoreOf(c.item, set.full))) : undefined,
      allPrompts: accuracy(items.map((item) => scoreOf(item, e))),
    };
  });
  const result: ExpertsBenchResult = {
    images: items.length,
    experts,
    auto: summary('auto', 'auto'),
    capped: summary('capped', budget),
  };
  report(result, set, { steps, guidanceScale, rounds, threads: packOptions.threads }, log);
  return result;
}

const pct = (x: number) => (100 * x).toFixed(1);

function report(r: ExpertsBenchResult, set: ExpertSet, o: { steps: number; guidanceScale: number; rounds: number; threads: number }, log: (line: string) => void): void {
  log(`Held-out prompts: ${r.images}; LCM ${o.steps} steps, CFG full, guidance ${o.guidanceScale}; accuracy = evaluator (background / object colour / shape / position, and their mean), in %.`);
  log(`UNet time: batch 1, 16x16 latents, ${o.rounds} interleaved rounds, median (p10-p90), ${o.threads || 'default'} intra-op thread(s). Router: ${set.router ? set.router.type : 'none'}.\n`);
  log('| expert | MACs rel. | params | UNet ms | time rel. | routed (auto) | accuracy routed | full on same prompts | accuracy on all prompts |');
  log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const e of r.experts) {
    const acc = (a: Accuracy | undefined) => (a ? `${pct(overall(a))} (${pct(a.background)}/${pct(a.objectColor)}/${pct(a.shape)}/${pct(a.position)})` : '-');
    log(
      `| ${e.name} | ${e.relativeMacs.toFixed(3)} | ${e.parameters} | ${e.time.median.toFixed(2)} (${e.time.p10.toFixed(2)}-${e.time.p90.toFixed(2)}) | ${e.relativeTime.toFixed(2)} | ${e.routed} (${pct(e.routed / Math.max(1, r.images))}%) | ${acc(e.routedAccuracy)} | ${acc(e.fullOnSame)} | ${acc(e.allPrompts)} |`,
    );
  }
  log('');
  for (const b of [r.auto, r.capped]) {
    const dist = Object.entries(b.distribution)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    log(
      `- budget ${b.budget}: mean MACs per image ${b.meanRelativeMacs.toFixed(3)} of the full UNet; accuracy ${pct(overall(b.accuracy))}% vs full ${pct(overall(b.fullAccuracy))}% (${b.deltaPoints >= 0 ? '+' : ''}${b.deltaPoints.toFixed(1)} points); experts: ${dist}`,
    );
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: EMBEDDED_PACK_DIR },
      limit: { type: 'string' },
      steps: { type: 'string', default: '4' },
      budget: { type: 'string', default: '0.6' },
      rounds: { type: 'string', default: '200' },
      threads: { type: 'string', default: '0' },
      json: { type: 'string' },
    },
  });
  const result = await benchExperts({
    model: values.model,
    limit: values.limit ? Number(values.limit) : undefined,
    steps: Number(values.steps),
    budget: Number(values.budget),
    rounds: Number(values.rounds),
    packOptions: { ...DEFAULT_PACK_OPTIONS, threads: Number(values.threads) },
  });
  if (values.json) await writeFile(values.json, `${JSON.stringify(result, null, 2)}\n`);
  await closeSharedPool();
  process.exit(0);
}
