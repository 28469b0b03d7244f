/** Where a stream goes: least loaded worker of its pack with room, not draining; merged adapters count a stream. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeInfo } from '../../../server/cluster/nodes.ts';
import { placeStream } from '../../../server/cluster/placement.ts';

function node(id: string, fields: Partial<NodeInfo> = {}): NodeInfo {
  return {
    id,
    role: 'worker',
    url: `http://127.0.0.1:1/${id}`,
    pack: 'tiny-shapes',
    provider: 'cpu',
    started_at: '2026-01-01T00:00:00Z',
    draining: false,
    streams: 0,
    max_streams: 4,
    fps: 0,
    adapters: [],
    jobs_active: 0,
    jobs_paused: false,
    memory: { rss_mb: 100, free_mb: 1000 },
    heartbeat_at: '2026-01-01T00:00:00Z',
    ...fields,
  };
}

const plain = { pack: 'tiny-shapes', adapters: '' };

test('the least loaded worker, by streams over capacity', () => {
  const nodes = [node('a', { streams: 2 }), node('b', { streams: 1 }), node('c', { streams: 3, max_streams: 8 })];
  assert.equal(placeStream(nodes, new Map(), plain)?.id, 'b');
  // c holds 3 of 8 (0.375) against b's 1 of 4 (0.25) and a's 2 of 4
  assert.equal(placeStream([nodes[0]!, nodes[2]!], new Map(), plain)?.id, 'c');
});

test('placements not yet in a heartbeat count: four streams in a row spread over two workers', () => {
  const nodes = [node('a'), node('b')];
  const assigned = new Map<string, number>();
  const placed = [];
  for (let i = 0; i < 4; i++) {
    const w = placeStream(nodes, assigned, plain)!;
    assigned.set(w.id, (assigned.get(w.id) ?? 0) + 1);
    placed.push(w.id);
  }
  assert.deepEqual(placed.sort(), ['a', 'a', 'b', 'b']);
});

test('never on a gateway, a draining worker, another pack, a full worker or an excluded one', () => {
  const nodes = [
    node('api', { role: 'api' }),
    node('draining', { draining: true }),
    node('other', { pack: 'sd-turbo' }),
    node('full', { streams: 4 }),
    node('dead'),
  ];
  assert.equal(placeStream(nodes, new Map(), plain, new Set(['dead'])), undefined);
  assert.equal(placeStream(nodes, new Map(), plain)?.id, 'dead');
  assert.equal(placeStream([...nodes, node('both', { role: 'all', streams: 1 })], new Map(), plain, new Set(['dead']))?.id, 'both');
});

test('a worker with the adapters merged wins a tie and is worth one stream, not more', () => {
  const needs = { pack: 'tiny-shapes', adapters: 'heart:1' };
  assert.equal(placeStream([node('a', { streams: 1 }), node('b', { streams: 2, adapters: ['heart:1'] })], new Map(), needs)?.id, 'b');
  assert.equal(placeStream([node('a', { streams: 1 }), node('b', { streams: 3, adapters: ['heart:1'] })], new Map(), needs)?.id, 'a');
  assert.equal(placeStream([node('a'), node('b', { adapters: ['ring:1'] })], new Map(), needs)?.id, 'a');
});
