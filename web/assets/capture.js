// @ts-check
/**
 * The input side: a webcam (getUserMedia) or a screen/window (getDisplayMedia) playing in a <video>, and
 * frames grabbed from it as JPEG in its own shape at about the stream's size (the server keeps the shape, or
 * crops or pads it to a size you set; the preview pane shows the stream's shape).
 */

/** JPEG quality of input frames: high enough that the encoder's artefacts do not become "content". */
const INPUT_QUALITY = 0.85;

export class Capture {
  /** @param {HTMLVideoElement} video */
  constructor(video) {
    this.video = video;
    /** @type {MediaStream | undefined} */
    this.media = undefined;
    this.canvas = document.createElement('canvas');
    /** Called when the user ends a screen share from the browser's own controls. */
    this.onEnded = () => {};
  }

  /** Cameras, once the user has allowed one (labels are empty before). */
  static async cameras() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((d) => d.kind === 'videoinput');
  }

  /**
   * @param {'camera' | 'screen'} source
   * @param {string} [deviceId] a camera from cameras()
   */
  async start(source, deviceId) {
    this.stop();
    if (!navigator.mediaDevices) throw new Error('camera and screen capture need a secure page (https:// or http://localhost)');
    const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    this.media =
      source === 'screen'
        ? await navigator.mediaDevices.getDisplayMedia({ video, audio: false })
        : await navigator.mediaDevices.getUserMedia({ video: deviceId ? { ...video, deviceId: { exact: deviceId } } : video, audio: false });
    for (const track of this.media.getVideoTracks()) track.addEventListener('ended', () => this.onEnded());
    this.video.srcObject = this.media;
    await this.video.play();
  }

  stop() {
    for (const track of this.media?.getTracks() ?? []) track.stop();
    this.media = undefined;
    this.video.srcObject = null;
  }

  get active() {
    return this.media !== undefined && this.video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA;
  }

  /**
   * The current video frame as a JPEG in the video's own shape, scaled to cover width x height (the server
   * crops or pads it to the stream's shape, and follows the shape when no size is set); null when no frame
   * is ready.
   * @param {number} width
   * @param {number} height
   * @returns {Promise<Blob | null>}
   */
  grab(width, height) {
    const { video, canvas } = this;
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (!this.active || vw === 0 || vh === 0) return Promise.resolve(null);
    const scale = Math.min(1, Math.max(width / vw, height / vh));
    const w = Math.max(1, Math.round(vw * scale));
    const h = Math.max(1, Math.round(vh * scale));
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const ctx = canvas.getContext('2d');
    if (!ctx) return Promise.resolve(null);
    ctx.drawImage(video, 0, 0, w, h);
    return new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', INPUT_QUALITY));
  }
}

/**
 * Explains a getUserMedia/getDisplayMedia failure in words.
 * @param {unknown} error
 */
export function describeCaptureError(error) {
  const name = error instanceof DOMException ? error.name : '';
  switch (name) {
    case 'NotAllowedError':
      return 'capture was not allowed: grant camera or screen access in the browser and try again';
    case 'NotFoundError':
      return 'no camera was found';
    case 'NotReadableError':
      return 'the camera is in use by another application';
    case 'OverconstrainedError':
      return 'the selected camera is no longer available';
    default:
      return error instanceof Error ? error.message : String(error);
  }
}
