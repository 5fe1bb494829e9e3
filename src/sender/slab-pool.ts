/**
 * The sender's packet buffers: a bounded set the channels cycle through, so
 * memory stays flat whatever the image size. Each slab carries its own header
 * buffer and the per-page arrays the analysis fills.
 */
import { BoundedPool } from '../io/bounded-pool.js';

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

export function slabPool(count: number, dataSize: number, headerSize: number, pagesPerPacket: number): BoundedPool<Slab> {
  return new BoundedPool<Slab>(count, () => {
    let data: Uint8Array | null = null;
    return {
      // Its own ArrayBuffer, outside Node's shared pool, so views never alias.
      data: () => (data ??= new Uint8Array(new ArrayBuffer(dataSize))),
      header: new Uint8Array(new ArrayBuffer(headerSize)),
      zero: new Uint8Array(pagesPerPacket),
      crc: new Uint32Array(pagesPerPacket),
    };
  });
}
