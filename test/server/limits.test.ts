/**
 * The memory test: a server run as `npm start` runs it (its own process, the embedded pack with its adapters)
 * is pushed past every bound a client can grow, the way issue 18's probe did it, and the process's resident
 * memory and thread count (/proc) must stay under stated ceilings. What a client gets at each bound is checked
 * too. The same drivers write the benchmark's "limits" section (test/bench/limits.ts).
 *
 * Ceilings below; measured on the 2-core machine: merged variants +290-390 MB and +15 threads at their peak
 * (resident memory grows by ~50 MB a round for the first rounds and then stays near +430 MB over eight rounds of
 * 24; threads come back to the same count after every round), two 512x512 streams +0.23 GB, everything else
 * under +25 MB and +3 threads.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { driveControlMessages, driveJobQueue, driveLatentArea, drivePendingSockets, driveVariants, spawnServer, type LimitRun, type ServerProcess, type Usage } from '../helpers/limit-drivers.ts';
import { DEFAULT_PAGE_SIZE } from '../../server/batch/jobs/router.ts';

/** Threads: 4 merged variants and a spare worker, each a thread with its session's pool. */
const VARIANT_THREADS = 24;
/** Resident memory the 4 merged variants (and their workers) may add, MB. */
const VARIANT_MB = 900;
/** What the bounded streams may add at their peak, MB (the session arena keeps its peak). */
const AREA_MB = 1200;
/** What rejected messages, sockets and jobs may add, MB. */
const SMALL_MB = 150;

const usage = (u: Usage) => `${u.rssMb.toFixed(0)} MB / ${u.threads} threads`;

let server: ServerProcess;
let start: Usage;

before(async () => {
  server = await spawnServer(['--threads', '1', '--max-latent-area', String(2 * 64 * 64)]);
  start = server.usage();
});

after(async () => {
  assert.equal(await server.stop(), 0, 'the server still shuts down cleanly');
});

test('merged variants: distinct adapter weights never hold more than 4 sessions; threads stay flat and memory levels off over rounds', async (t) => {
  const rounds: LimitRun[] = [];
  for (let r = 0; r < 4; r++) rounds.push(await driveVariants(server, 24, 6));
  // the first round warms the allocator up (its arenas grow, then stay): flatness is judged from the second on
  const [, first, , last] = rounds as [LimitRun, LimitRun, LimitRun, LimitRun];
  for (const run of rounds) {
    assert.deepEqual(Object.keys(run.answers).sort(), Object.keys(run.answers).length === 1 ? ['200'] : ['200', '429 rate_limited, Retry-After']);
    assert.ok(run.answers['200']! >= 12, JSON.stringify(run.answers));
    // at a peak, an evicted variant's thread may still be exiting while its replacement starts
    assert.ok(run.peak.threads <= start.threads + VARIANT_THREADS, `threads ${start.threads} -> ${run.peak.threads}`);
    assert.ok(run.peak.rssMb <= start.rssMb + VARIANT_MB, `RSS ${start.rssMb.toFixed(0)} -> ${run.peak.rssMb.toFixed(0)} MB`);
  }
  assert.ok(last.after.threads <= first.after.threads + 2, `threads after the rounds ${first.after.threads} -> ${last.after.threads}: not flat`);
  assert.ok(last.after.rssMb <= first.after.rssMb + SMALL_MB, `RSS after the rounds ${first.after.rssMb.toFixed(0)} -> ${last.after.rssMb.toFixed(0)} MB: still growing`);
  t.diagnostic(`start ${usage(start)}; ${rounds.map((run, i) => `round ${i + 1}: ${usage(run.peak)} at peak, ${usage(run.after)} after`).join('; ')}`);
});

test('latent area: streams past the server\'s area are refused (close 1013); memory stays under the ceiling', async (t) => {
  const run = await driveLatentArea(server, { side: 512, streams: 4, frames: 2, maxArea: 2 * 64 * 64 });
  t.diagnostic(`${usage(run.before)} before, ${usage(run.peak)} at peak, ${usage(run.after)} after`);
  assert.deepEqual(run.answers, { started: 2, 'close 1013 rate_limited': 2 });
  assert.ok(run.peak.rssMb <= run.before.rssMb + AREA_MB, `RSS ${run.before.rssMb.toFixed(0)} -> ${run.peak.rssMb.toFixed(0)} MB`);
});

test('control messages: megabytes of text before and after start are refused unparsed; memory barely moves', async (t) => {
  const run = await driveControlMessages(server, 10, 2 * 2 ** 20);
  t.diagnostic(`${usage(run.before)} before, ${usage(run.peak)} at peak, ${usage(run.after)} after`);
  assert.deepEqual(run.answers, { 'before start: too_large close 1009': 10, 'after start: too_large, stream goes on': 10 });
  assert.ok(run.peak.rssMb <= run.before.rssMb + SMALL_MB, `RSS ${run.before.rssMb.toFixed(0)} -> ${run.peak.rssMb.toFixed(0)} MB`);
});

test('sockets without start: 32 accepted in all (8 per address), the rest 429 with Retry-After', async (t) => {
  const run = await drivePendingSockets(server, 300, 10);
  t.diagnostic(`${usage(run.before)} before, ${usage(run.peak)} at peak, ${usage(run.after)} after`);
  assert.deepEqual(run.answers, { open: 32, 'HTTP 429, Retry-After': 268 });
  assert.ok(run.peak.threads <= run.before.threads + 2);
  assert.ok(run.peak.rssMb <= run.before.rssMb + SMALL_MB);
});

test('queued jobs: 64 accepted in all (16 per address), the rest 429 with Retry-After; the job list is paged', async (t) => {
  const run = await driveJobQueue(server, 200, 10);
  t.diagnostic(`${usage(run.before)} before, ${usage(run.peak)} at peak, ${usage(run.after)} after`);
  assert.deepEqual(run.answers, { '201': 64, '429 rate_limited, Retry-After': 136 });
  assert.equal(run.pageSize, DEFAULT_PAGE_SIZE);
  assert.ok(run.peak.rssMb <= run.before.rssMb + SMALL_MB);
});

test('after all of it: the process is within its ceilings', () => {
  const end = server.usage();
  assert.ok(end.threads <= start.threads + VARIANT_THREADS, `threads ${start.threads} -> ${end.threads}`);
  assert.ok(end.rssMb <= start.rssMb + VARIANT_MB + AREA_MB, `RSS ${start.rssMb.toFixed(0)} -> ${end.rssMb.toFixed(0)} MB`);
});
