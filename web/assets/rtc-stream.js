// @ts-check
/**
 * A stream over WebRTC: the camera goes up by WHIP (one peer connection, with a `control` data channel that
 * speaks the WebSocket protocol's messages), the output comes down by WHEP into a <video>. Same surface as
 * LiveStream (stream.js) where the page needs it: `start`, `update`, `stop`, `started`, `params`, `ready`;
 * frames travel as media, so `sendFrame` and `ack` do nothing. `start` rejects when WebRTC cannot be set up
 * (the page then falls back to the WebSocket).
 */
import { ApiError, apiFetch } from './api.js';

/** How long the peers may take to connect and the control channel to say `started`. */
const CONNECT_TIMEOUT_MS = 10_000;

/** @param {RTCPeerConnection} pc */
function gathered(pc) {
  // the server takes no trickle from the page: the offer carries every candidate
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve(undefined);
    const timer = setTimeout(resolve, 2000); // send what we have if gathering hangs (no network)
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve(undefined);
      }
    });
  });
}

/**
 * Offers `pc`'s media at `path` (WHIP or WHEP) and applies the answer; returns the resource URL and stream id.
 * @param {RTCPeerConnection} pc
 * @param {string} path
 * @param {Record<string, string>} [headers]
 */
async function negotiate(pc, path, headers = {}) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const res = await apiFetch(path, { method: 'POST', headers: { 'Content-Type': 'application/sdp', ...headers }, body: pc.localDescription?.sdp ?? '' });
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  return { location: res.headers.get('location') ?? '', streamId: res.headers.get('x-stream-id') ?? '' };
}

export class RtcStream {
  /** True when this browser has WebRTC. */
  static get supported() {
    return typeof RTCPeerConnection === 'function';
  }

  /**
   * @param {import('./stream.js').StreamHandlers} handlers (onFrame gets the metadata and no image: the image is in `video`)
   * @param {HTMLVideoElement} video where the output plays
   */
  constructor(handlers, video) {
    this.handlers = handlers;
    this.video = video;
    /** @type {import('./stream.js').Started | undefined} */
    this.started = undefined;
    /** @type {Record<string, unknown>} */
    this.params = {};
    /** @type {RTCPeerConnection[]} */
    this.peers = [];
    /** @type {RTCDataChannel | undefined} */
    this.channel = undefined;
    /** @type {string[]} WHIP/WHEP resources to DELETE on stop */
    this.resources = [];
    /** The codec the camera is sent with, once known ("video/H264", "video/VP8"). */
    this.codec = '';
  }

  get ready() {
    return this.started !== undefined && this.channel?.readyState === 'open';
  }

  /**
   * Publishes `media` with these parameters (and a stream name for stable output URLs, if given) and plays the
   * output; resolves once the output is playing.
   * @param {Record<string, unknown>} params
   * @param {MediaStream} media
   * @param {string} [name]
   */
  async start(params, media, name) {
    this.handlers.onState('connecting', 'connecting (WebRTC)…');
    try {
      await this.open(params, media, name);
    } catch (e) {
      this.release();
      throw e instanceof ApiError ? e : new Error(`WebRTC could not connect: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.handlers.onState('streaming', 'streaming · WebRTC');
  }

  /**
   * @param {Record<string, unknown>} params
   * @param {MediaStream} media
   * @param {string} [name]
   */
  async open(params, media, name) {
    // 1. camera up: WHIP with the parameters in X-Stream-Params, and the control channel
    const up = new RTCPeerConnection();
    this.peers.push(up);
    for (const track of media.getVideoTracks()) up.addTransceiver(track, { direction: 'sendonly' });
    const channel = up.createDataChannel('control');
    this.channel = channel;
    /** @type {Promise<import('./stream.js').Started>} */
    const started = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the control channel did not open')), CONNECT_TIMEOUT_MS);
      channel.onmessage = (event) => {
        const msg = JSON.parse(String(event.data));
        if (msg.type === 'started') {
          clearTimeout(timer);
          resolve(msg);
        } else this.onMessage(msg);
      };
    });
    const whip = await negotiate(up, '/v1/whip', { 'X-Stream-Params': JSON.stringify(params), ...(name ? { 'X-Stream-Name': name } : {}) });
    this.resources.push(whip.location);
    const info = await started;
    // 2. output down: WHEP of the same stream into the <video>
    const down = new RTCPeerConnection();
    this.peers.push(down);
    down.addTransceiver('video', { direction: 'recvonly' });
    const playing = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no output video arrived')), CONNECT_TIMEOUT_MS);
      down.ontrack = (event) => {
        this.video.srcObject = new MediaStream([event.track]);
        this.video.addEventListener('loadeddata', () => (clearTimeout(timer), resolve(undefined)), { once: true });
        void this.video.play().catch(() => undefined);
      };
    });
    const whep = await negotiate(down, `/v1/whep/${whip.streamId}`);
    this.resources.push(whep.location);
    for (const pc of this.peers) pc.addEventListener('connectionstatechange', () => this.onPeerState(pc));
    this.started = info;
    this.params = { ...info.params };
    this.handlers.onStarted(info, false);
    await playing;
    const stats = await up.getStats();
    stats.forEach((s) => {
      if (s.type === 'codec' && String(s.mimeType).startsWith('video/')) this.codec ||= String(s.mimeType);
    });
  }

  /** @param {any} msg a control channel message after `started` */
  onMessage(msg) {
    switch (msg.type) {
      case 'frame':
        return this.handlers.onFrame(msg, /** @type {Blob} */ (/** @type {unknown} */ (undefined)));
      case 'updated':
        this.params = { ...msg.params };
        return this.handlers.onUpdated(msg.params);
      case 'error':
        return this.handlers.onError(msg);
      case 'stopped':
        this.close();
        return this.handlers.onState('stopped', 'stopped');
      default:
        return;
    }
  }

  /** @param {RTCPeerConnection} pc */
  onPeerState(pc) {
    if (pc.connectionState !== 'failed' && pc.connectionState !== 'closed') return;
    if (this.started === undefined) return;
    this.handlers.onError({ code: 'disconnected', message: `the WebRTC connection ${pc.connectionState}` });
    this.stop();
  }

  /** @param {Record<string, unknown>} params */
  update(params) {
    if (this.ready) this.channel?.send(JSON.stringify({ type: 'update', params }));
  }

  /** Frames travel as media: nothing to send by hand. */
  sendFrame() {
    return 0;
  }

  ack() {}

  stop() {
    this.release();
    this.handlers.onState('stopped', 'stopped');
  }

  /** Closes the peers and DELETEs their resources, so no half-made stream waits on the server. */
  release() {
    // the viewer first: ending the publisher ends the stream, and with it the viewer's resource
    const resources = this.resources.splice(0).reverse();
    this.close();
    void (async () => {
      for (const location of resources) await apiFetch(location, { method: 'DELETE' }).catch(() => undefined);
    })();
  }

  close() {
    this.started = undefined;
    for (const pc of this.peers.splice(0)) pc.close();
    this.channel = undefined;
    this.video.srcObject = null;
  }
}
