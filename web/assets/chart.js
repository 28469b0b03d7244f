// @ts-check
/**
 * A small live line chart on a canvas: a few series over the last `capacity` samples, each scaled to its
 * own maximum (its label shows the latest value and the scale), redrawn at most once per animation frame.
 */

/** @typedef {{ label: string, unit: string, color: string }} Series */

export class LiveChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {Series[]} series
   * @param {number} [capacity] samples kept (at 4 samples/s, 120 = the last 30 s)
   */
  constructor(canvas, series, capacity = 120) {
    this.canvas = canvas;
    this.series = series;
    this.capacity = capacity;
    /** @type {number[][]} */
    this.values = series.map(() => []);
    this.scheduled = false;
  }

  /** @param {number[]} sample one value per series (NaN = no data) */
  push(sample) {
    sample.forEach((v, i) => {
      const list = this.values[i];
      if (!list) return;
      list.push(v);
      if (list.length > this.capacity) list.shift();
    });
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => {
        this.scheduled = false;
        this.draw();
      });
    }
  }

  draw() {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const top = 18;
    const plotH = h - top - 4;
    ctx.strokeStyle = 'rgba(255,255,255,0.12)';
    ctx.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(top + plotH * f) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, y);
      ctx.lineTo(w, y);
      ctx.stroke();
    }
    ctx.font = '12px system-ui, sans-serif';
    ctx.textBaseline = 'top';
    let labelX = 4;
    this.series.forEach((s, i) => {
      const list = this.values[i] ?? [];
      const finite = list.filter(Number.isFinite);
      const max = Math.max(1, ...finite) * 1.1;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      list.forEach((v, j) => {
        if (!Number.isFinite(v)) {
          pen = false;
          return;
        }
        const x = (w * (j + this.capacity - list.length)) / (this.capacity - 1);
        const y = top + plotH * (1 - v / max);
        if (pen) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        pen = true;
      });
      ctx.stroke();
      const last = finite.length ? finite[finite.length - 1] : undefined;
      const text = `${s.label} ${last === undefined ? '–' : last.toFixed(last < 10 ? 1 : 0)} ${s.unit} (max ${Math.round(max)})`;
      ctx.fillStyle = s.color;
      ctx.fillText(text, labelX, 2);
      labelX += ctx.measureText(text).width + 14;
    });
  }
}
