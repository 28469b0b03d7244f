/** Server options that choose where and how models run (server/config.ts): --workers, --threads, --tiny-vae. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../server/config.ts';
import { ServiceError } from '../../models/errors.ts';

test('--tiny-vae picks who uses the tiny VAE by default: live streams (default), all requests, or none', () => {
  assert.equal(loadConfig([], {}).tinyVae, 'live');
  assert.equal(loadConfig(['--tiny-vae', 'all'], {}).tinyVae, 'all');
  assert.equal(loadConfig([], { TINY_VAE: 'off' }).tinyVae, 'off');
  assert.throws(() => loadConfig(['--tiny-vae', 'yes'], {}), (e: ServiceError) => e.field === 'tiny-vae' && /one of live, all, off/.test(e.message));
});

test('--workers and --threads: worker threads for the models and intra-op threads per session', () => {
  assert.equal(loadConfig([], {}).workers, undefined, 'one per core');
  assert.equal(loadConfig(['--workers', '0'], {}).workers, 0);
  assert.equal(loadConfig([], { WORKERS: '3' }).workers, 3);
  assert.equal(loadConfig(['--threads', '2'], {}).threads, 2);
  assert.throws(() => loadConfig(['--workers=-1'], {}), /--workers must be an integer in 0..64/);
});

test('--background-share: the minimum share owed to renders and jobs (default 0.05), a number in 0..0.5', () => {
  assert.equal(loadConfig([], {}).backgroundShare, 0.05);
  assert.equal(loadConfig(['--background-share', '0'], {}).backgroundShare, 0);
  assert.equal(loadConfig([], { BACKGROUND_SHARE: '0.2' }).backgroundShare, 0.2);
  for (const bad of ['0.6', '-0.1', 'x', '']) {
    assert.throws(() => loadConfig([`--background-share=${bad}`], {}), (e: ServiceError) => e.code === 'bad_request' && e.field === 'background-share');
  }
});
