/**
 * One bit per page of a ramblock: received or not. Sized by the hello's
 * declared block size, which is the peer's word, so it is allocated in chunks
 * as pages arrive: a hello declaring terabytes costs nothing until pages come,
 * and then no more than the pages that came (a chunk per 4096 pages, 512 bytes).
 */
const CHUNK_PAGES = 4096;
const CHUNK_BYTES = CHUNK_PAGES / 8;

export class PageBitmap {
  private readonly chunks = new Map<number, Uint8Array>();
  /** Pages set so far. */
  count = 0;

  constructor(readonly pages: number) {}

  /** Marks page `i` (0 <= i < pages) received; false when it already was. */
  set(i: number): boolean {
    const c = Math.floor(i / CHUNK_PAGES);
    let chunk = this.chunks.get(c);
    if (chunk === undefined) {
      chunk = new Uint8Array(CHUNK_BYTES);
      this.chunks.set(c, chunk);
    }
    const bit = i % CHUNK_PAGES;
    const mask = 1 << (bit & 7);
    if (chunk[bit >>> 3]! & mask) return false;
    chunk[bit >>> 3]! |= mask;
    this.count++;
    return true;
  }

  /** Sets every page of `runs` ([start, count, ...]). */
  setRuns(runs: number[]): void {
    for (let r = 0; r < runs.length; r += 2) for (let p = runs[r]!; p < runs[r]! + runs[r + 1]!; p++) this.set(p);
  }

  has(i: number): boolean {
    const chunk = this.chunks.get(Math.floor(i / CHUNK_PAGES));
    const bit = i % CHUNK_PAGES;
    return chunk !== undefined && (chunk[bit >>> 3]! & (1 << (bit & 7))) !== 0;
  }

  /** The first page not received (`pages` when all were); skips whole chunks. */
  firstMissing(): number {
    for (let c = 0; c * CHUNK_PAGES < this.pages; c++) {
      const chunk = this.chunks.get(c);
      if (chunk === undefined) return c * CHUNK_PAGES;
      const end = Math.min(CHUNK_PAGES, this.pages - c * CHUNK_PAGES);
      for (let b = 0; b < end; b++) if (!(chunk[b >>> 3]! & (1 << (b & 7)))) return c * CHUNK_PAGES + b;
    }
    return this.pages;
  }

  /**
   * The pages set, as runs [start, count, ...] (ascending). Walks bytes, not
   * pages: unallocated chunks and whole bytes of 0x00 or 0xff are skipped in
   * one step, so a checkpoint of a large block costs little.
   */
  runs(): number[] {
    const runs: number[] = [];
    let start = -1;
    const close = (at: number): void => {
      if (start >= 0) runs.push(start, at - start);
      start = -1;
    };
    for (let c = 0; c * CHUNK_PAGES < this.pages; c++) {
      const base = c * CHUNK_PAGES;
      const chunk = this.chunks.get(c);
      if (chunk === undefined) {
        close(base);
        continue;
      }
      for (let i = 0; i < CHUNK_BYTES; i++) {
        const byte = chunk[i]!;
        const at = base + i * 8;
        if (byte === 0xff) {
          if (start < 0) start = at;
        } else if (byte === 0) close(at);
        else {
          for (let b = 0; b < 8; b++) {
            if (byte & (1 << b)) {
              if (start < 0) start = at + b;
            } else close(at + b);
          }
        }
      }
    }
    close(this.pages);
    return runs;
  }

  /** Bytes allocated for chunks (what a peer's pages have cost). */
  get allocatedBytes(): number {
    return this.chunks.size * CHUNK_BYTES;
  }
}
