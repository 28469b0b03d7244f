// @ts-check
/**
 * The render page: txt2img / img2img batches and video renders as jobs (jobs.js picks the server's API),
 * progress per job with a Cancel button, and a gallery that keeps the work: on load it lists the server's jobs
 * (a page at a time), newest job first and each job's images in seed order. A click on an image opens a
 * full-size viewer with its parameters; "Reuse settings" (there or on the image) loads them into the form, as
 * does an image dropped on "Load settings" (its parameters text, read by the server). Deleting a finished job
 * removes it and its files from the server.
 */
import { byId, describeError, keepTokenOnLinks, serverUrl } from './api.js';
import { ErrorList } from './errors.js';
import { deleteJob, imageParams, imageSettings, listJobs, renderImages, renderVideo } from './jobs.js';
import { bindRangeOutputs, fillForm, readParams } from './params.js';

const form = byId('render_form', HTMLFormElement);
const statusEl = byId('status', HTMLElement);
const jobsList = byId('jobs', HTMLUListElement);
const gallery = byId('gallery', HTMLOListElement);
const drop = byId('drop', HTMLElement);
const fileInput = byId('init_image', HTMLInputElement);
const preview = byId('init_preview', HTMLImageElement);
const videoInput = byId('video_file', HTMLInputElement);
const settingsDrop = byId('settings_drop', HTMLElement);
const settingsInput = byId('settings_file', HTMLInputElement);
const moreJobs = byId('more_jobs', HTMLButtonElement);
const viewer = byId('viewer', HTMLDialogElement);
const errors = new ErrorList(byId('errors', HTMLElement), form);

/**
 * @typedef {Record<string, unknown>} Params
 * @typedef {{ kind: 'image' | 'video', mode: string }} Meta
 * @typedef {{ url: string, params: Params, meta: Meta, name: string, notes: string[] }} Item
 */

/** The img2img input as a data: URL. */
/** @type {string | undefined} */
let initImage;
let active = 0;
let galleryCount = 0;
/** The next page of the server's jobs (null: no more). */
/** @type {string | null} */
let nextCursor = null;
/** The item the viewer shows. */
/** @type {Item | undefined} */
let viewing;

function mode() {
  const checked = form.querySelector('input[name="mode"]:checked');
  return checked instanceof HTMLInputElement && checked.value === 'img2img' ? 'img2img' : 'txt2img';
}

function setStatus() {
  statusEl.dataset['state'] = active > 0 ? 'busy' : 'idle';
  statusEl.textContent = active > 0 ? `rendering (${active} job${active > 1 ? 's' : ''})` : 'ready';
}

/** @param {File} file */
function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** @param {File} file */
async function useInitImage(file) {
  if (!file.type.startsWith('image/')) {
    errors.show(`${file.name} is not an image`);
    return;
  }
  initImage = /** @type {string} */ (await readDataUrl(file));
  preview.src = initImage;
  preview.hidden = false;
}

// parameters the shared form helpers (params.js) do not know: adapters as "name:weight, ..." and the strict flags

/** @returns {Params} */
function extraParams() {
  /** @type {Params} */
  const out = {};
  const text = byId('adapters', HTMLInputElement).value.trim();
  if (text) {
    out['adapters'] = text.split(/\s*,\s*/).filter(Boolean).map((part) => {
      const at = part.lastIndexOf(':');
      return at < 0 ? { name: part, weight: 1 } : { name: part.slice(0, at), weight: Number(part.slice(at + 1)) };
    });
  }
  for (const flag of ['strict_guidance', 'strict_size']) if (byId(flag, HTMLInputElement).checked) out[flag] = true;
  return out;
}

/** @param {Params} params */
function fillExtras(params) {
  const adapters = Array.isArray(params['adapters']) ? params['adapters'] : [];
  byId('adapters', HTMLInputElement).value = adapters.map((a) => `${a.name}:${a.weight}`).join(', ');
  for (const flag of ['strict_guidance', 'strict_size']) byId(flag, HTMLInputElement).checked = params[flag] === true;
  const budget = params['budget'];
  if (adapters.length > 0 || (budget !== undefined && budget !== 1) || params['expert'] || params['vae'] || params['t_index_list'] || params['strict_guidance'] || params['strict_size']) {
    byId('more_settings', HTMLDetailsElement).open = true;
  }
}

/**
 * Loads an image's settings into the form: the form's own defaults first (so nothing of the previous settings
 * stays behind), then the image's; the image count is kept.
 * @param {Params} params
 * @param {string} imageMode
 * @param {string} what said in the status line
 */
function reuse(params, imageMode, what) {
  const count = byId('count', HTMLInputElement).value;
  form.reset();
  byId('count', HTMLInputElement).value = count;
  fillForm(form, params);
  fillExtras(params);
  const radio = form.querySelector(`input[name="mode"][value="${imageMode === 'img2img' ? 'img2img' : 'txt2img'}"]`);
  if (radio instanceof HTMLInputElement) radio.checked = true;
  syncMode();
  statusEl.textContent = `settings loaded from ${what} (seed ${JSON.stringify(params['seed'])})`;
  byId('prompt', HTMLTextAreaElement).focus();
}

/**
 * A row in the progress list; returns its controls.
 * @param {string} title
 * @param {() => void} cancel
 */
function jobRow(title, cancel) {
  jobsList.querySelector('.empty')?.remove();
  const li = document.createElement('li');
  li.className = 'progress';
  const label = document.createElement('span');
  label.textContent = title;
  const bar = document.createElement('progress');
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute('aria-label', `progress of ${title}`);
  const state = document.createElement('span');
  state.className = 'muted';
  state.textContent = 'queued';
  const stop = document.createElement('button');
  stop.type = 'button';
  stop.textContent = 'Cancel';
  stop.addEventListener('click', cancel);
  const notes = document.createElement('p');
  notes.className = 'hint notes';
  li.append(label, bar, state, stop, notes);
  jobsList.prepend(li);
  return {
    /** @param {string[]} list where the render differs from the settings (the server's notes) */
    notes(list) {
      notes.textContent = list.join(' · ');
    },
    /** @param {number} fraction @param {string} text */
    progress(fraction, text) {
      bar.value = fraction;
      state.textContent = `${Math.round(fraction * 100)} % · ${text}`;
    },
    /** @param {string} text */
    finish(text) {
      stop.remove();
      state.textContent = text;
    },
  };
}

/**
 * A job's place in the gallery: a heading (with Delete once it is finished) over its images in seed order.
 * New jobs go first; a page of older jobs goes last.
 * @param {string} title
 * @param {'first' | 'last'} where
 */
function jobGroup(title, where) {
  byId('gallery_empty', HTMLElement).hidden = true;
  const group = document.createElement('li');
  group.className = 'job-group';
  const head = document.createElement('div');
  head.className = 'job-head';
  const label = document.createElement('span');
  label.textContent = title;
  head.append(label);
  const items = document.createElement('ul');
  items.className = 'gallery';
  group.append(head, items);
  if (where === 'first') gallery.prepend(group);
  else gallery.append(group);
  return {
    /** @param {Item} item */
    add: (item) => items.append(galleryItem(item)),
    /**
     * The job finished on the server: it can be deleted there.
     * @param {string} id
     */
    deletable(id) {
      group.dataset['job'] = id;
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.textContent = 'Delete';
      remove.setAttribute('aria-label', `Delete job ${title} and its files`);
      remove.addEventListener('click', async () => {
        remove.disabled = true;
        try {
          await deleteJob(id);
          group.remove();
          byId('gallery_empty', HTMLElement).hidden = gallery.children.length > 0;
          statusEl.textContent = 'job deleted';
        } catch (e) {
          remove.disabled = false;
          errors.show(describeError(e));
        }
      });
      head.append(remove);
    },
  };
}

/** @param {Params} params @param {Meta} meta */
function caption(params, meta) {
  const prompt = promptText(params);
  const size = params['width'] && params['height'] ? ` · ${params['width']}×${params['height']}` : '';
  const steps = params['steps'] === 1 ? '1 step' : `${params['steps'] ?? '?'} steps`;
  return `${meta.mode} · seed ${JSON.stringify(params['seed'])}${size} · ${steps} — ${prompt}`;
}

/** @param {Params} params */
function promptText(params) {
  const p = params['prompt'];
  if (typeof p === 'string') return p;
  return Array.isArray(p) ? p.map((part) => `${part.text} (${part.weight})`).join(' + ') : '';
}

/**
 * An image or video of the gallery: a thumbnail that opens the viewer, its caption, Download and Reuse settings.
 * @param {Item} item
 */
function galleryItem(item) {
  galleryCount++;
  const li = document.createElement('li');
  const prompt = promptText(item.params);
  let media;
  if (item.meta.kind === 'video') {
    media = document.createElement('video');
    media.controls = true;
    media.preload = 'metadata';
    media.src = item.url;
  } else {
    const img = document.createElement('img');
    img.src = item.url;
    img.alt = prompt || 'rendered image';
    img.loading = 'lazy';
    media = document.createElement('button');
    media.type = 'button';
    media.className = 'thumb';
    media.setAttribute('aria-label', `View ${item.name} full size`);
    media.append(img);
    media.addEventListener('click', () => openViewer(item));
  }
  const text = document.createElement('p');
  text.textContent = caption(item.params, item.meta);
  const actions = document.createElement('div');
  actions.className = 'actions';
  const download = document.createElement('a');
  download.href = item.url;
  download.download = item.name;
  download.textContent = 'Download';
  const again = document.createElement('button');
  again.type = 'button';
  again.textContent = 'Reuse settings';
  again.setAttribute('aria-label', `Reuse the settings of ${item.meta.kind} ${galleryCount}`);
  again.addEventListener('click', () => reuse(item.params, item.meta.kind === 'image' ? item.meta.mode : 'txt2img', `${item.meta.kind} ${item.name}`));
  actions.append(download, again);
  li.append(media, text, actions);
  return li;
}

/** Parameters that only streams and videos use (not shown for an image). */
const STREAM_ONLY = ['similarity_threshold', 'max_skip_frames', 'frame_buffer_size'];

/** @param {Item} item */
function openViewer(item) {
  viewing = item;
  byId('viewer_title', HTMLElement).textContent = `${item.meta.mode} · seed ${JSON.stringify(item.params['seed'])}`;
  const img = byId('viewer_image', HTMLImageElement);
  img.src = item.url;
  img.alt = promptText(item.params) || 'rendered image';
  const download = byId('viewer_download', HTMLAnchorElement);
  download.href = item.url;
  download.download = item.name;
  const list = byId('viewer_params', HTMLElement);
  list.replaceChildren();
  const rows = Object.entries(item.params).filter(([key, value]) => !(value === undefined || value === false || (Array.isArray(value) && value.length === 0) || (item.meta.kind === 'image' && STREAM_ONLY.includes(key))));
  if (item.notes.length > 0) rows.push(['notes', item.notes.join(' · ')]);
  for (const [key, value] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = key;
    const dd = document.createElement('dd');
    dd.textContent = key === 'prompt' ? promptText(item.params) : typeof value === 'string' ? value : JSON.stringify(value);
    list.append(dt, dd);
  }
  viewer.showModal();
}

/** A job as the server lists it: its group and its images (image j drawn with seed + j). @param {any} job */
function addServerJob(job) {
  const params = job.request?.params ?? {};
  const video = job.kind === 'video';
  const itemMode = video ? 'video' : job.request?.init_file ? 'img2img' : 'txt2img';
  const urls = Array.isArray(job.urls) ? job.urls : [];
  const when = new Date(job.created_at).toLocaleString();
  const group = jobGroup(`${itemMode} · ${urls.length} ${video ? 'video' : `image${urls.length === 1 ? '' : 's'}`} · ${job.status} · ${when}`, 'last');
  for (const [j, url] of urls.entries()) {
    const name = String(url).split('/').pop() ?? `result-${j}`;
    group.add({ url: serverUrl(url), params: video ? params : imageParams(params, j), meta: { kind: video ? 'video' : 'image', mode: itemMode }, name, notes: job.notes ?? [] });
  }
  if (['succeeded', 'failed', 'canceled'].includes(job.status)) group.deletable(job.id);
}

/** Lists the next page of the server's jobs under the ones shown. */
async function loadJobs() {
  moreJobs.disabled = true;
  try {
    const page = await listJobs(nextCursor);
    if (!page) return; // a server without the job API keeps nothing to list
    for (const job of page.jobs) addServerJob(job);
    nextCursor = page.next_cursor;
  } catch (e) {
    errors.show(`cannot list the server's jobs: ${describeError(e)}`);
  } finally {
    moreJobs.disabled = false;
    moreJobs.hidden = !nextCursor;
  }
}

/**
 * Runs a job with its progress row and its place in the gallery.
 * @param {string} title
 * @param {(handlers: import('./jobs.js').JobHandlers) => import('./jobs.js').RunningJob} start
 * @param {Meta} meta
 */
async function run(title, start, meta) {
  errors.clearFields();
  let results = 0;
  /** @type {import('./jobs.js').RunningJob | undefined} */
  let job;
  /** @type {string | null} */
  let id = null;
  /** @type {string[]} */
  let notes = [];
  const row = jobRow(title, () => job?.cancel());
  const group = jobGroup(title, 'first');
  active++;
  setStatus();
  job = start({
    started: (info) => {
      id = info.id;
      notes = info.notes;
      row.notes(notes);
    },
    progress: (fraction, text) => row.progress(fraction, text),
    result: (blob, params) => {
      results++;
      const ext = meta.kind === 'video' ? 'mp4' : 'png';
      group.add({ url: URL.createObjectURL(blob), params, meta, name: `render-${galleryCount + 1}.${ext}`, notes });
    },
  });
  try {
    await job.done;
    row.finish(`done · ${results} ${meta.kind}${results === 1 ? '' : 's'}`);
  } catch (e) {
    const message = describeError(e);
    row.finish(message === 'canceled' ? 'canceled' : `failed: ${message}`);
    if (message !== 'canceled') errors.show(e instanceof Error ? e.message : message, /** @type {any} */ (e));
  } finally {
    if (id) group.deletable(id);
    active--;
    setStatus();
  }
}

function formParams() {
  const params = { ...readParams(form), ...extraParams() };
  if (mode() === 'txt2img') delete params['strength'];
  return params;
}

function syncMode() {
  byId('init_section', HTMLElement).hidden = mode() !== 'img2img';
}

/** @param {File} file */
async function settingsFrom(file) {
  try {
    const found = await imageSettings(file);
    if (!found.params) {
      errors.show(`${file.name} carries no generation parameters`);
      return;
    }
    reuse(found.params, found.mode ?? 'txt2img', file.name);
    if (found.notes.length > 0) statusEl.textContent += ` · ${found.notes.join(' · ')}`;
  } catch (e) {
    errors.show(`${file.name}: ${describeError(e)}`, /** @type {any} */ (e));
  }
}

/**
 * A drop zone: a dragged file is highlighted over it and handed to `use` when dropped.
 * @param {HTMLElement} zone
 * @param {(file: File) => Promise<void>} use
 */
function dropZone(zone, use) {
  for (const type of ['dragenter', 'dragover']) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add('over');
    });
  }
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const file = e.dataTransfer?.files[0];
    if (file) use(file).catch((err) => errors.show(describeError(err)));
  });
}

// wiring
keepTokenOnLinks();
bindRangeOutputs(form);
form.addEventListener('change', (e) => {
  if (e.target instanceof HTMLInputElement && e.target.name === 'mode') syncMode();
});
form.addEventListener('submit', (e) => {
  e.preventDefault();
  const count = byId('count', HTMLInputElement).valueAsNumber || 1;
  const m = mode();
  if (m === 'img2img' && !initImage) {
    errors.show('choose or drop an input image for image to image');
    fileInput.focus();
    return;
  }
  const params = formParams();
  void run(`${count} × ${m}`, (h) => renderImages({ params, count, ...(m === 'img2img' && initImage ? { initImage } : {}) }, h), { kind: 'image', mode: m });
});
byId('render_video', HTMLButtonElement).addEventListener('click', () => {
  const file = videoInput.files?.[0];
  if (!file) {
    errors.show('choose a video file to render');
    videoInput.focus();
    return;
  }
  const params = { ...readParams(form), ...extraParams() };
  void run(`video ${file.name}`, (h) => renderVideo({ params, file }, h), { kind: 'video', mode: 'video' });
});
fileInput.addEventListener('change', () => {
  const file = fileInput.files?.[0];
  if (file) useInitImage(file).catch((e) => errors.show(describeError(e)));
});
settingsInput.addEventListener('change', () => {
  const file = settingsInput.files?.[0];
  if (file) void settingsFrom(file);
  settingsInput.value = '';
});
dropZone(drop, useInitImage);
dropZone(settingsDrop, settingsFrom);
moreJobs.addEventListener('click', () => void loadJobs());
byId('viewer_close', HTMLButtonElement).addEventListener('click', () => viewer.close());
byId('viewer_reuse', HTMLButtonElement).addEventListener('click', () => {
  viewer.close();
  if (viewing) reuse(viewing.params, viewing.meta.mode, `image ${viewing.name}`);
});
syncMode();
setStatus();
void loadJobs();
