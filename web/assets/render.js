// @ts-check
/**
 * The render page: txt2img / img2img batches and video renders as jobs (jobs.js picks the server's API),
 * progress per job with a Cancel button, and a gallery whose items download or load their settings back
 * into the form ("Reuse settings": image j of a batch brings its own seed).
 */
import { byId, describeError, keepTokenOnLinks } from './api.js';
import { ErrorList } from './errors.js';
import { renderImages, renderVideo } from './jobs.js';
import { bindRangeOutputs, fillForm, readParams } from './params.js';

const form = byId('render_form', HTMLFormElement);
const statusEl = byId('status', HTMLElement);
const jobsList = byId('jobs', HTMLUListElement);
const gallery = byId('gallery', HTMLUListElement);
const drop = byId('drop', HTMLElement);
const fileInput = byId('init_image', HTMLInputElement);
const preview = byId('init_preview', HTMLImageElement);
const videoInput = byId('video_file', HTMLInputElement);
const errors = new ErrorList(byId('errors', HTMLElement), form);

/** The img2img input as a data: URL. */
/** @type {string | undefined} */
let initImage;
let active = 0;
let galleryCount = 0;

function mode() {
  const checked = form.querySelector('input[name="mode"]:checked');
  return checked instanceof HTMLInputElement && checked.value === 'img2img' ? 'img2img' : 'txt2img';
}

function setStatus() {
  statusEl.dataset['state'] = active > 0 ? 'busy' : 'idle';
  statusEl.textContent = active > 0 ? `rendering (${active} job${active > 1 ? 's' : ''})` : 'ready';
}

/** @param {File} file */
async function useInitImage(file) {
  if (!file.type.startsWith('image/')) {
    errors.show(`${file.name} is not an image`);
    return;
  }
  initImage = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  preview.src = initImage ?? '';
  preview.hidden = false;
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
  li.append(label, bar, state, stop);
  jobsList.prepend(li);
  return {
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
 * Adds a result to the gallery.
 * @param {Blob} blob
 * @param {Record<string, unknown>} params
 * @param {{ kind: 'image' | 'video', mode: string }} meta
 */
function addToGallery(blob, params, meta) {
  galleryCount++;
  byId('gallery_empty', HTMLElement).hidden = true;
  const url = URL.createObjectURL(blob);
  const li = document.createElement('li');
  const prompt = typeof params['prompt'] === 'string' ? params['prompt'] : '';
  let media;
  if (meta.kind === 'video') {
    media = document.createElement('video');
    media.controls = true;
    media.src = url;
  } else {
    media = document.createElement('img');
    media.src = url;
    media.alt = prompt || 'rendered image';
  }
  const caption = document.createElement('p');
  const size = params['width'] && params['height'] ? ` · ${params['width']}×${params['height']}` : '';
  const steps = params['steps'] === 1 ? '1 step' : `${params['steps'] ?? '?'} steps`;
  caption.textContent = `${meta.mode} · seed ${JSON.stringify(params['seed'])}${size} · ${steps} — ${prompt}`;
  const actions = document.createElement('div');
  actions.className = 'actions';
  const download = document.createElement('a');
  download.href = url;
  download.download = meta.kind === 'video' ? `render-${galleryCount}.mp4` : `render-${galleryCount}.png`;
  download.textContent = 'Download';
  const reuse = document.createElement('button');
  reuse.type = 'button';
  reuse.textContent = 'Reuse settings';
  reuse.setAttribute('aria-label', `Reuse the settings of ${meta.kind} ${galleryCount}`);
  reuse.addEventListener('click', () => {
    fillForm(form, params);
    const radio = form.querySelector(`input[name="mode"][value="${meta.mode === 'img2img' ? 'img2img' : 'txt2img'}"]`);
    if (radio instanceof HTMLInputElement && meta.kind === 'image') radio.checked = true;
    syncMode();
    statusEl.textContent = `settings loaded (seed ${JSON.stringify(params['seed'])})`;
    byId('prompt', HTMLTextAreaElement).focus();
  });
  actions.append(download, reuse);
  li.append(media, caption, actions);
  gallery.prepend(li);
}

/**
 * Runs a job with its progress row and gallery output.
 * @param {string} title
 * @param {(handlers: import('./jobs.js').JobHandlers) => import('./jobs.js').RunningJob} start
 * @param {{ kind: 'image' | 'video', mode: string }} meta
 */
async function run(title, start, meta) {
  errors.clearFields();
  let results = 0;
  /** @type {import('./jobs.js').RunningJob | undefined} */
  let job;
  const row = jobRow(title, () => job?.cancel());
  active++;
  setStatus();
  job = start({
    progress: (fraction, text) => row.progress(fraction, text),
    result: (blob, params) => {
      results++;
      addToGallery(blob, params, meta);
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
    active--;
    setStatus();
  }
}

function imageParams() {
  const params = readParams(form);
  if (mode() === 'txt2img') delete params['strength'];
  return params;
}

function syncMode() {
  byId('init_section', HTMLElement).hidden = mode() !== 'img2img';
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
  const params = imageParams();
  void run(`${count} × ${m}`, (h) => renderImages({ params, count, ...(m === 'img2img' && initImage ? { initImage } : {}) }, h), { kind: 'image', mode: m });
});
byId('render_video', HTMLButtonElement).addEventListener('click', () => {
  const file = videoInput.files?.[0];
  if (!file) {
    errors.show('choose a video file to render');
    videoInput.focus();
    return;
  }
  const params = readParams(form);
  void run(`video ${file.name}`, (h) => renderVideo({ params, file }, h), { kind: 'video', mode: 'video' });
});
fileInput.addEventListener('change', () => {
  const file = fileInput.files?.[0];
  if (file) useInitImage(file).catch((e) => errors.show(describeError(e)));
});
for (const type of ['dragenter', 'dragover']) {
  drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
}
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const file = e.dataTransfer?.files[0];
  if (file) useInitImage(file).catch((err) => errors.show(describeError(err)));
});
syncMode();
setStatus();
