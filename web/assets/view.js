// @ts-check
/**
 * A stream's output as a plain page, for OBS's Browser Source: /view.html?name=NAME (a stable name, see
 * server/PROTOCOL.md) or ?id=STREAM_ID, plus &token=KEY when the server has an API key. It draws every MJPEG
 * part on a canvas that fills the window (the "waiting for NAME" placeholder while no stream of that name
 * runs), finishes loading at once, and reconnects when the connection ends (a server restart).
 */
import { byId, serverUrl, token } from './api.js';
import { readMjpeg } from './mjpeg.js';

/** Reconnect delays: 0.5 s doubling up to 5 s. */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 5000;

const canvas = byId('view', HTMLCanvasElement);
const status = byId('view_status', HTMLElement);
const query = new URLSearchParams(location.search);
const name = query.get('name');
const id = query.get('id');
let frames = 0;

/** @param {Blob} jpeg */
async function draw(jpeg) {
  const bitmap = await createImageBitmap(jpeg);
  if (canvas.width !== bitmap.width) canvas.width = bitmap.width;
  if (canvas.height !== bitmap.height) canvas.height = bitmap.height;
  canvas.getContext('2d')?.drawImage(bitmap, 0, 0);
  bitmap.close();
  document.body.dataset['frames'] = String(++frames);
  status.textContent = '';
}

async function watch() {
  const path = name ? `/v1/streams/by-name/${encodeURIComponent(name)}/mjpeg` : `/v1/streams/${encodeURIComponent(id ?? '')}/mjpeg`;
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch(serverUrl(path), { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
      if (!res.ok || !res.body) throw new Error(`the server answered ${res.status}${res.status === 401 ? ': add &token=YOUR_KEY to this page\'s URL' : ''}`);
      attempt = 0;
      await readMjpeg(res.body, (jpeg) => void draw(jpeg).catch(() => undefined));
      status.textContent = 'the stream ended; reconnecting…';
    } catch (e) {
      status.textContent = `${e instanceof Error ? e.message : String(e)}; retrying…`;
    }
    await new Promise((r) => setTimeout(r, Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempt)));
  }
}

if (!name && !id) status.textContent = 'add ?name=STREAM_NAME (or ?id=STREAM_ID) to this page\'s URL';
else void watch();
