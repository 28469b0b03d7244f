// @ts-check
/**
 * Generation parameters (pipelines/params.ts) <-> form controls. A control's `name` is the parameter's
 * name; a few controls build one parameter together: prompt + prompt2 + prompt_weight (+ blend_prompts) make
 * a weighted prompt list, seed + seed2 + seed_weight (+ blend_seeds) a weighted seed list, budget_auto
 * makes the budget "auto", an empty expert or vae means none (the server's choice), and t_index_list is typed
 * as "10, 30". Both pages use these, each with the controls it has.
 */

/** @typedef {Record<string, unknown>} Params */

/** Number parameters read with valueAsNumber (an empty field leaves the parameter out). */
const NUMBER_FIELDS = ['guidance_scale', 'delta', 'steps', 'strength', 'width', 'height', 'similarity_threshold', 'max_skip_frames'];
/** Text and choice parameters read as they are. */
const TEXT_FIELDS = ['negative_prompt', 'guidance', 'prompt_blend', 'fit'];
/** Text parameters an empty control leaves out. */
const OPTIONAL_FIELDS = ['expert', 'vae'];
/** Parameters an update clears with null when their control is emptied (back to the server's choice). */
const CLEARABLE = ['width', 'height', 'expert', 'vae'];

/** @param {number} x */
const round3 = (x) => Math.round(x * 1000) / 1000;

/**
 * @param {HTMLFormElement} form
 * @param {string} name
 * @returns {HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement | undefined}
 */
export function control(form, name) {
  const el = form.elements.namedItem(name);
  return el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement ? el : undefined;
}

/** @param {HTMLFormElement} form @param {string} name */
function checked(form, name) {
  const el = control(form, name);
  return el instanceof HTMLInputElement && el.checked;
}

/** @param {HTMLFormElement} form @param {string} name */
function numberOf(form, name) {
  const el = control(form, name);
  if (!el || el.disabled || el.value.trim() === '') return undefined;
  const n = Number(el.value);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * "10, 30 40" -> [10, 30, 40]; empty -> undefined; anything else is passed on as text so the server's
 * message names the field.
 * @param {string} text
 * @returns {number[] | string | undefined}
 */
export function parseIndexList(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (parts.length === 0) return undefined;
  const numbers = parts.map(Number);
  return numbers.every(Number.isInteger) ? numbers : text;
}

/**
 * The parameters the form's controls describe (only those it has).
 * @param {HTMLFormElement} form
 * @returns {Params}
 */
export function readParams(form) {
  /** @type {Params} */
  const params = {};
  const prompt = control(form, 'prompt');
  if (prompt) {
    const second = control(form, 'prompt2');
    if (checked(form, 'blend_prompts') && second) {
      const w = numberOf(form, 'prompt_weight') ?? 0.5;
      params['prompt'] = [
        { text: prompt.value, weight: round3(1 - w) },
        { text: second.value, weight: round3(w) },
      ];
    } else {
      params['prompt'] = prompt.value;
    }
  }
  for (const name of TEXT_FIELDS) {
    const el = control(form, name);
    if (el && !el.disabled) params[name] = el.value;
  }
  for (const name of NUMBER_FIELDS) {
    const n = numberOf(form, name);
    if (n !== undefined) params[name] = n;
  }
  const seed = numberOf(form, 'seed');
  if (seed !== undefined) {
    const seed2 = numberOf(form, 'seed2');
    if (checked(form, 'blend_seeds') && seed2 !== undefined) {
      const w = numberOf(form, 'seed_weight') ?? 0.5;
      params['seed'] = [
        { seed, weight: round3(1 - w) },
        { seed: seed2, weight: round3(w) },
      ];
    } else {
      params['seed'] = seed;
    }
  }
  const indices = control(form, 't_index_list');
  if (indices) {
    const list = parseIndexList(indices.value);
    if (list !== undefined) params['t_index_list'] = list;
  }
  if (control(form, 'budget')) params['budget'] = checked(form, 'budget_auto') ? 'auto' : numberOf(form, 'budget') ?? 'auto';
  for (const name of OPTIONAL_FIELDS) {
    const el = control(form, name);
    if (el?.value) params[name] = el.value;
  }
  return params;
}

/**
 * Sets the controls from parameters (those the form has); blended prompts and seeds tick their boxes.
 * @param {HTMLFormElement} form
 * @param {Params} params
 */
export function fillForm(form, params) {
  /** @param {string} name @param {unknown} value */
  const set = (name, value) => {
    const el = control(form, name);
    if (el && value !== undefined && value !== null) el.value = String(value);
  };
  /** @param {string} name @param {boolean} on */
  const tick = (name, on) => {
    const el = control(form, name);
    if (el instanceof HTMLInputElement) el.checked = on;
  };
  const prompt = params['prompt'];
  if (typeof prompt === 'string') {
    set('prompt', prompt);
    tick('blend_prompts', false);
  } else if (Array.isArray(prompt) && prompt.length > 0) {
    const [a, b] = prompt;
    set('prompt', a.text);
    tick('blend_prompts', b !== undefined);
    if (b) {
      set('prompt2', b.text);
      set('prompt_weight', round3(b.weight / (a.weight + b.weight || 1)));
    }
  }
  for (const name of [...TEXT_FIELDS, ...NUMBER_FIELDS]) set(name, params[name]);
  const seed = params['seed'];
  if (typeof seed === 'number') {
    set('seed', seed);
    tick('blend_seeds', false);
  } else if (Array.isArray(seed) && seed.length > 0) {
    const [a, b] = seed;
    set('seed', a.seed);
    tick('blend_seeds', b !== undefined);
    if (b) {
      set('seed2', b.seed);
      set('seed_weight', round3(b.weight / (a.weight + b.weight || 1)));
    }
  }
  const budget = params['budget'];
  if (budget !== undefined) {
    tick('budget_auto', budget === 'auto');
    if (typeof budget === 'number') set('budget', budget);
  }
  for (const name of OPTIONAL_FIELDS) if (name in params || control(form, name)?.value) set(name, params[name] ?? '');
  const indices = params['t_index_list'];
  if (Array.isArray(indices)) set('t_index_list', indices.join(', '));
  else if (control(form, 't_index_list') && 't_index_list' in params) set('t_index_list', '');
  form.dispatchEvent(new Event('params-filled'));
}

/**
 * The entries of `desired` that differ from `known` (what a live `update` must send); an emptied size or
 * expert is sent as null. Clearing t_index_list cannot be sent as such: the server drops it when steps or
 * strength are sent.
 * @param {Params} desired
 * @param {Params} known
 * @returns {Params}
 */
export function diffParams(desired, known) {
  /** @type {Params} */
  const changed = {};
  for (const [key, value] of Object.entries(desired)) {
    if (JSON.stringify(value) !== JSON.stringify(known[key])) changed[key] = value;
  }
  if (known['t_index_list'] !== undefined && desired['t_index_list'] === undefined) {
    if (desired['steps'] !== undefined) changed['steps'] = desired['steps'];
    if (desired['strength'] !== undefined) changed['strength'] = desired['strength'];
  }
  // back to the server's choice (the input's shape, the router): cleared with null
  for (const key of CLEARABLE) if (known[key] !== undefined && desired[key] === undefined) changed[key] = null;
  return changed;
}

/**
 * Shows each range's value in its <output for="...">, and keeps doing so as it moves.
 * @param {HTMLFormElement} form
 */
export function bindRangeOutputs(form) {
  const update = () => {
    for (const out of form.querySelectorAll('output[for]')) {
      if (!(out instanceof HTMLOutputElement)) continue;
      const input = control(form, out.htmlFor.value);
      if (input) out.value = input.value;
    }
  };
  form.addEventListener('input', update);
  form.addEventListener('params-filled', update);
  update();
}
