/**
 * Browser tests' set-up: a Chromium (Debian's, or any found below) driven by playwright-core (REFERENCE §8)
 * with a fake webcam, and the real server (server/app.ts, with the batch API mounted as an extension) on the
 * random-weight fixture pack. Without a Chromium the browser tests are skipped with a loud notice that says
 * how to install one, except under CI (CI=true), where they are required and fail (.ci/run installs it).
 */
import { existsSync } from 'node:fs';
import { test, type TestFn } from 'node:test';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';
import { startServer, type ExtensionFactory, type RunningServer } from '../../server/app.ts';
import type { ServerConfig } from '../../server/config.ts';
import { createLogger } from '../../server/log.ts';
import { a1111Router } from '../../server/batch/a1111.ts';
import { createBatchApi } from '../../server/batch/index.ts';
import { localRenderer, RenderTracker } from '../../server/batch/render.ts';
import { Engine } from '../../pipelines/engine.ts';
import { BASE_PACK } from '../helpers/fixtures.ts';

/** Where a Chromium is usually installed (Debian/Ubuntu, Google Chrome, snap, macOS). */
const CHROMIUM_CANDIDATES = [
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
  '/usr/bin/google-chrome-stable',
  '/snap/bin/chromium',
  '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
];
const INSTALL_HINT = 'install one with `sudo apt-get install chromium` (Debian/Ubuntu) or `npx playwright-core install chromium`, or point CHROMIUM_PATH at one';

/** The Chromium to drive: CHROMIUM_PATH when set, else the first one installed (playwright's own download last). */
export function findChromium(): string | undefined {
  const explicit = process.env['CHROMIUM_PATH'];
  if (explicit) return existsSync(explicit) ? explicit : undefined;
  const candidates = [...CHROMIUM_CANDIDATES];
  try {
    candidates.push(chromium.executablePath()); // set when `playwright-core install chromium` ran
  } catch {
    // no playwright-managed browser
  }
  return candidates.find((path) => existsSync(path));
}

/** Whether this run is a CI run (CI=true or any value but false/0): browser tests are then required. */
const IN_CI = !!process.env['CI'] && !['false', '0'].includes(process.env['CI']!);

let notified = false;

/**
 * false when the browser tests can run; otherwise why not (the tests are skipped with this reason, after a
 * notice on stderr). Under CI a missing Chromium is an error.
 */
export function browserSkip(): false | string {
  if (findChromium()) return false;
  const where = process.env['CHROMIUM_PATH'] ? `CHROMIUM_PATH=${process.env['CHROMIUM_PATH']} does not exist` : `none of ${CHROMIUM_CANDIDATES.join(', ')}`;
  const reason = `no Chromium found (${where}): ${INSTALL_HINT}`;
  if (IN_CI) throw new Error(`browser tests are required under CI, but ${reason}`);
  if (!notified) {
    notified = true;
    const bar = '!'.repeat(100);
    process.stderr.write(`\n${bar}\n!! BROWSER TESTS SKIPPED: ${reason}\n${bar}\n\n`);
  }
  return `BROWSER TESTS SKIPPED: ${reason}`;
}

/** A test that needs Chromium: skipped (outside CI) when there is none, or for `skip` (another missing tool). */
export function browserTest(name: string, fn: TestFn, options: { skip?: string | false } = {}): void {
  void test(name, { skip: browserSkip() || options.skip || false }, fn);
}

/** Screenshots of the pages, kept in the repository (the latest of each). */
export const ARTIFACTS = resolve(dirname(fileURLToPath(import.meta.url)), 'artifacts');
/** The key the test servers require: every page call must carry it (?token= on the page URL). */
export const API_KEY = 'web-test-key';

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  // WebRTC on loopback only: gather 127.0.0.1 candidates and show addresses instead of mDNS names
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/** A Chromium, headless; `extraArgs` add flags (e.g. --host-resolver-rules to play a DNS-rebinding page). */
export async function launchChromium(extraArgs: readonly string[] = []): Promise<Browser> {
  const executablePath = findChromium();
  if (!executablePath) throw new Error(`no Chromium found: ${INSTALL_HINT}`);
  return chromium.launch({ executablePath, args: [...FLAGS, ...extraArgs] });
}

/** Which render API the server offers: all of it (as `npm start`), only AUTOMATIC1111's, or none. */
export type BatchApiKind = 'full' | 'a1111' | 'none';

const BATCH_EXTENSIONS: Record<BatchApiKind, ExtensionFactory[]> = {
  full: [
    (ctx) => {
      const api = createBatchApi(ctx);
      return { router: api.router, start: () => api.jobs.start(), drain: () => api.jobs.drain() };
    },
  ],
  a1111: [(ctx) => ({ router: a1111Router(ctx, new RenderTracker(), localRenderer(ctx)) })],
  none: [],
};

/** The server on the fixture pack, with an API key, a render API and a throw-away data folder. */
export async function startWebServer(batch: BatchApiKind = 'full', overrides: Partial<ServerConfig> = {}): Promise<RunningServer> {
  const engine = await Engine.load(BASE_PACK);
  const dataDir = await mkdtemp(join(tmpdir(), 'web-test-'));
  return startServer({ port: 0, apiKey: API_KEY, dataDir, ...overrides }, { engine, log: createLogger({}, 'error'), extensions: BATCH_EXTENSIONS[batch] });
}

/**
 * A page that records its own failures: uncaught exceptions and console errors (except those matching
 * `allow`, tested against "text url") end up in `problems`, which a test asserts empty, so a broken script
 * cannot hide behind a passing assertion.
 */
export async function openPage(browser: Browser, url: string, allow: readonly RegExp[] = []): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m: ConsoleMessage) => {
    const text = `${m.text()} ${m.location().url}`;
    if (m.type() === 'error' && !allow.some((re) => re.test(text))) problems.push(`console error: ${text}`);
  });
  await page.goto(url);
  return { page, problems };
}

const captured = new Map<string, Buffer>();

/**
 * Captures the viewport now; `writeScreenshots` saves it later as a palette PNG (a quarter of a plain
 * screenshot's size, to keep in git). The conversion waits because it is slow while a stream keeps the
 * image threads busy.
 */
export async function screenshot(page: Page, name: string): Promise<void> {
  captured.set(name, await page.screenshot({ fullPage: false }));
}

/** Writes the captured screenshots to ARTIFACTS (git-ignored; call after the server has closed). */
export async function writeScreenshots(): Promise<void> {
  await mkdir(ARTIFACTS, { recursive: true });
  for (const [name, png] of captured) await sharp(png).png({ palette: true, colours: 128, compressionLevel: 9 }).toFile(join(ARTIFACTS, name));
  captured.clear();
}

/** Resolves when `predicate` holds (checked every 25 ms), rejecting with `what` after `timeoutMs`. */
export async function until(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Form controls a screen reader could not name (no <label> and no aria-label): should be none. */
export function unlabelledControls(page: Page): Promise<string[]> {
  return page.$$eval('input, select, textarea, button', (els) =>
    els
      .filter((el) => {
        const control = el as HTMLInputElement;
        const named = (control.labels?.length ?? 0) > 0 || el.hasAttribute('aria-label') || (el.tagName === 'BUTTON' && (el.textContent ?? '').trim() !== '');
        return !named && control.type !== 'hidden';
      })
      .map((el) => el.id || el.outerHTML.slice(0, 60)),
  );
}
