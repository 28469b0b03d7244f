/** The cluster's own metrics, on the node's /metrics registry beside the stream and batch metrics. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface ClusterGauges {
  /** Live nodes by role. */
  nodes(): Promise<Record<string, number>>;
  /** Jobs by queue and state, in the queues this node serves. */
  queues(): Promise<Record<string, Record<string, number>>>;
}

export class ClusterMetrics {
  readonly failovers: Counter;
  readonly failoverSeconds: Histogram;

  constructor(registry: Registry, gauges: ClusterGauges) {
    const registers = [registry];
    this.failovers = new Counter({ name: 'sd_stream_failovers_total', help: 'Streams this gateway moved to another worker (theirs died or drained)', registers });
    this.failoverSeconds = new Histogram({
      name: 'sd_stream_failover_seconds',
      help: 'From a stream losing its worker to its first output from the next one',
      buckets: [0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 1.6, 2, 3, 5],
      registers,
    });
    new Gauge({
      name: 'sd_cluster_nodes',
      help: 'Live nodes of the cluster by role',
      labelNames: ['role'] as const,
      registers,
      async collect() {
        this.reset();
        for (const [role, n] of Object.entries(await gauges.nodes().catch(() => ({})))) this.set({ role }, n);
      },
    });
    new Gauge({
      name: 'sd_cluster_queue_jobs',
      help: 'Jobs in the cluster queues this node serves, by state',
      labelNames: ['queue', 'state'] as const,
      registers,
      async collect() {
        this.reset();
        for (const [queue, states] of Object.entries(await gauges.queues().catch(() => ({})))) {
          for (const [state, n] of Object.entries(states)) this.set({ queue, state }, n);
        }
      },
    });
  }
}
