/**
 * Where a live stream runs: on a worker that serves the stream's model pack, is not draining and has room,
 * the least loaded one (streams over capacity). A worker that already has the stream's adapters merged counts
 * one stream less: merging takes seconds, a stream more costs a share of the worker's frames.
 */
import { isWorker, type NodeInfo } from './nodes.ts';

export interface StreamNeeds {
  readonly pack: string;
  /** The adapter combination's key (models/adapters/choices.ts adapterKey); "" for none. */
  readonly adapters: string;
}

/**
 * The worker for a stream, or undefined when none fits. `assigned`: streams the cluster has placed on each
 * worker (a heartbeat lags; placements made since count at once). `exclude`: workers just found dead.
 */
export function placeStream(nodes: readonly NodeInfo[], assigned: ReadonlyMap<string, number>, needs: StreamNeeds, exclude: ReadonlySet<string> = new Set()): NodeInfo | undefined {
  let best: { node: NodeInfo; score: number; merged: boolean } | undefined;
  for (const node of nodes) {
    if (!isWorker(node) || node.draining || node.pack !== needs.pack || exclude.has(node.id)) continue;
    const load = Math.max(node.streams, assigned.get(node.id) ?? 0);
    if (load >= node.max_streams) continue;
    const merged = needs.adapters !== '' && node.adapters.includes(needs.adapters);
    const score = (load - (merged ? 1 : 0)) / node.max_streams;
    const better =
      !best ||
      score < best.score ||
      (score === best.score && (merged > best.merged || (merged === best.merged && (node.fps < best.node.fps || (node.fps === best.node.fps && node.id < best.node.id)))));
    if (better) best = { node, score, merged };
  }
  return best?.node;
}
