// @ts-check
/**
 * The live page: a webcam or screen in, the stylised stream out, every generation parameter live.
 * 1. capture frames from the <video> in the camera's own shape at about the stream's size (the server picks
 *    the output size from that shape unless a size is set) and send them as JPEG, at most two outstanding
 *    (one in the model, one waiting) so the server's latest-frame-wins slot is fed without a queue;
 * 2. draw each output, then ack it (the server's credit window keeps a slow page from falling behind);
 * 3. send each control change as an `update` with only the changed parameters;
 * 4. show errors, stats, the output URLs (stable ones for a named stream), and reconnect (LiveStream) with the
 *    last confirmed parameters.
 * Where the browser has WebRTC the stream goes over it instead (RtcStream: camera up by WHIP, output down by
 * WHEP into a <video>, updates on a data channel) and steps 1-2 are the browser's media engine; if WebRTC
 * cannot connect, or the page is opened with ?transport=ws, the WebSocket path above is used.
 */
import { ApiError, apiJson, byId, describeError, downloadBlob, keepTokenOnLinks, serverUrl } from './api.js';
import { Capture, describeCaptureError } from './capture.js';
import { ErrorList } from './errors.js';
import { Meter } from './meter.js';
import { bindRangeOutputs, control, diffParams, fillForm, readParams } from './params.js';
import { RtcStream } from './rtc-stream.js';
import { LiveStream } from './stream.js';

/** Inputs in flight at most: one being denoised and one waiting in the server's slot. */
const MAX_OUTSTANDING = 2;
/** Capture at most this often (30 fps). */
const MIN_SEND_INTERVAL_MS = 1000 / 30;
/** With no output for this long, send anyway (a frame may have been dropped): the stream never stalls. */
const STALL_MS = 1000;
/** Quiet time before typed text is sent (a prompt is sent once per pause, not per key). */
const TEXT_DEBOUNCE_MS = 250;
/** At most one update this often while a slider moves (the output follows the drag). */
const UPDATE_INTERVAL_MS = 150;
const STATS_POLL_MS = 2000;

const form = byId('controls', HTMLFormElement);
const video = byId('input', HTMLVideoElement);
const output = byId('output', HTMLCanvasElement);
const outputVideo = byId('output_video', HTMLVideoElement);
const statusEl = byId('status', HTMLElement);
const startBtn = byId('start', HTMLButtonElement);
const stopBtn = byId('stop', HTMLButtonElement);
const snapshotBtn = byId('snapshot', HTMLButtonElement);
const mjpegInput = byId('mjpeg_url', HTMLInputElement);
const viewInput = byId('view_url', HTMLInputElement);
const copyButtons = [byId('copy_mjpeg', HTMLButtonElement), byId('copy_view', HTMLButtonElement)];
const nameInput = byId('stream_name', HTMLInputElement);
const sourceSel = byId('source', HTMLSelectElement);
const cameraSel = byId('camera', HTMLSelectElement);
const presetSel = byId('size_preset', HTMLSelectElement);
const errors = new ErrorList(byId('errors', HTMLElement), form);
const meter = new Meter(
  {
    fps: byId('stat_fps', HTMLElement),
    glass: byId('stat_glass', HTMLElement),
    server: byId('stat_server', HTMLElement),
    processing: byId('stat_processing', HTMLElement),
    outputs: byId('stat_outputs', HTMLElement),
    skipped: byId('stat_skipped', HTMLElement),
    dropped: byId('stat_dropped', HTMLElement),
  },
  byId('chart', HTMLCanvasElement),
);
const capture = new Capture(video);

/** Parameters the server has (confirmed or in flight): updates send the difference from these. */
/** @type {Record<string, unknown>} */
let known = {};
/** Values the server rejected, by field: not resent until the control changes again. */
/** @type {Map<string, string>} */
const rejected = new Map();
const frameSize = { width: 128, height: 128 };
/** `capturedAt`: when each input (by id) was grabbed from the video, for glass-to-glass latency. */
const pump = { outstanding: 0, lastSendAt: 0, lastOutputAt: 0, busy: false, /** @type {Map<number, number>} */ capturedAt: new Map() };
/** @type {{ blob: Blob, id: number } | undefined} */
let lastOutput;
/** @type {ReturnType<typeof setInterval> | undefined} */
let sendTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let updateTimer;
let lastUpdateAt = 0;

/** The adapters whose weight is not 0, when the server lists adapters (their section is shown). */
function adapterParams() {
  if (byId('adapters_section', HTMLElement).hidden) return {};
  const sliders = /** @type {HTMLInputElement[]} */ ([...form.querySelectorAll('input[data-adapter]')]);
  return { adapters: sliders.filter((el) => Number(el.value) !== 0).map((el) => ({ name: el.dataset['adapter'], weight: Number(el.value) })) };
}

/** The stream name typed, when it is a valid one (the server checks it too). */
function streamName() {
  const name = nameInput.value.trim();
  return name && nameInput.checkValidity() ? name : undefined;
}

/**
 * The output URLs: a named stream's stable ones (valid before, during and after the stream), else the
 * running stream's own; empty when neither.
 */
function showUrls() {
  const name = stream.started?.name ?? streamName();
  const id = stream.started?.stream_id;
  mjpegInput.value = name ? serverUrl(`/v1/streams/by-name/${name}/mjpeg`) : id ? serverUrl(`/v1/streams/${id}/mjpeg`) : '';
  viewInput.value = name ? serverUrl(`/view.html?name=${name}`) : id ? serverUrl(`/view.html?id=${id}`) : '';
  for (const b of copyButtons) b.disabled = mjpegInput.value === '';
}

/**
 * Shows both panes in the output's shape (the input pane as the server crops or pads it).
 * @param {number} width
 * @param {number} height
 */
function showShape(width, height) {
  for (const id of ['input_frame', 'output_frame']) byId(id, HTMLElement).style.aspectRatio = `${width} / ${height}`;
  video.style.objectFit = control(form, 'fit')?.value === 'pad' ? 'contain' : 'cover';
}

/** @returns {Record<string, unknown>} every parameter as the controls set it */
function desiredParams() {
  return { ...readParams(form), ...adapterParams() };
}

/** @type {import('./stream.js').StreamHandlers} */
const handlers = {
  onStarted(started, resumed) {
    frameSize.width = started.width;
    frameSize.height = started.height;
    known = { ...started.params };
    pump.outstanding = 0;
    pump.capturedAt.clear();
    if (!resumed) errors.clear();
    showUrls();
    sendChanges(); // anything changed while (re)connecting
  },
  onFrame(meta, blob) {
    void showOutput(meta, blob);
  },
  onUpdated(params) {
    known = { ...params };
    // a successful update: messages about settings are stale, except for values still rejected
    errors.clearKind('setting', [...rejected.keys()]);
    showShape(frameSize.width, frameSize.height);
  },
  onError(error) {
    const frame = typeof error.input_id === 'number';
    const field = error.field?.split('.')[0];
    errors.show(error.message, { ...error, kind: frame ? 'frame' : field ? 'setting' : 'other' });
    if (field) {
      rejected.set(field, JSON.stringify(field === 'name' ? nameInput.value : desiredParams()[field]));
      known = { ...stream.params };
    }
    if (frame) pump.outstanding = Math.max(0, pump.outstanding - 1);
  },
  onState(state, detail) {
    statusEl.dataset['state'] = state;
    statusEl.textContent = detail;
    if (state === 'stopped') stopAll(false);
  },
};
const wsStream = new LiveStream(handlers);
const rtcStream = RtcStream.supported && new URLSearchParams(location.search).get('transport') !== 'ws' ? new RtcStream(handlers, outputVideo) : undefined;
/** The transport of the current stream: WebRTC when it connects, else the WebSocket. */
/** @type {LiveStream | RtcStream} */
let stream = wsStream;

/**
 * @param {import('./stream.js').FrameMeta} meta
 * @param {Blob} blob
 */
async function showOutput(meta, blob) {
  if (stream === rtcStream) return showMediaOutput(meta);
  const now = performance.now();
  pump.outstanding = Math.max(0, pump.outstanding - 1);
  pump.lastOutputAt = now;
  const capturedAt = meta.input_id === null ? undefined : pump.capturedAt.get(meta.input_id);
  for (const id of pump.capturedAt.keys()) if (meta.input_id !== null && id < meta.input_id) pump.capturedAt.delete(id);
  try {
    const bitmap = await createImageBitmap(blob);
    if (output.width !== bitmap.width) output.width = bitmap.width;
    if (output.height !== bitmap.height) output.height = bitmap.height;
    output.getContext('2d')?.drawImage(bitmap, 0, 0);
    bitmap.close();
  } catch (e) {
    errors.show(`an output frame could not be shown: ${describeError(e)}`);
  }
  stream.ack();
  errors.clearKind('frame');
  if (frameSize.width !== meta.width || frameSize.height !== meta.height) showShape(meta.width, meta.height);
  frameSize.width = meta.width;
  frameSize.height = meta.height;
  lastOutput = { blob, id: meta.output_id };
  snapshotBtn.disabled = false;
  output.dataset['outputId'] = String(meta.output_id);
  const adapters = (meta.adapters ?? []).map((a) => `${a.name} ${a.weight}`).join(', ');
  byId('output_label', HTMLElement).textContent = [`${meta.width} × ${meta.height}`, `#${meta.output_id}`, meta.expert && `expert ${meta.expert}`, adapters, meta.skipped && 'repeated']
    .filter(Boolean)
    .join(' · ');
  meter.output(capturedAt === undefined ? NaN : performance.now() - capturedAt, meta.latency_ms, meta.processing_ms, meta.skipped);
  void sendFrame();
}

/**
 * An output over WebRTC: the <video> shows it; the metadata from the control channel feeds the stats.
 * @param {import('./stream.js').FrameMeta} meta
 */
function showMediaOutput(meta) {
  frameSize.width = meta.width;
  frameSize.height = meta.height;
  snapshotBtn.disabled = false;
  output.dataset['outputId'] = String(meta.output_id);
  byId('output_label', HTMLElement).textContent = [`${meta.width} × ${meta.height}`, `#${meta.output_id}`, 'WebRTC', meta.skipped && 'repeated'].filter(Boolean).join(' · ');
  meter.output(NaN, meta.latency_ms, meta.processing_ms, meta.skipped);
}

/** Step 1: one frame from the video to the server, if the window allows. */
async function sendFrame() {
  if (!stream.ready || !capture.active || pump.busy) return;
  const now = performance.now();
  const stalled = now - Math.max(pump.lastOutputAt, pump.lastSendAt) > STALL_MS;
  if (pump.outstanding >= MAX_OUTSTANDING && !stalled) return;
  if (now - pump.lastSendAt < MIN_SEND_INTERVAL_MS) return;
  pump.busy = true;
  try {
    const capturedAt = performance.now();
    const jpeg = await capture.grab(frameSize.width, frameSize.height);
    if (!jpeg) return;
    // as an ArrayBuffer: unlike a Blob, its bytes show in the browser's (and the tests') WebSocket inspector
    const id = stream.sendFrame(await jpeg.arrayBuffer());
    if (!id) return;
    pump.outstanding = stalled ? 1 : pump.outstanding + 1;
    pump.lastSendAt = performance.now();
    pump.capturedAt.set(id, capturedAt);
  } finally {
    pump.busy = false;
  }
}

/** Step 3: the parameters that changed since the server last heard, as one update. */
function sendChanges() {
  clearTimeout(updateTimer);
  if (!stream.ready) return;
  const changes = diffParams(desiredParams(), known);
  for (const [field, value] of rejected) {
    if (JSON.stringify(changes[field]) === value) delete changes[field];
    else rejected.delete(field);
  }
  errors.clearFields([...rejected.keys()]);
  if (Object.keys(changes).length === 0) return;
  stream.update(changes);
  lastUpdateAt = performance.now();
  known = { ...known, ...changes };
}

/** @param {EventTarget | null} target */
function scheduleUpdate(target) {
  clearTimeout(updateTimer);
  const typing = target instanceof HTMLTextAreaElement || (target instanceof HTMLInputElement && target.type === 'text');
  const wait = typing ? TEXT_DEBOUNCE_MS : Math.max(0, lastUpdateAt + UPDATE_INTERVAL_MS - performance.now());
  updateTimer = setTimeout(sendChanges, wait);
}

async function pollStats() {
  const id = stream.started?.stream_id;
  if (!id) return;
  try {
    const { streams } = await apiJson('/v1/streams');
    const mine = Array.isArray(streams) ? streams.find((s) => s.id === id) : undefined;
    if (mine?.stats) meter.serverDropped((mine.stats.droppedInput ?? 0) + (mine.stats.droppedOutput ?? 0));
  } catch {
    // stats are a nicety: a failed poll changes nothing
  }
}

async function startCapture() {
  const source = sourceSel.value === 'screen' ? 'screen' : 'camera';
  await capture.start(source, source === 'camera' ? cameraSel.value || undefined : undefined);
  const label = capture.media?.getVideoTracks()[0]?.label ?? '';
  byId('input_label', HTMLElement).textContent = `${source === 'screen' ? 'screen' : 'webcam'}${label ? ` · ${label}` : ''}`;
  if (source === 'camera') await listCameras();
}

async function start() {
  startBtn.disabled = true;
  try {
    await startCapture();
  } catch (e) {
    errors.show(describeCaptureError(e));
    startBtn.disabled = false;
    return;
  }
  stopBtn.disabled = false;
  showPlaceholders(false);
  meter.start();
  rejected.clear();
  statsTimer = setInterval(() => void pollStats(), STATS_POLL_MS);
  if (rtcStream && capture.media) {
    try {
      stream = rtcStream;
      showTransport('webrtc');
      await rtcStream.start(desiredParams(), capture.media, streamName());
      return;
    } catch (e) {
      // the server refused the parameters or the client: the WebSocket would be refused the same way
      if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 404) {
        handlers.onError({ code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) });
        handlers.onState('stopped', 'stopped');
        return;
      }
      errors.show(`${describeError(e)}; using the WebSocket instead`);
    }
  }
  stream = wsStream;
  showTransport('websocket');
  stream.start(desiredParams(), streamName());
  sendTimer = setInterval(() => void sendFrame(), MIN_SEND_INTERVAL_MS);
}

/** @param {'webrtc' | 'websocket'} transport the output shows in the <video> (WebRTC) or the canvas */
function showTransport(transport) {
  statusEl.dataset['transport'] = transport;
  outputVideo.hidden = transport !== 'webrtc';
  output.hidden = transport === 'webrtc';
}

/** @param {boolean} tellServer */
function stopAll(tellServer) {
  if (tellServer) stream.stop();
  clearInterval(sendTimer);
  clearInterval(statsTimer);
  capture.stop();
  meter.stop();
  startBtn.disabled = false;
  stopBtn.disabled = true;
  showUrls(); // a named stream's URLs stay valid (they show a placeholder until it runs again)
  showPlaceholders(true);
  output.getContext('2d')?.clearRect(0, 0, output.width, output.height);
}

/** @param {boolean} on the hints in the empty input and output frames */
function showPlaceholders(on) {
  for (const el of document.querySelectorAll('[data-placeholder]')) if (el instanceof HTMLElement) el.hidden = !on;
}

async function listCameras() {
  const chosen = cameraSel.value;
  const cams = await Capture.cameras();
  cameraSel.replaceChildren(new Option('Default camera', ''), ...cams.map((c, i) => new Option(c.label || `Camera ${i + 1}`, c.deviceId)));
  cameraSel.value = chosen;
}

/** Adapters and experts, when the server has those endpoints (a 404 leaves their sections hidden). */
async function loadOptionalSections() {
  try {
    const body = await apiJson('/v1/adapters');
    const list = namesOf(body, 'adapters');
    const box = byId('adapters', HTMLElement);
    box.replaceChildren(
      ...list.map((name, i) => {
        const row = document.createElement('div');
        row.className = 'row';
        row.innerHTML = `<label for="adapter_${i}"></label><input type="range" id="adapter_${i}" min="-2" max="2" step="0.05" value="0"><output for="adapter_${i}">0</output>`;
        /** @type {HTMLElement} */ (row.firstElementChild).textContent = name;
        const input = /** @type {HTMLInputElement} */ (row.querySelector('input'));
        input.dataset['adapter'] = name;
        return row;
      }),
    );
    byId('adapters_section', HTMLElement).hidden = list.length === 0;
  } catch {
    // no adapter endpoint on this server
  }
  try {
    const list = namesOf(await apiJson('/v1/experts'), 'experts');
    const sel = byId('expert', HTMLSelectElement);
    sel.append(...list.map((name) => new Option(name, name)));
    byId('expert_row', HTMLElement).hidden = list.length === 0;
  } catch {
    // no expert endpoint on this server
  }
}

/**
 * Names from a list answer: an array, or {key: [...]}/{data: [...]}, of strings or {name}/{id} objects.
 * @param {any} body
 * @param {string} key
 * @returns {string[]}
 */
function namesOf(body, key) {
  /** @type {unknown[]} */
  const list = Array.isArray(body) ? body : Array.isArray(body?.[key]) ? body[key] : Array.isArray(body?.data) ? body.data : [];
  return list.map((/** @type {any} */ x) => (typeof x === 'string' ? x : String(x?.name ?? x?.id ?? ''))).filter(Boolean);
}

/** The Resolution menu shows the typed size: a preset, auto (both empty) or custom. */
function syncPreset() {
  const w = control(form, 'width')?.value ?? '';
  const h = control(form, 'height')?.value ?? '';
  const value = `${w}x${h}`;
  presetSel.value = !w && !h ? '' : [...presetSel.options].some((o) => o.value === value) ? value : 'custom';
}

/** Shows the blending sub-forms and disables steps/strength while t_index_list overrides them. */
function syncDependentControls() {
  byId('prompt_blending', HTMLElement).hidden = !byId('blend_prompts', HTMLInputElement).checked;
  byId('seed_blending', HTMLElement).hidden = !byId('blend_seeds', HTMLInputElement).checked;
  byId('camera_row', HTMLElement).hidden = sourceSel.value !== 'camera';
  const overridden = byId('t_index_list', HTMLInputElement).value.trim() !== '';
  byId('steps', HTMLInputElement).disabled = overridden;
  byId('strength', HTMLInputElement).disabled = overridden;
  // a forced expert overrides the budget
  byId('budget_auto', HTMLInputElement).disabled = byId('expert', HTMLSelectElement).value !== '';
  byId('budget', HTMLInputElement).disabled = byId('budget_auto', HTMLInputElement).checked || byId('budget_auto', HTMLInputElement).disabled;
}

// wiring
keepTokenOnLinks();
bindRangeOutputs(form);
form.addEventListener('submit', (e) => e.preventDefault());
form.addEventListener('input', (event) => {
  const target = event.target;
  if (target === presetSel) {
    const [w, h] = presetSel.value.split('x');
    const width = control(form, 'width');
    const height = control(form, 'height');
    if (width && height) [width.value, height.value] = presetSel.value ? [w ?? '', h ?? ''] : ['', ''];
  } else if (target === nameInput) {
    showUrls();
    return; // the name goes with the next start
  } else if (target instanceof HTMLInputElement && (target.name === 'width' || target.name === 'height')) syncPreset();
  if (target === sourceSel || target === cameraSel) {
    syncDependentControls();
    if (capture.media) startCapture().catch((e) => errors.show(describeCaptureError(e)));
    return;
  }
  syncDependentControls();
  scheduleUpdate(target);
});
// Enter in a text field or leaving it applies at once.
form.addEventListener('change', () => sendChanges());
byId('seed_random', HTMLButtonElement).addEventListener('click', () => {
  fillForm(form, { seed: crypto.getRandomValues(new Uint32Array(1))[0] });
  sendChanges();
});
startBtn.addEventListener('click', () => void start());
stopBtn.addEventListener('click', () => stopAll(true));
capture.onEnded = () => {
  errors.show('the capture ended (the screen share or camera was stopped)');
  stopAll(true);
};
snapshotBtn.addEventListener('click', () => {
  if (stream === rtcStream) return void snapshotVideo();
  if (lastOutput) downloadBlob(lastOutput.blob, `snapshot-${lastOutput.id}.jpg`);
});

/** The WebRTC output's current picture as a JPEG download. */
function snapshotVideo() {
  const canvas = document.createElement('canvas');
  canvas.width = outputVideo.videoWidth;
  canvas.height = outputVideo.videoHeight;
  canvas.getContext('2d')?.drawImage(outputVideo, 0, 0);
  canvas.toBlob((blob) => blob && downloadBlob(blob, `snapshot-${output.dataset['outputId'] ?? ''}.jpg`), 'image/jpeg', 0.92);
}
for (const button of copyButtons) {
  button.addEventListener('click', async () => {
    const field = byId(button.dataset['copy'] ?? '', HTMLInputElement);
    try {
      await navigator.clipboard.writeText(field.value);
    } catch {
      field.select();
      document.execCommand('copy');
    }
    button.textContent = 'Copied';
    setTimeout(() => (button.textContent = 'Copy'), 1500);
  });
}
syncDependentControls();
void loadOptionalSections();
