/**
 * A WebRTC peer built on @roamhq/wrtc (libwebrtc, its own VP8 codec), independent of the server's werift +
 * ffmpeg stack, run as a child process (wrtcPeer below): libwebrtc's threads can crash a process that exits
 * on its own, so the child always leaves through process.exit after closing its peers. It publishes a
 * picture via WHIP (with a `control` data channel) and/or plays a stream via WHEP, reporting over IPC.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** What the parent asks. */
export type PeerCommand =
  | { cmd: 'publish'; url: string; path: string; token: string; width: number; height: number; rgb: string; fps: number; headers?: Record<string, string> }
  | { cmd: 'play'; url: string; path: string; token: string }
  | { cmd: 'control'; message: object }
  | { cmd: 'frames'; count: number }
  /** Closes the peer connections without DELETE (a publisher that just goes away). */
  | { cmd: 'drop' }
  | { cmd: 'stop' };

/** What the child reports. */
export type PeerEvent =
  | { event: 'published'; status: number; location: string | null; streamId: string | null; body: string }
  | { event: 'playing'; status: number; location: string | null; body: string }
  | { event: 'control'; message: Record<string, unknown> }
  | { event: 'frame'; width: number; height: number; rgb: string; received: number }
  | { event: 'stopped' }
  | { event: 'dropped' }
  | { event: 'error'; message: string };

/** The parent's handle: send commands, wait for events. */
export class WrtcPeer {
  readonly events: PeerEvent[] = [];
  private waiters: (() => void)[] = [];

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m) => {
      this.events.push(m as PeerEvent);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static start(): WrtcPeer {
    const child = fork(fileURLToPath(import.meta.url), ['--child'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    return new WrtcPeer(child);
  }

  send(command: PeerCommand): void {
    this.child.send(command);
  }

  /** The first event (after `from`) that matches, waiting up to `timeoutMs`. */
  async next<K extends PeerEvent['event']>(kind: K, from = 0, timeoutMs = 30_000): Promise<Extract<PeerEvent, { event: K }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.slice(from).find((e) => e.event === kind || e.event === 'error');
      if (found?.event === 'error') throw new Error(`wrtc peer: ${found.message}`);
      if (found) return found as Extract<PeerEvent, { event: K }>;
      if (Date.now() > deadline) throw new Error(`wrtc peer: no ${kind} event after ${timeoutMs} ms`);
      await new Promise<void>((ok) => {
        this.waiters.push(ok);
        setTimeout(ok, 100);
      });
    }
  }

  /** Closes the peers and waits for the child to exit (code 0 when it closed cleanly). */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((ok) => this.child.once('exit', (code) => ok(code)));
    this.send({ cmd: 'stop' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }
}

// ---- the child ----

interface WrtcModule {
  RTCPeerConnection: new (config: object) => WrtcPc;
  nonstandard: {
    RTCVideoSource: new () => { createTrack(): WrtcTrack; onFrame(frame: I420): void };
    RTCVideoSink: new (track: WrtcTrack) => { onframe: ((e: { frame: I420 }) => void) | null; stop(): void };
    rgbaToI420(src: Rgba, dst: I420): void;
    i420ToRgba(src: I420, dst: Rgba): void;
  };
}
interface I420 {
  width: number;
  height: number;
  data: Uint8ClampedArray;
}
type Rgba = I420;
interface WrtcTrack {
  stop(): void;
}
interface WrtcChannel {
  readyState: string;
  send(text: string): void;
  onmessage: ((e: { data: string }) => void) | null;
}
interface WrtcPc {
  addTransceiver(trackOrKind: WrtcTrack | string, init: object): void;
  createDataChannel(label: string): WrtcChannel;
  createOffer(): Promise<{ type: string; sdp: string }>;
  setLocalDescription(d: object): Promise<void>;
  setRemoteDescription(d: object): Promise<void>;
  localDescription: { sdp: string } | null;
  iceGatheringState: string;
  onicegatheringstatechange: (() => void) | null;
  ontrack: ((e: { track: WrtcTrack }) => void) | null;
  close(): void;
}

async function child(): Promise<void> {
  const wrtc = createRequire(import.meta.url)('@roamhq/wrtc') as WrtcModule;
  const report = (e: PeerEvent) => process.send?.(e);
  const cleanups: (() => void | Promise<void>)[] = [];
  const peers: WrtcPc[] = [];
  let channel: WrtcChannel | undefined;
  let wanted = 0;
  let received = 0;

  const offerAndPost = async (pc: WrtcPc, url: string, token: string, headers: Record<string, string> = {}) => {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise<void>((ok) => {
      if (pc.iceGatheringState === 'complete') return ok();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok();
    });
    const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}`, ...headers }, body: pc.localDescription!.sdp });
    const body = await res.text();
    if (res.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: body });
    const location = res.headers.get('location');
    if (location) cleanups.push(async () => void (await fetch(new URL(location, url), { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } }).catch(() => undefined)));
    return { status: res.status, location, streamId: res.headers.get('x-stream-id'), body };
  };

  process.on('message', async (command: PeerCommand) => {
    try {
      switch (command.cmd) {
        case 'publish': {
          const { width, height, fps } = command;
          const pc = new wrtc.RTCPeerConnection({ iceServers: [] });
          peers.push(pc);
          const source = new wrtc.nonstandard.RTCVideoSource();
          const track = source.createTrack();
          pc.addTransceiver(track, { direction: 'sendonly' });
          channel = pc.createDataChannel('control');
          channel.onmessage = (e) => report({ event: 'control', message: JSON.parse(e.data) as Record<string, unknown> });
          const rgb = Buffer.from(command.rgb, 'base64');
          const rgba = new Uint8ClampedArray(width * height * 4);
          const i420 = { width, height, data: new Uint8ClampedArray(width * height * 1.5) };
          let n = 0;
          const timer = setInterval(() => {
            // the picture with a slow brightness wobble, so consecutive frames differ (the encoder keeps sending)
            const shift = (n++ % 8) - 4;
            for (let p = 0; p < width * height; p++) {
              for (let c = 0; c < 3; c++) rgba[4 * p + c] = rgb[3 * p + c]! + shift;
              rgba[4 * p + 3] = 255;
            }
            wrtc.nonstandard.rgbaToI420({ width, height, data: rgba }, i420);
            source.onFrame(i420);
          }, 1000 / fps);
          cleanups.push(() => {
            clearInterval(timer);
            track.stop();
            pc.close();
          });
          const res = await offerAndPost(pc, `${command.url}${command.path}`, command.token, command.headers);
          report({ event: 'published', ...res });
          return;
        }
        case 'play': {
          const pc = new wrtc.RTCPeerConnection({ iceServers: [] });
          peers.push(pc);
          pc.addTransceiver('video', { direction: 'recvonly' });
          pc.ontrack = ({ track }) => {
            const sink = new wrtc.nonstandard.RTCVideoSink(track);
            cleanups.unshift(() => sink.stop());
            sink.onframe = ({ frame }) => {
              received++;
              if (wanted <= 0) return;
              wanted--;
              const rgba = { width: frame.width, height: frame.height, data: new Uint8ClampedArray(frame.width * frame.height * 4) };
              wrtc.nonstandard.i420ToRgba(frame, rgba);
              const rgb = Buffer.alloc(frame.width * frame.height * 3);
              for (let p = 0; p < frame.width * frame.height; p++) for (let c = 0; c < 3; c++) rgb[3 * p + c] = rgba.data[4 * p + c]!;
              report({ event: 'frame', width: frame.width, height: frame.height, rgb: rgb.toString('base64'), received });
            };
          };
          cleanups.push(() => pc.close());
          const res = await offerAndPost(pc, `${command.url}${command.path}`, command.token);
          report({ event: 'playing', status: res.status, location: res.location, body: res.body });
          return;
        }
        case 'control':
          if (channel?.readyState !== 'open') throw new Error('the control channel is not open');
          channel.send(JSON.stringify(command.message));
          return;
        case 'frames':
          wanted = command.count;
          return;
        case 'drop':
          for (const pc of peers.splice(0)) pc.close(); // closing twice later (stop) is harmless
          report({ event: 'dropped' });
          return;
        case 'stop':
          for (const cleanup of cleanups.reverse()) await cleanup();
          report({ event: 'stopped' });
          setTimeout(() => process.exit(0), 200);
          return;
      }
    } catch (error) {
      report({ event: 'error', message: (error as Error).message });
    }
  });
}

if (process.argv.includes('--child')) void child();
