/** Cluster flags: parsed from flags and environment, and a role without a Redis is an error, not a silent no-op. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { DEFAULT_CONFIG, loadConfig } from '../../../server/config.ts';

test('no Redis: one process, role all, nothing else to run', () => {
  const config = loadConfig([], {});
  assert.equal(config.redisUrl, undefined);
  assert.equal(config.role, 'all');
  assert.equal(config.jobLockMs, DEFAULT_CONFIG.jobLockMs);
});

test('flags win over the environment', () => {
  const config = loadConfig(['--redis', 'redis://10.0.0.2:6379', '--role', 'api', '--advertise-url', 'http://10.0.0.5:7861', '--job-lock-ms', '5000', '--min-free-mb', '1024'], { REDIS_URL: 'redis://other:1', ROLE: 'worker' });
  assert.deepEqual(
    { redis: config.redisUrl, role: config.role, url: config.advertiseUrl, lock: config.jobLockMs, free: config.minFreeMemoryMb },
    { redis: 'redis://10.0.0.2:6379', role: 'api', url: 'http://10.0.0.5:7861', lock: 5000, free: 1024 },
  );
  const env = loadConfig([], { REDIS_URL: 'rediss://:secret@cache:6380', ROLE: 'worker' });
  assert.deepEqual([env.redisUrl, env.role], ['rediss://:secret@cache:6380', 'worker']);
});

test('mistakes name the flag', () => {
  const cases: [string[], RegExp][] = [
    [['--role', 'worker'], /--role needs --redis/],
    [['--advertise-url', 'http://h:1'], /--advertise-url needs --redis/],
    [['--redis', 'redis://h:1', '--role', 'gateway'], /--role must be one of all, api, worker/],
    [['--redis', 'http://h:1'], /--redis must be a redis:\/\/ or rediss:\/\/ URL/],
    [['--redis', 'redis://h:1', '--advertise-url', 'h:1'], /--advertise-url must be http\(s\):\/\/host:port/],
    [['--redis', 'redis://h:1', '--job-lock-ms', '10'], /--job-lock-ms must be an integer in 1000\.\./],
  ];
  for (const [argv, message] of cases) assert.throws(() => loadConfig(argv, {}), message, argv.join(' '));
});

test('npm run worker without a Redis says what is missing and exits', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'server/main.ts', '--role', 'worker'], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, REDIS_URL: '', LOG_LEVEL: 'info' } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--role needs --redis URL \(or REDIS_URL\)/);
});
