/**
 * Limits: every bound a client can push, with its ceiling and what a client gets when it hits it; the ones a
 * client can grow are driven past their bound against a server in its own process (as `npm start` runs it), with
 * that process's resident memory and threads before, at the peak and after (test/helpers/limit-drivers.ts).
 */
import { DEFAULT_CONFIG } from '../../server/config.ts';
import { MAX_CONTROL_BYTES } from '../../server/streams/protocol.ts';
import { MAX_WAITING_UPDATES } from '../../server/streams/session.ts';
import { DEFAULT_ADAPTER_LIMITS } from '../../models/adapters/choices.ts';
import { MAX_UPDATE_RATIO } from '../../models/adapters/update-bounds.ts';
import { PROBE_MIN_AGREEMENT, PROBE_SPREAD } from '../../models/adapters/probe.ts';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../../server/batch/jobs/router.ts';
import { driveControlMessages, driveJobQueue, driveLatentArea, drivePendingSockets, driveVariants, spawnServer, type LimitRun } from '../helpers/limit-drivers.ts';

export interface LimitsOptions {
  readonly quick: boolean;
  readonly log: (line: string) => void;
}

const c = DEFAULT_CONFIG;

/** Every ceiling (defaults) and the answer at it. */
const CEILINGS: readonly [string, string, string][] = [
  ['Host header', 'loopback names, IP literals, the bound host, --allowed-hosts', '403 forbidden (field host), also on WebSocket upgrades'],
  ['Origin of POST/PUT/PATCH/DELETE and WebSockets', 'none (programs), this server\'s own origin, --cors origins', '403 forbidden (field origin)'],
  ['API key off loopback', `at least 16 characters, no whitespace`, 'the server refuses to start'],
  ['?token= in a URL', 'WebSocket upgrades, MJPEG, snapshots, result files (GET)', '401 unauthorized elsewhere'],
  ['HTTP requests per client', `${c.rateLimitPerMinute} per minute (failed keys count)`, '429 rate_limited, Retry-After'],
  ['failed API keys per client', `${c.authFailuresPerMinute} per minute`, '429 rate_limited, Retry-After, for every request of that client until the window ends'],
  ['streams', `${c.maxStreams} in all, ${c.maxStreamsPerClient} per client`, 'error rate_limited, close 1013'],
  ['latent area of open streams', `${c.maxLatentArea} (two 1024x1024 SD streams); resizes too`, 'start: error rate_limited, close 1013; update: error rate_limited, the stream keeps its size'],
  ['sockets without start', `${c.maxPendingSockets} in all, ${c.maxPendingSocketsPerClient} per client, ${c.startTimeoutMs / 1000} s each`, 'HTTP 429 with Retry-After on the upgrade; close 4400 after the time'],
  ['text (control) message', `${MAX_CONTROL_BYTES / 1024} KiB, before parsing`, 'error too_large; before start also close 1009'],
  ['updates not answered yet per stream', `${MAX_WAITING_UPDATES}`, 'error rate_limited, the stream goes on'],
  ['frame (binary message)', `${c.maxFrameBytes / 2 ** 20} MiB (4x: the socket is closed)`, 'error too_large for that frame; close 1009 past 4x'],
  ['merged adapter variants', `${c.maxVariants} alive (sessions on worker threads), evicted ones end at once`, '429 / error rate_limited with Retry-After when all are in use'],
  ['adapter update size', `\\|dW\\| <= ${MAX_UPDATE_RATIO} sqrt(r) rms(W) (sqrt(out) + sqrt(in)) per layer`, '422 model_invalid at upload and when merged'],
  ['merged UNet probe', `finite, spread ${PROBE_SPREAD.min}-${PROBE_SPREAD.max}x the base's, cosine >= ${PROBE_MIN_AGREEMENT}`, '422 model_invalid; the variant is never used'],
  ['adapters merged at once', `${DEFAULT_ADAPTER_LIMITS.maxAdapters}, \\|weight\\| <= ${DEFAULT_ADAPTER_LIMITS.maxWeight}`, '400 bad_request naming the field'],
  ['queued jobs', `${c.maxQueuedJobs} in all, ${c.maxQueuedJobsPerClient} per client`, '429 rate_limited, Retry-After'],
  ['GET /v1/jobs page', `${DEFAULT_PAGE_SIZE} by default, ${MAX_PAGE_SIZE} at most`, 'next_cursor for the next page'],
  ['upload size', `${c.maxUploadBytes / 2 ** 20} MiB`, '413 too_large'],
  ['shutdown', `${c.shutdownGraceMs / 1000} s for requests in flight`, 'then 503 unavailable with Retry-After'],
];

function row(run: LimitRun): string {
  const answers = Object.entries(run.answers)
    .map(([k, n]) => `${n} x ${k}`)
    .join('; ');
  const u = (x: { rssMb: number; threads: number }) => `${x.rssMb.toFixed(0)} MB / ${x.threads}`;
  return `| ${run.limit} | ${run.bound} | ${run.pushed} | ${answers} | ${u(run.before)} | ${u(run.peak)} | ${u(run.after)} |`;
}

export async function benchLimits({ quick, log }: LimitsOptions): Promise<Record<string, unknown>> {
  log('### Ceilings and answers (defaults)\n');
  log('| bound | ceiling | what a client gets |\n| --- | --- | --- |');
  for (const [what, ceiling, answer] of CEILINGS) log(`| ${what} | ${ceiling} | ${answer} |`);
  log('\n### Pushed past the bound (a server in its own process, `--threads 1`; RSS / threads of that process)\n');
  const server = await spawnServer(['--threads', '1']);
  const start = server.usage();
  const runs: LimitRun[] = [];
  try {
    runs.push(await driveVariants(server, quick ? 24 : 60, 6));
    runs.push(await driveLatentArea(server, { side: 1024, streams: 4, frames: quick ? 2 : 4 }));
    const control = await driveControlMessages(server, 20, 2 * 2 ** 20);
    runs.push(control);
    runs.push(await drivePendingSockets(server, 300, 10));
    runs.push(await driveJobQueue(server, 200, 10));
    log('| limit | bound | pushed | what clients got | before | peak | after |\n| --- | --- | --- | --- | --- | --- | --- |');
    for (const run of runs) log(row(run));
    const end = server.usage();
    log(`\nThe process started at ${start.rssMb.toFixed(0)} MB and ${start.threads} threads and ended at ${end.rssMb.toFixed(0)} MB and ${end.threads} threads.`);
    log(`While 2 MiB text messages were refused, /health answered within ${control.healthMaxMs.toFixed(0)} ms at worst.`);
    log('The session arena of onnxruntime keeps its peak (two 1024x1024 streams) after the streams close: the bound is what the area admission allows, not what was last used.');
    return { start, end, runs };
  } finally {
    await server.stop();
  }
}
