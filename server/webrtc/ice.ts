/**
 * ICE settings for the server's peers. Host candidates only by default: on a loopback-bound server (the
 * default, 127.0.0.1) the peers gather on 127.0.0.1 alone and pair only with candidates on this machine
 * (loopback, or one of its own interface addresses: a browser without loopback candidates offers those),
 * so media never leaves the machine; bound to a LAN address they gather on every interface. STUN/TURN servers
 * (`--ice-servers`) add reflexive and relayed candidates for peers behind NAT.
 */
import { networkInterfaces } from 'node:os';
import type { PeerConfig } from 'werift';
import { ServiceError } from '../../models/errors.ts';

/** One STUN or TURN server, as RTCIceServer spells it. */
export interface IceServer {
  readonly urls: string;
  readonly username?: string;
  readonly credential?: string;
}

const ICE_URL = /^(stun|stuns|turn|turns):[^\s,]+$/;

/**
 * Parses `--ice-servers`: a comma list of `stun:`/`turn:`/`turns:` URLs. TURN URLs take the username and
 * credential given (`--ice-username`, `--ice-credential`); a TURN URL without them is refused.
 */
export function parseIceServers(list: string | undefined, username?: string, credential?: string): IceServer[] {
  if (!list) return [];
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((urls) => {
      if (!ICE_URL.test(urls)) throw new ServiceError('bad_request', `--ice-servers: "${urls}" is not a stun:, turn: or turns: URL`, { field: 'ice-servers' });
      if (!urls.startsWith('turn')) return { urls };
      if (!username || !credential) throw new ServiceError('bad_request', `--ice-servers: ${urls} needs --ice-username and --ice-credential`, { field: 'ice-servers' });
      return { urls, username, credential };
    });
}

/** True for 127.0.0.0/8, ::1 and the addresses of this machine's own interfaces. */
export function isLocalAddress(address: string): boolean {
  if (/^127\./.test(address) || address === '::1') return true;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address === address));
}

/** The werift peer options with these STUN/TURN servers, for a loopback-only server or a LAN-facing one. */
export function icePeerOptions(loopbackOnly: boolean, iceServers: readonly IceServer[]): Partial<PeerConfig> {
  const servers = iceServers.map((s) => ({ ...s }));
  if (!loopbackOnly) return { iceServers: servers };
  return {
    iceServers: servers,
    // werift never gathers loopback addresses itself: turn interface gathering off and name 127.0.0.1
    iceUseIpv4: false,
    iceUseIpv6: false,
    iceAdditionalHostAddresses: ['127.0.0.1'],
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    iceFilterCandidatePair: (pair) => isLocalAddress(pair.remoteCandidate.host),
  };
}
