/**
 * The epoch each page of a ramblock was last written with (see
 * docs/qemu-peer.md, "Order"). The block size is the peer's word, so the table
 * is allocated in chunks of 1024 pages as pages arrive (as the receiver's page
 * bitmap is), and all blocks of a migration share a budget: the entries
 * allocated may exceed four per page received by at most EPOCH_SLACK. A legit
 * source sends every page of a block, so its chunks fill up; a peer that
 * scatters single pages over a huge declared block (a 9-byte ZERO record per
 * 4 KiB chunk) is refused instead of costing memory out of proportion to what
 * it sent.
 */
import { ProtocolError } from '../errors.js';

/** Pages per chunk of the table (4 KiB of Int32). */
export const EPOCH_CHUNK = 1024;
/** Entries allowed beyond four per page received, all blocks together (64 MiB). */
export const EPOCH_SLACK = 16 * 1024 * 1024;

/** Largest epoch a table holds (Int32; -1 means never written). */
export const MAX_EPOCH = 0x7fffffff;

/** What the tables of one migration have allocated, and how many pages they hold. */
export class EpochBudget {
  allocated = 0;
  pages = 0;
}

export class PageEpochs {
  private readonly chunks = new Map<number, Int32Array>();
  /** Pages written at least once. */
  count = 0;

  constructor(
    readonly name: string,
    readonly pages: number,
    private readonly budget: EpochBudget,
  ) {}

  /** -1: never written. */
  get(i: number): number {
    const k = Math.floor(i / EPOCH_CHUNK);
    return this.chunks.get(k)?.[i - k * EPOCH_CHUNK] ?? -1;
  }

  /** Records `epoch` for page `i` (0 <= i < pages). */
  set(i: number, epoch: number): void {
    if (epoch > MAX_EPOCH) {
      throw new ProtocolError(
        'ERR_QEMU_SYNC_COUNT',
        `ramblock "${this.name}": a page after ${epoch} sync points, expected at most ${MAX_EPOCH} (the epoch would wrap and reorder pages)`,
      );
    }
    const k = Math.floor(i / EPOCH_CHUNK);
    let c = this.chunks.get(k);
    if (!c) {
      const n = Math.min(EPOCH_CHUNK, this.pages - k * EPOCH_CHUNK);
      const b = this.budget;
      if (b.allocated + n > EPOCH_SLACK + 4 * b.pages) {
        throw new ProtocolError(
          'ERR_QEMU_PAGE_SPREAD',
          `ramblock "${this.name}": page at offset ${i * 4096} would grow the page table to ${b.allocated + n} entries for ${b.pages} pages received: pages scattered over the declared blocks instead of sent in passes over them`,
        );
      }
      c = new Int32Array(n).fill(-1);
      b.allocated += n;
      this.chunks.set(k, c);
    }
    const j = i - k * EPOCH_CHUNK;
    if (c[j] === -1) {
      this.count++;
      this.budget.pages++;
    }
    c[j] = epoch;
  }

  /** The first page never written (`pages` when all were); skips missing chunks whole. */
  firstMissing(): number {
    for (let k = 0; k * EPOCH_CHUNK < this.pages; k++) {
      const c = this.chunks.get(k);
      if (!c) return k * EPOCH_CHUNK;
      const j = c.indexOf(-1);
      if (j >= 0) return k * EPOCH_CHUNK + j;
    }
    return this.pages;
  }
}
