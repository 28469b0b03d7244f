/** Prometheus metrics (prom-client), one registry per server so tests can run several servers in one process. */
import type { Dispatcher } from '../models/runtime/dispatcher.ts';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  readonly framesIn = new Counter({ name: 'sd_frames_in_total', help: 'Frames received from stream clients', registers: [this.registry] });
  readonly framesOut = new Counter({ name: 'sd_frames_out_total', help: 'Frames sent to stream clients', registers: [this.registry] });
  readonly framesDropped = new Counter({
    name: 'sd_frames_dropped_total',
    help: 'Frames dropped: stale input replaced by a newer one, or output without client credit',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly frameErrors = new Counter({ name: 'sd_frame_errors_total', help: 'Frames that failed', labelNames: ['code'] as const, registers: [this.registry] });
  readonly ssfSkips = new Counter({ name: 'sd_ssf_skips_total', help: 'Frames skipped by the similarity filter', registers: [this.registry] });
  readonly frameLatency = new Histogram({
    name: 'sd_frame_latency_seconds',
    help: 'Time from the arrival of the input frame an output shows to the output being sent (latency_ms)',
    buckets: [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56],
    registers: [this.registry],
  });
  readonly frameProcessing = new Histogram({
    name: 'sd_frame_processing_seconds',
    help: 'Time the server spent on the call that produced an output: decode, models, encode (processing_ms)',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64],
    registers: [this.registry],
  });
  readonly unetBatchRows = new Histogram({
    name: 'sd_unet_batch_rows',
    help: 'Rows per UNet call (cross-stream batching)',
    buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32],
    registers: [this.registry],
  });
  readonly unetQueueDepth = new Gauge({ name: 'sd_unet_queue_depth', help: 'UNet requests waiting', registers: [this.registry] });
  readonly streamsActive = new Gauge({ name: 'sd_streams_active', help: 'Open streams', registers: [this.registry] });
  readonly streamFps = new Gauge({ name: 'sd_stream_output_fps', help: 'Output frames per second over all streams (last 5 s)', registers: [this.registry] });
  readonly expertFrames = new Counter({ name: 'sd_expert_frames_total', help: 'Frames and images served per UNet expert', labelNames: ['expert'] as const, registers: [this.registry] });
  readonly images = new Counter({ name: 'sd_images_total', help: 'Images rendered by the batch API', labelNames: ['endpoint'] as const, registers: [this.registry] });

  readonly queueWait = new Histogram({
    name: 'sd_queue_wait_seconds',
    help: 'Time a model call waited for a worker, by class (live, interactive, background)',
    labelNames: ['class'] as const,
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28],
    registers: [this.registry],
  });
  readonly workerBusy = new Counter({
    name: 'sd_worker_busy_seconds_total',
    help: 'Worker time spent on model calls, by class (a rate of the background class is its throughput share)',
    labelNames: ['class'] as const,
    registers: [this.registry],
  });
  readonly callDeadlineMisses = new Counter({
    name: 'sd_call_deadline_misses_total',
    help: 'Model calls that ended after their deadline, by class',
    labelNames: ['class'] as const,
    registers: [this.registry],
  });
  readonly frameDeadlineMisses = new Counter({
    name: 'sd_frame_deadline_misses_total',
    help: 'Live frames sent later than their stream\'s latency budget (max_latency_ms, or two frame intervals)',
    registers: [this.registry],
  });

  readonly degradations = new Counter({
    name: 'sd_stream_degradations_total',
    help: 'Load valve moves on live streams: direction down or up, kind of rung (filter, budget, steps)',
    labelNames: ['direction', 'kind'] as const,
    registers: [this.registry],
  });

  private readonly outputTimes: number[] = [];

  constructor(defaultMetrics = false) {
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** Counts a dispatcher's calls (queue wait, worker time, misses) until the returned function is called. */
  observeDispatcher(dispatcher: Dispatcher): () => void {
    return dispatcher.observe({
      onStart: (e) => this.queueWait.observe({ class: e.class }, (e.startedAt - e.submittedAt) / 1000),
      onEnd: (e) => {
        this.workerBusy.inc({ class: e.class }, ((e.endedAt ?? e.startedAt) - e.startedAt) / 1000);
        if (e.missed) this.callDeadlineMisses.inc({ class: e.class });
      },
    });
  }

  /** Records one sent frame for the fps gauge. */
  frameSent(now = performance.now()): void {
    this.framesOut.inc();
    this.outputTimes.push(now);
    while (this.outputTimes.length > 0 && now - this.outputTimes[0]! > 5000) this.outputTimes.shift();
    this.streamFps.set(this.outputTimes.length / 5);
  }
}
