/**
 * Hot swap of a stream's UNet at a frame boundary. A stream asks for a new adapter combination; the merged
 * UNet builds in the background (AdapterStore.merged) while frames keep running on the current UNet; the
 * first frame that starts after the build finished runs entirely on the new one. The latest request wins;
 * a failed build keeps the current UNet and is reported through `onError`.
 *   const swap = new UnetSwap(engine.pack.unet);
 *   const runners = (size) => { const unet = swap.atFrameBoundary(); return (rows) => unet.predict(rows, size.latentHeight, size.latentWidth); };
 *   swap.request(store.merged([{ name: 'heart', weight: 1 }]));
 */
import type { Unet } from '../components.ts';

export class UnetSwap {
  private current: Unet;
  private ready: { unet: Unet; warnings: string[] } | undefined;
  private latest = 0;
  private building = false;

  constructor(
    initial: Unet,
    private readonly onError: (error: unknown) => void = () => undefined,
    private readonly onSwap: (warnings: string[]) => void = () => undefined,
  ) {
    this.current = initial;
  }

  /** The UNet frames run on now. */
  get unet(): Unet {
    return this.current;
  }

  /** True while a requested UNet is still building. */
  get pending(): boolean {
    return this.building;
  }

  /** Switches to the request's UNet at the first frame boundary after it is built (a later request replaces it). */
  request(build: Promise<{ unet: Unet; warnings: string[] }>): void {
    const id = ++this.latest;
    this.building = true;
    build.then(
      (m) => {
        if (id !== this.latest) return;
        this.building = false;
        this.ready = m;
      },
      (error) => {
        if (id !== this.latest) return;
        this.building = false;
        this.onError(error);
      },
    );
  }

  /** Call once when a frame starts (a RunnerFactory call): swaps if a build finished, returns the frame's UNet. */
  atFrameBoundary(): Unet {
    if (this.ready) {
      this.current = this.ready.unet;
      this.onSwap(this.ready.warnings);
      this.ready = undefined;
    }
    return this.current;
  }
}
