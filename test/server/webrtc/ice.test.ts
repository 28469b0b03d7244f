/** ICE settings: `--ice-servers` parsing through the server's config loader, and the loopback policy. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../../server/config.ts';
import { icePeerOptions, isLocalAddress } from '../../../server/webrtc/ice.ts';

test('--ice-servers takes STUN and TURN URLs; TURN needs its username and credential', () => {
  assert.deepEqual(loadConfig([], {}).iceServers, [], 'host candidates only by default');
  const config = loadConfig(['--ice-servers', 'stun:stun.example.com:3478, turn:turn.example.com:3478?transport=udp', '--ice-username', 'u', '--ice-credential', 'p'], {});
  assert.deepEqual(config.iceServers, [{ urls: 'stun:stun.example.com:3478' }, { urls: 'turn:turn.example.com:3478?transport=udp', username: 'u', credential: 'p' }]);
  assert.deepEqual(loadConfig([], { ICE_SERVERS: 'stun:a.example:3478' }).iceServers, [{ urls: 'stun:a.example:3478' }]);
  assert.throws(() => loadConfig(['--ice-servers', 'http://stun.example.com'], {}), /not a stun:, turn: or turns: URL/);
  assert.throws(() => loadConfig(['--ice-servers', 'turn:turn.example.com'], {}), /needs --ice-username and --ice-credential/);
});

test('a loopback server gathers on 127.0.0.1 only and pairs only with this machine; a LAN server gathers everywhere', () => {
  const local = icePeerOptions(true, [{ urls: 'stun:stun.example.com:3478' }]);
  assert.deepEqual(local.iceAdditionalHostAddresses, ['127.0.0.1']);
  assert.equal(local.iceUseIpv4, false, 'no interface addresses gathered');
  assert.deepEqual(local.iceServers, [{ urls: 'stun:stun.example.com:3478' }]);
  assert.ok(isLocalAddress('127.0.0.1') && isLocalAddress('::1'));
  assert.equal(isLocalAddress('203.0.113.9'), false, 'a documentation address is no interface of this machine');
  const lan = icePeerOptions(false, []);
  assert.equal(lan.iceUseIpv4, undefined);
  assert.equal(lan.iceFilterCandidatePair, undefined);
});
