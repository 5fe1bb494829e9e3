/**
 * Fixed set of packet buffers a channel cycles through, so memory stays flat
 * whatever the image size. Each slab carries its own header buffer and the
 * per-page arrays the analysis fills.
 */
export interface Slab {
  /**
   * One packet's pages (512 KiB) when they must be read rather than mapped:
   * allocated on first use, since mapped packets never need it.
   */
  data(): Uint8Array;
  header: Uint8Array;
  zero: Uint8Array;
  crc: Uint32Array;
}

export class SlabPool {
  private readonly free: Slab[] = [];
  private readonly waiters: ((s: Slab) => void)[] = [];

  constructor(count: number, dataSize: number, headerSize: number, pagesPerPacket: number) {
    for (let i = 0; i < count; i++) {
      let data: Uint8Array | null = null;
      this.free.push({
        // Its own ArrayBuffer, outside Node's shared pool, so views never alias.
        data: () => (data ??= new Uint8Array(new ArrayBuffer(dataSize))),
        header: new Uint8Array(new ArrayBuffer(headerSize)),
        zero: new Uint8Array(pagesPerPacket),
        crc: new Uint32Array(pagesPerPacket),
      });
    }
  }

  /** A free slab now, or null. */
  tryAcquire(): Slab | null {
    return this.free.pop() ?? null;
  }

  acquire(): Promise<Slab> {
    const s = this.free.pop();
    if (s) return Promise.resolve(s);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(s: Slab): void {
    const w = this.waiters.shift();
    if (w) w(s);
    else this.free.push(s);
  }
}
