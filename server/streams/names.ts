/**
 * Stable output URLs for named streams (`name` in start): /v1/streams/by-name/NAME/mjpeg outlives the
 * stream. While a stream of that name runs it shows its frames; before, between and after runs, and after a
 * server restart, it shows a placeholder "waiting for NAME" (server/streams/placeholder.ts), so an OBS source
 * set up once keeps working. Entries exist only while a stream or a viewer uses the name.
 */
import { EventEmitter } from 'node:events';
import { placeholderJpeg } from './placeholder.ts';
import type { JpegSource } from './mjpeg.ts';
import type { LiveStream } from './registry.ts';

interface Size {
  readonly width: number;
  readonly height: number;
}

/** One name's output: its running stream's frames, else the placeholder. Emits 'jpeg' for viewers. */
export class NamedOutput extends EventEmitter implements JpegSource {
  session: LiveStream | undefined;
  private placeholder: { bytes: Buffer; size: Size } | undefined;

  constructor(
    readonly name: string,
    /** The placeholder's size: the last stream's, else the model's default. */
    public size: Size,
  ) {
    super();
  }

  get latestJpeg(): Buffer | undefined {
    return this.session?.latestJpeg ?? this.placeholder?.bytes;
  }

  get running(): boolean {
    return this.session !== undefined;
  }

  /** The placeholder at the current size (made once per size). */
  async waitingFrame(): Promise<Buffer> {
    const { width, height } = this.size;
    if (this.placeholder?.size.width !== width || this.placeholder.size.height !== height) {
      this.placeholder = { bytes: await placeholderJpeg(this.name, width, height), size: { width, height } };
    }
    return this.placeholder.bytes;
  }

  /** Tells viewers there is nothing running (after a stream ended). */
  async showWaiting(): Promise<void> {
    const jpeg = await this.waitingFrame();
    if (!this.session) this.emit('jpeg', jpeg);
  }
}

export class StreamNames {
  private readonly outputs = new Map<string, NamedOutput>();

  constructor(private readonly defaultSize: Size) {}

  /** The output of a name (made on first use; forgotten when no stream and no viewer uses it). */
  output(name: string): NamedOutput {
    let out = this.outputs.get(name);
    if (!out) {
      out = new NamedOutput(name, this.defaultSize);
      this.outputs.set(name, out);
    }
    return out;
  }

  /** The running stream of this name, if any. */
  running(name: string): LiveStream | undefined {
    return this.outputs.get(name)?.session;
  }

  /** A named stream opened: its frames go to the name's viewers until it closes. */
  attach(session: LiveStream): void {
    const name = session.name;
    if (name === undefined) return;
    const out = this.output(name);
    out.session = session;
    const forward = (jpeg: Buffer) => {
      out.size = session.size;
      out.emit('jpeg', jpeg);
    };
    session.on('jpeg', forward);
    session.once('close', () => {
      session.off('jpeg', forward);
      if (out.session !== session) return;
      out.session = undefined;
      void out.showWaiting().finally(() => this.forgetIfIdle(out));
    });
  }

  /** Called when a viewer leaves. */
  forgetIfIdle(out: NamedOutput): void {
    if (!out.session && out.listenerCount('jpeg') === 0 && this.outputs.get(out.name) === out) this.outputs.delete(out.name);
  }
}
