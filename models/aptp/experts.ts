/**
 * Prompt-routed pruned experts of a pack (APTP, REFERENCE §2): physically smaller dense UNets with the
 * pack UNet's I/O contract, a router over the pooled text embedding, and a manifest:
 *
 *   <pack>/experts/manifest.json  {experts: [{name, path, relative_macs, parameters, latency_ms, info?}],
 *                                  router?: "router.json", full: "<name>", info?}
 *   <pack>/experts/router.json    {type: "linear" | "codes", input_dim, weights, bias, codes?, expert_for_code?, info?}
 *   <pack>/experts/<name>/model.onnx
 *
 * Paths are relative to experts/. The full expert is the pack's own UNet (path "../unet/model.onnx") and
 * reuses its session. A pack without an experts/ folder has no experts (undefined); a pack with experts but
 * no router serves the largest expert within the budget.
 */
import { isAbsolute, join, relative, resolve } from 'node:path';
import { Unet } from '../components.ts';
import { ServiceError } from '../errors.ts';
import { exists, invalidField as invalid, isRecord, readJsonFile } from '../files.ts';
import type { ModelPack } from '../pack.ts';
import { parseRouter, type RouterWeights } from './router-file.ts';

export const EXPERTS_DIR = 'experts';
export const MANIFEST_FILE = 'manifest.json';

export interface Expert {
  readonly name: string;
  /** MACs of one UNet call relative to the full UNet (1 for the full model), at 16x16 latents. */
  readonly relativeMacs: number;
  readonly parameters: number;
  /** Measured UNet latency, batch 1, 128x128 images, CPU (ms); informative. */
  readonly latencyMs: number;
  readonly unet: Unet;
}

export interface ExpertSet {
  /** In manifest order. */
  readonly experts: readonly Expert[];
  /** The pack's own UNet as an expert. */
  readonly full: Expert;
  /** Routing with it: models/aptp/routing.ts (pickExpert). */
  readonly router: RouterWeights | undefined;
}

/** A manifest entry before its model is opened. */
export interface ManifestExpert {
  readonly name: string;
  readonly path: string;
  readonly relativeMacs: number;
  readonly parameters: number;
  readonly latencyMs: number;
}

export interface Manifest {
  readonly experts: readonly ManifestExpert[];
  readonly router: string | undefined;
  readonly full: string;
}

const MANIFEST_KEYS = new Set(['experts', 'router', 'full', 'info']);
const EXPERT_KEYS = new Set(['name', 'path', 'relative_macs', 'parameters', 'latency_ms', 'info']);
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** The full expert's path: the pack's own UNet. */
const FULL_PATH = '../unet/model.onnx';

function rejectUnknown(value: Record<string, unknown>, known: Set<string>, source: string, prefix: string): void {
  const extra = Object.keys(value).find((k) => !known.has(k));
  if (extra !== undefined) throw invalid(source, `${prefix}${extra}`, `is not a known field (known: ${[...known].join(', ')})`);
}

/** Validates manifest.json; every problem names the file and the field. */
export function parseManifest(value: unknown, source = `${EXPERTS_DIR}/${MANIFEST_FILE}`): Manifest {
  if (!isRecord(value)) throw new ServiceError('model_invalid', `${source}: must be a JSON object`);
  rejectUnknown(value, MANIFEST_KEYS, source, '');
  const list = value['experts'];
  if (!Array.isArray(list) || list.length === 0) throw invalid(source, 'experts', 'must be a non-empty array');
  const experts = list.map((e, i): ManifestExpert => {
    const at = `experts[${i}].`;
    if (!isRecord(e)) throw invalid(source, `experts[${i}]`, 'must be an object');
    rejectUnknown(e, EXPERT_KEYS, source, at);
    const { name, path } = e;
    if (typeof name !== 'string' || !NAME.test(name)) throw invalid(source, `${at}name`, `must be a name of letters, digits, _ . - (got ${JSON.stringify(name)})`);
    if (typeof path !== 'string' || path.length === 0 || isAbsolute(path)) throw invalid(source, `${at}path`, 'must be a path relative to the experts folder');
    const macs = e['relative_macs'];
    if (typeof macs !== 'number' || !(macs > 0 && macs <= 1 + 1e-6)) throw invalid(source, `${at}relative_macs`, `must be a number in (0, 1], got ${JSON.stringify(macs)}`);
    const parameters = e['parameters'];
    if (typeof parameters !== 'number' || !Number.isInteger(parameters) || parameters <= 0) throw invalid(source, `${at}parameters`, 'must be a positive integer');
    const latency = e['latency_ms'];
    if (typeof latency !== 'number' || !Number.isFinite(latency) || latency < 0) throw invalid(source, `${at}latency_ms`, 'must be a non-negative number');
    return { name, path, relativeMacs: macs, parameters, latencyMs: latency };
  });
  const seen = new Set<string>();
  experts.forEach((e, i) => {
    if (seen.has(e.name)) throw invalid(source, `experts[${i}].name`, `"${e.name}" is listed twice`);
    seen.add(e.name);
  });
  const full = value['full'];
  if (typeof full !== 'string') throw invalid(source, 'full', 'must name the full expert');
  if (!seen.has(full)) throw invalid(source, 'full', `"${full}" is not one of the experts (${experts.map((e) => e.name).join(', ')})`);
  const router = value['router'];
  if (router !== undefined && (typeof router !== 'string' || router.length === 0 || isAbsolute(router))) {
    throw invalid(source, 'router', 'must be a file name relative to the experts folder');
  }
  return { experts, router: router as string | undefined, full };
}

/** A path from the manifest, resolved and kept inside the experts folder (the full expert excepted). */
function resolveInside(dir: string, path: string, source: string, field: string): string {
  const full = resolve(dir, path);
  const rel = relative(dir, full);
  if (rel.startsWith('..') || isAbsolute(rel)) throw invalid(source, field, `"${path}" leaves the experts folder`);
  return full;
}

/** Checks that an expert UNet has the pack UNet's contract (same inputs, dtypes and fixed dims). */
function checkContract(expert: Unet, base: Unet, source: string, field: string): void {
  const problems: string[] = [];
  for (const spec of base.model.inputs) {
    const other = expert.model.input(spec.name);
    if (!other) problems.push(`has no input ${spec.name}`);
    else if (other.dtype !== spec.dtype || other.dims.length !== spec.dims.length || other.dims.some((d, i) => typeof d === 'number' && d > 0 && d !== spec.dims[i])) {
      problems.push(`input ${spec.name} is ${other.dtype} [${other.dims.join(', ')}], the pack's UNet has ${spec.dtype} [${spec.dims.join(', ')}]`);
    }
  }
  if (expert.outputName !== base.outputName) problems.push(`output ${expert.outputName} differs from the pack's ${base.outputName}`);
  if (problems.length > 0) throw invalid(source, field, `does not match the pack's UNet contract: ${problems.join('; ')}`);
}

/**
 * Loads a pack's experts: manifest, router and one session per pruned expert (the full expert reuses
 * pack.unet). Undefined when the pack has no experts/ folder. Malformed or missing files, wrong router
 * dimensions, an unknown full expert or a contract mismatch are model_invalid errors naming the file and field.
 */
export async function loadExperts(pack: ModelPack): Promise<ExpertSet | undefined> {
  const dir = join(pack.dir, EXPERTS_DIR);
  if (!(await exists(dir))) return undefined;
  // 1. manifest
  const source = `${EXPERTS_DIR}/${MANIFEST_FILE}`;
  const manifest = parseManifest(await readJsonFile(join(dir, MANIFEST_FILE), source), source);
  // 2. router, validated against the experts and the text encoder's pooled output
  let router: RouterWeights | undefined;
  if (manifest.router !== undefined) {
    const routerSource = `${EXPERTS_DIR}/${manifest.router}`;
    const path = resolveInside(dir, manifest.router, source, 'router');
    router = parseRouter(await readJsonFile(path, routerSource), manifest.experts.map((e) => e.name), routerSource);
    const pooled = pack.textEncoder.pooledName ? pack.textEncoder.model.output(pack.textEncoder.pooledName) : undefined;
    if (!pooled) throw new ServiceError('model_invalid', `${routerSource}: the pack's text encoder has no pooler_output for the router to read`, { field: 'input_dim' });
    const d = pooled.dims[pooled.dims.length - 1];
    if (typeof d === 'number' && d > 0 && d !== router.inputDim) {
      throw invalid(routerSource, 'input_dim', `is ${router.inputDim}, the text encoder's pooler_output has ${d}`);
    }
  }
  // 3. sessions, opened together; the full expert is the pack's UNet
  const unets = await Promise.all(
    manifest.experts.map(async (e, i): Promise<Unet> => {
      const field = `experts[${i}].path`;
      if (e.name === manifest.full) {
        if (resolve(dir, e.path) !== resolve(pack.dir, 'unet', 'model.onnx')) throw invalid(source, field, `of the full expert must be "${FULL_PATH}" (the pack's UNet)`);
        return pack.unet;
      }
      const path = resolveInside(dir, e.path, source, field);
      if (!(await exists(path))) throw invalid(source, field, `"${e.path}" does not exist`);
      // on the pack UNet's workers: an expert serves a stream in its place
      const unet = new Unet(await pack.sessions.open(path, 'unet', `experts/${e.name}`));
      checkContract(unet, pack.unet, source, field);
      return unet;
    }),
  );
  const experts = manifest.experts.map((e, i): Expert => Object.freeze({ name: e.name, relativeMacs: e.relativeMacs, parameters: e.parameters, latencyMs: e.latencyMs, unet: unets[i]! }));
  const full = experts.find((e) => e.name === manifest.full)!;
  return { experts, full, router };
}
