// @ts-check
/**
 * A stream on the server's WebSocket (server/PROTOCOL.md): `start`, binary frames in, `frame` + binary out,
 * live `update`s, one `ack` per output shown (credit-based flow control). A dropped socket reconnects with
 * exponential backoff and starts again with the parameters the server last confirmed, so the stream resumes
 * as it was. Fatal conditions (a refused key, a start the server rejects) stop retrying and say why.
 */
import { ApiError, apiFetch, serverUrl } from './api.js';

/**
 * @typedef {{ type: 'frame', output_id: number, input_id: number | null, latency_ms: number, processing_ms: number,
 *   skipped: boolean, width: number, height: number, format: string, expert?: string,
 *   adapters?: { name: string, weight: number }[] }} FrameMeta
 * @typedef {{ type: 'started', stream_id: string, name: string | null, params: Record<string, unknown>, width: number,
 *   height: number, window: number, mjpeg_url: string, snapshot_url: string }} Started
 * @typedef {{ code: string, message: string, field?: string, input_id?: number | null }} StreamError
 * @typedef {{
 *   onStarted(started: Started, resumed: boolean): void,
 *   onFrame(meta: FrameMeta, image: Blob): void,
 *   onUpdated(params: Record<string, unknown>): void,
 *   onError(error: StreamError): void,
 *   onState(state: 'connecting' | 'streaming' | 'reconnecting' | 'stopped', detail: string): void,
 * }} StreamHandlers
 */

/** Credit window asked for: one output on screen, one on the wire. */
const WINDOW = 2;
/** Reconnect delays: 0.5 s doubling up to 10 s, with +-25 % jitter so many clients do not retry at once. */
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/** Close codes after which retrying cannot help (PROTOCOL.md): a refused key or origin, a rejected start. */
const FATAL_CLOSE = new Set([1008, 4400]);
/** The stream name is taken: fatal for a new start; on a reconnect, the server may not have freed our old stream yet. */
const NAME_TAKEN = 4409;

export class LiveStream {
  /**
   * @param {StreamHandlers} handlers
   * @param {{ mode?: 'img2img' | 'txt2img', output?: { format: 'jpeg' | 'webp', quality: number } }} [options]
   */
  constructor(handlers, options = {}) {
    this.handlers = handlers;
    this.options = options;
    /** @type {WebSocket | undefined} */
    this.ws = undefined;
    /** @type {Started | undefined} */
    this.started = undefined;
    /** Parameters the server last confirmed (started/updated): what a reconnect starts with. */
    /** @type {Record<string, unknown>} */
    this.params = {};
    /** Input frames sent on the current socket (the server's input ids count them from 1). */
    this.framesSent = 0;
    this.attempt = 0;
    this.stopping = false;
    /** @type {FrameMeta | undefined} */
    this.pendingMeta = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {string | undefined} the last error message on this socket */
    this.lastError = undefined;
    /** @type {string | undefined} the stream's name (stable output URLs), if any */
    this.name = undefined;
    /** Whether this stream got `started` since start(): a taken name on a reconnect is our own old stream. */
    this.everStarted = false;
  }

  /** True while the stream has started and accepts frames. */
  get ready() {
    return this.started !== undefined && this.ws?.readyState === WebSocket.OPEN;
  }

  /**
   * Opens the stream with these parameters, and a name for stable output URLs when given.
   * @param {Record<string, unknown>} params
   * @param {string} [name]
   */
  start(params, name) {
    this.stopping = false;
    this.everStarted = false;
    this.params = { ...params };
    this.name = name;
    this.attempt = 0;
    this.connect(false);
  }

  /** @param {boolean} resuming */
  connect(resuming) {
    this.handlers.onState(resuming ? 'reconnecting' : 'connecting', resuming ? `reconnecting (attempt ${this.attempt})…` : 'connecting…');
    const ws = new WebSocket(serverUrl('/v1/stream', 'ws'));
    ws.binaryType = 'blob';
    this.ws = ws;
    this.started = undefined;
    this.framesSent = 0;
    this.pendingMeta = undefined;
    this.lastError = undefined;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      const start = { type: 'start', params: this.params, window: WINDOW, mode: this.options.mode ?? 'img2img', output: this.options.output ?? { format: 'jpeg', quality: 80 } };
      ws.send(JSON.stringify(this.name ? { ...start, name: this.name } : start));
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      if (typeof event.data === 'string') this.onText(event.data, resuming);
      else if (this.pendingMeta) {
        const meta = this.pendingMeta;
        this.pendingMeta = undefined;
        this.handlers.onFrame(meta, event.data);
      }
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      void this.onClose(event, opened);
    };
  }

  /** @param {string} text @param {boolean} resuming */
  onText(text, resuming) {
    const msg = JSON.parse(text);
    switch (msg.type) {
      case 'started':
        this.started = msg;
        this.everStarted = true;
        this.params = { ...msg.params };
        this.attempt = 0;
        this.handlers.onState('streaming', 'streaming');
        this.handlers.onStarted(msg, resuming);
        return;
      case 'frame':
        this.pendingMeta = msg;
        return;
      case 'updated':
        this.params = { ...msg.params };
        this.handlers.onUpdated(msg.params);
        return;
      case 'error':
        this.lastError = msg.message;
        this.handlers.onError(msg);
        return;
      default:
        return; // pong, stopped
    }
  }

  /** @param {CloseEvent} event @param {boolean} opened */
  async onClose(event, opened) {
    this.started = undefined;
    if (this.stopping) {
      this.handlers.onState('stopped', 'stopped');
      return;
    }
    // A socket refused at the upgrade closes with 1006 and no reason: ask HTTP why (a wrong key says 401).
    if (!opened) {
      const reason = await diagnoseRefusal();
      if (reason) return this.fail(reason);
    } else if (FATAL_CLOSE.has(event.code) || (event.code === NAME_TAKEN && !this.everStarted)) {
      // the error message that came before the close usually says it all already
      const said = event.reason !== '' && this.lastError?.startsWith(event.reason);
      return this.fail(said ? undefined : `the server closed the stream: ${event.reason || `code ${event.code}`}`);
    }
    this.attempt++;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.attempt - 1));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    const why = !opened
      ? 'cannot reach the server'
      : event.code === 1001
        ? 'the server is restarting'
        : event.code === 1013
          ? 'the server has too many streams'
          : event.code === NAME_TAKEN
            ? 'the server still holds the previous connection'
            : 'the connection dropped';
    this.handlers.onState('reconnecting', `${why}; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempt})`);
    this.retryTimer = setTimeout(() => this.connect(true), delay);
  }

  /** @param {string | undefined} message why, unless already shown */
  fail(message) {
    this.stopping = true;
    if (message) this.handlers.onError({ code: 'disconnected', message });
    this.handlers.onState('stopped', 'stopped');
  }

  /**
   * Sends one input frame (JPEG bytes); returns its input id, or 0 when the stream is not ready.
   * @param {Blob | ArrayBuffer} jpeg
   */
  sendFrame(jpeg) {
    if (!this.ready || !this.ws) return 0;
    this.ws.send(jpeg);
    return ++this.framesSent;
  }

  /** Gives the server credit for one more output (call once an output is on screen). */
  ack() {
    if (this.ready) this.ws?.send(JSON.stringify({ type: 'ack', frames: 1 }));
  }

  /**
   * A live parameter change (any subset).
   * @param {Record<string, unknown>} params
   */
  update(params) {
    if (this.ready) this.ws?.send(JSON.stringify({ type: 'update', params }));
  }

  stop() {
    this.stopping = true;
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'stop' }));
    else {
      ws?.close();
      this.handlers.onState('stopped', 'stopped');
    }
  }
}

/** Why the server refused a socket, when HTTP can tell (401 wrong key, 403 origin); undefined if it may pass. */
async function diagnoseRefusal() {
  try {
    await apiFetch('/v1/streams');
    return undefined;
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      return `${e.message}${e.status === 401 ? ' — open this page with ?token=YOUR_KEY' : ''}`;
    }
    return undefined;
  }
}
