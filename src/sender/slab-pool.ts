/**
 * The sender's packet buffers: a bounded set the channels cycle through, so
 * memory stays flat whatever the image size. Each slab carries its own header
 * buffer and the per-page arrays the analysis fills. With offloaded methods a
 * slab's analysis arrays and payload room live on one SharedArrayBuffer that
 * the channel's worker fills in place: no buffer is allocated, transferred or
 * collected per packet.
 */
import { BoundedPool } from '../io/bounded-pool.js';
import { sharedSlabViews } from '../compute/messages.js';

export interface Slab {
  /**
   * One packet's pages (512 KiB) when they must be read rather than mapped:
   * allocated on first use, since mapped packets never need it.
   */
  data(): Uint8Array;
  /** The packet header's room; with offloaded methods on a SharedArrayBuffer of its own. */
  header: Uint8Array;
  zero: Uint8Array;
  crc: Uint32Array;
  /** Offloaded methods: the SharedArrayBuffer under `crc`, `list`, `zero` and `out` (sharedSlabViews), else null. */
  shared: SharedArrayBuffer | null;
  /** Offloaded methods: room for a gathered job's page indices, which the worker reads; else null. */
  list: Uint32Array | null;
  /** Offloaded methods: room for one packet's payload (the method's maxPayload), which the worker writes; else null. */
  out: Uint8Array | null;
}

/** `outSize` > 0: slabs for an offloaded method, shared with the compute workers, with that much payload room. */
export function slabPool(count: number, dataSize: number, headerSize: number, pagesPerPacket: number, outSize = 0): BoundedPool<Slab> {
  return new BoundedPool<Slab>(count, () => {
    let data: Uint8Array | null = null;
    // Offloaded: shared too, since the worker may encode the header and send the packet itself (RelaySink).
    const header = new Uint8Array(outSize > 0 ? new SharedArrayBuffer(headerSize) : new ArrayBuffer(headerSize));
    // Its own ArrayBuffer, outside Node's shared pool, so views never alias.
    const scratch = (): Uint8Array => (data ??= new Uint8Array(new ArrayBuffer(dataSize)));
    if (outSize > 0) {
      const { shared, crc, list, zero, out } = sharedSlabViews(null, pagesPerPacket, outSize);
      return { data: scratch, header, zero, crc, shared, list, out };
    }
    return {
      data: scratch,
      header,
      zero: new Uint8Array(pagesPerPacket),
      crc: new Uint32Array(pagesPerPacket),
      shared: null,
      list: null,
      out: null,
    };
  });
}
