// @ts-check
/**
 * Live stream statistics: outputs per second, glass-to-glass latency (the input captured -> its output on
 * screen, so it includes the pipeline's lag of steps - 1 frames and the network), the server's latency (the
 * input's arrival -> the output's send) and its processing time (the work on the call that made the output),
 * skipped and dropped counts, drawn in the stats list and a small chart sampled four times a second.
 */
import { LiveChart } from './chart.js';

const WINDOW_MS = 1000;
const SAMPLE_MS = 250;

export class Meter {
  /**
   * @param {{ fps: HTMLElement, glass: HTMLElement, server: HTMLElement, processing: HTMLElement, outputs: HTMLElement, skipped: HTMLElement, dropped: HTMLElement }} cells
   * @param {HTMLCanvasElement} chartCanvas
   */
  constructor(cells, chartCanvas) {
    this.cells = cells;
    this.chart = new LiveChart(chartCanvas, [
      { label: 'fps', unit: '', color: '#5ab0ff' },
      { label: 'glass-to-glass', unit: 'ms', color: '#ffb347' },
    ]);
    /** @type {{ at: number, glass: number, server: number, processing: number }[]} */
    this.recent = [];
    this.outputs = 0;
    this.skipped = 0;
    this.dropped = 0;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
  }

  /** Starts sampling with the counters at zero. */
  start() {
    this.outputs = this.skipped = this.dropped = 0;
    this.recent = [];
    clearInterval(this.timer);
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = undefined;
    this.recent = [];
    this.sample();
  }

  /**
   * One output on screen.
   * @param {number} glassMs glass to glass, NaN when unknown
   * @param {number} serverMs the server's latency_ms
   * @param {number} processingMs the server's processing_ms
   * @param {boolean} skipped
   */
  output(glassMs, serverMs, processingMs, skipped) {
    this.outputs++;
    if (skipped) this.skipped++;
    this.recent.push({ at: performance.now(), glass: glassMs, server: serverMs, processing: processingMs });
  }

  /** @param {number} dropped the server's dropped input + output count for this stream */
  serverDropped(dropped) {
    this.dropped = dropped;
  }

  sample() {
    const now = performance.now();
    while (this.recent.length && (this.recent[0]?.at ?? now) < now - WINDOW_MS) this.recent.shift();
    const fps = (this.recent.length * 1000) / WINDOW_MS;
    const glass = mean(this.recent.map((r) => r.glass));
    const ms = (/** @type {number} */ v) => (Number.isFinite(v) ? `${v.toFixed(0)} ms` : '–');
    const c = this.cells;
    c.fps.textContent = this.timer ? fps.toFixed(0) : '–';
    c.glass.textContent = ms(glass);
    c.server.textContent = ms(mean(this.recent.map((r) => r.server)));
    c.processing.textContent = ms(mean(this.recent.map((r) => r.processing)));
    c.outputs.textContent = String(this.outputs);
    c.skipped.textContent = String(this.skipped);
    c.dropped.textContent = String(this.dropped);
    if (this.timer) this.chart.push([fps, glass]);
  }
}

/** @param {number[]} values */
function mean(values) {
  const finite = values.filter(Number.isFinite);
  return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : NaN;
}
