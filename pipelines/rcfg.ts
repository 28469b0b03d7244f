/**
 * Residual classifier-free guidance (StreamDiffusion §3.3, REFERENCE §1). A tagged union, one case each:
 * - none:       eps = eps_c                                          (N UNet rows)
 * - full:       eps = eps_u + gamma (eps_c - eps_u), eps_u from the UNet (2N rows)
 * - self:       eps_u = delta * stock_noise, no extra rows            (N rows)
 * - initialize: like self, but a frame's first step runs one real uncond row whose prediction
 *               seeds its stock noise                                  (N + 1 rows for one new frame)
 * The stock noise is a per-row residual estimate of the noise; after each step it is carried to the row's
 * next step: stock' = noise[next] + LCMstep(eps, beta_t * stock) * alpha_next / beta_next.
 */
import { lcmStep, type StepCoefficients } from './schedulers/lcm.ts';

export type Guidance =
  | { readonly kind: 'none' }
  | { readonly kind: 'full'; readonly scale: number }
  | { readonly kind: 'self'; readonly scale: number; readonly delta: number }
  | { readonly kind: 'initialize'; readonly scale: number; readonly delta: number };

export type GuidanceKind = Guidance['kind'];
export const GUIDANCE_KINDS = ['none', 'full', 'self', 'initialize'] as const satisfies readonly GuidanceKind[];

/** StreamDiffusion's defaults: RCFG self (no extra UNet rows), gamma 1.2, delta 1.0. */
export const DEFAULT_GUIDANCE = Object.freeze({ kind: 'self', scale: 1.2, delta: 1.0 } as const);

/** Builds a guidance value from user-facing fields. */
export function makeGuidance(kind: GuidanceKind, scale: number = DEFAULT_GUIDANCE.scale, delta: number = DEFAULT_GUIDANCE.delta): Guidance {
  switch (kind) {
    case 'none':
      return { kind };
    case 'full':
      return { kind, scale };
    case 'self':
    case 'initialize':
      return { kind, scale, delta };
  }
}

/** Guidance with gamma <= 1 cannot change eps (eps_u + 1 (eps_c - eps_u) = eps_c): skip its extra rows. */
function effective(g: Guidance): Guidance {
  return g.kind !== 'none' && g.scale <= 1 ? { kind: 'none' } : g;
}

/** Whether the guidance reads and updates stock noise. */
export function usesStockNoise(g: Guidance): boolean {
  const e = effective(g);
  return e.kind === 'self' || e.kind === 'initialize';
}

/** Whether a row at denoising step `step` needs a real unconditional UNet row. */
export function needsUncondRow(g: Guidance, step: number): boolean {
  const e = effective(g);
  switch (e.kind) {
    case 'none':
    case 'self':
      return false;
    case 'full':
      return true;
    case 'initialize':
      return step === 0;
  }
}

/**
 * Guided noise for one row. `uncond` is the UNet's unconditional prediction when needsUncondRow said so.
 * Returns eps and the stock noise the row continues with (initialize replaces it at step 0).
 */
export function guide(
  g: Guidance,
  cond: Float32Array,
  uncond: Float32Array | undefined,
  stock: Float32Array | undefined,
): { eps: Float32Array; stock: Float32Array | undefined } {
  const e = effective(g);
  switch (e.kind) {
    case 'none':
      return { eps: cond, stock };
    case 'full':
      return { eps: mix(e.scale, requireArray(uncond, 'full guidance needs an unconditional prediction'), 1, cond), stock };
    case 'self':
    case 'initialize': {
      // initialize: the real uncond prediction becomes this row's stock noise (original: stock[0] = pred[0]).
      const s = requireArray(uncond ?? stock, `${e.kind} guidance needs stock noise`);
      return { eps: mix(e.scale, s, e.delta, cond), stock: s };
    }
  }
}

/** eps_u + gamma (eps_c - eps_u) with eps_u = delta * u. */
function mix(gamma: number, u: Float32Array, delta: number, cond: Float32Array): Float32Array {
  const out = new Float32Array(cond.length);
  for (let i = 0; i < cond.length; i++) {
    const eu = delta * u[i]!;
    out[i] = eu + gamma * (cond[i]! - eu);
  }
  return out;
}

/**
 * Stock noise for the row's next step (k -> k+1), REFERENCE §1:
 * d = LCMstep(eps, beta_k * stock) * alpha_{k+1} / beta_{k+1}  (factor 1 after the last step),
 * stock' = nextNoise + d, where nextNoise is the initial noise of the step the row goes to.
 */
export function nextStockNoise(
  c: StepCoefficients,
  k: number,
  eps: Float32Array,
  stock: Float32Array,
  nextNoise: Float32Array,
): Float32Array {
  const scaledStock = new Float32Array(stock.length);
  const beta = c.beta[k]!;
  for (let i = 0; i < stock.length; i++) scaledStock[i] = beta * stock[i]!;
  const d = lcmStep(c, k, scaledStock, eps);
  const last = k === c.timesteps.length - 1;
  const factor = last ? 1 : c.alpha[k + 1]! / c.beta[k + 1]!;
  const out = new Float32Array(stock.length);
  for (let i = 0; i < out.length; i++) out[i] = nextNoise[i]! + factor * d[i]!;
  return out;
}

function requireArray(a: Float32Array | undefined, message: string): Float32Array {
  if (a === undefined) throw new Error(message);
  return a;
}
