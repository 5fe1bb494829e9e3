/**
 * Which pages of a ramblock were received (or written): a set of page
 * indexes whose cost follows the pages that came, not the block size the
 * peer declared, whatever the pattern of offsets.
 *
 * Pages are grouped in chunks of CHUNK_PAGES. A chunk with some pages set
 * holds its bits in a slot (128 bytes) of one growable buffer; a chunk whose
 * pages are all set gives its slot back and becomes one element of the same
 * structure one level up, over chunk indexes (and so on: four levels cover
 * 2^40 pages). A block received in full costs a few bytes; a scattered one
 * costs a slot per chunk touched. Every byte is charged to the receiver's
 * PageBudget, and so is each separate run of pages (what a checkpoint writes
 * to the journal): a peer that would push past the budget is refused with
 * ERR_PAGE_STATE_LIMIT instead of growing the receiver without bound.
 */
import { ProtocolError, type ErrorPlace } from '../errors.js';

const CHUNK_PAGES = 1024;
const SLOT_BYTES = CHUNK_PAGES / 8;
/** What a slot costs: its bits and its count of pages set. */
const SLOT_COST = SLOT_BYTES + 2;
/** What a chunk's entry in the map of chunks with some pages set costs (V8's hash map, estimated high). */
const ENTRY_COST = 48;
/** What a separate run of pages costs a checkpoint (two numbers in memory, and their JSON). */
const RUN_COST = 32;

const MiB = 2 ** 20;
/** Page bookkeeping, all of a receiver's blocks together (received and written bitmaps). */
export const PAGE_STATE_LIMIT = 48 * MiB;
/** The receiver's stated memory ceiling (README): page bookkeeping included, at any declared image size, with `none`. */
export const RECEIVER_RSS_CEILING = 256 * MiB;

/** The receiver's page bookkeeping went past its budget. */
export class PageStateLimitError extends ProtocolError {
  constructor(
    message: string,
    readonly limit: number,
    readonly needed: number,
    place: ErrorPlace = {},
  ) {
    super('ERR_PAGE_STATE_LIMIT', message, place);
  }

  /** The same error, naming the ramblock, channel and packet it came from. */
  at(ramblock: string, place: ErrorPlace): PageStateLimitError {
    return new PageStateLimitError(`ram block "${ramblock}": ${this.message}`, this.limit, this.needed, place);
  }
}

/** Bytes of page bookkeeping a receiver may hold (one per migration, shared by its bitmaps). */
export class PageBudget {
  used = 0;
  constructor(readonly limit = PAGE_STATE_LIMIT) {}

  charge(bytes: number, bitmap: PageBitmap): void {
    if (this.used + bytes > this.limit) {
      const needed = this.used + bytes;
      throw new PageStateLimitError(
        `page bookkeeping would need ${needed} bytes, past the receiver's limit of ${this.limit} (${bitmap.count} pages received in ${bitmap.runCount} separate runs, ${bitmap.allocatedBytes} bytes of chunks): pages too scattered`,
        this.limit,
        needed,
      );
    }
    this.used += bytes;
  }

  refund(bytes: number): void {
    this.used -= bytes;
  }
}

/** One level: a set over 0..size, chunked as above. */
class Level {
  /** Chunks with some (not all) pages set: chunk index -> slot. */
  private readonly partial = new Map<number, number>();
  private bits = new Uint8Array(0);
  private counts = new Uint16Array(0);
  private readonly freeSlots: number[] = [];
  private slots = 0;
  /** The chunks all of whose pages are set, one level up; null until one is. */
  private full: Level | null = null;
  /** A level of one element: whether it is set. */
  private one = false;
  private readonly chunks: number;
  /** The chunk looked up last, and its slot (-1: none). */
  private lastChunk = -1;
  private lastSlot = -1;
  /** Bytes charged for this level alone. */
  bytes = 0;

  constructor(
    readonly size: number,
    private readonly charge: (bytes: number) => void,
    private readonly refund: (bytes: number) => void,
  ) {
    this.chunks = Math.ceil(size / CHUNK_PAGES);
  }

  private capacity(c: number): number {
    return Math.min(CHUNK_PAGES, this.size - c * CHUNK_PAGES);
  }

  private slotOf(c: number): number | undefined {
    if (c === this.lastChunk) return this.lastSlot;
    const slot = this.partial.get(c);
    if (slot !== undefined) {
      this.lastChunk = c;
      this.lastSlot = slot;
    }
    return slot;
  }

  has(i: number): boolean {
    if (this.size <= 1) return this.one;
    const c = Math.floor(i / CHUNK_PAGES);
    const slot = this.slotOf(c);
    if (slot === undefined) return this.full !== null && this.full.has(c);
    const bit = i - c * CHUNK_PAGES;
    return (this.bits[slot * SLOT_BYTES + (bit >>> 3)]! & (1 << (bit & 7))) !== 0;
  }

  /**
   * Whether `i` is set (-1), else which of its neighbours are: 1 for i - 1,
   * 2 for i + 1. Reads the bits of the chunk looked up last directly (the
   * common case: pages arrive in runs), else asks has().
   */
  probe(i: number): number {
    const c = Math.floor(i / CHUNK_PAGES);
    const bit = i - c * CHUNK_PAGES;
    if (c === this.lastChunk && bit > 0 && bit + 1 < CHUNK_PAGES && this.size > 1) {
      const base = this.lastSlot * SLOT_BYTES;
      const b = this.bits;
      if (b[base + (bit >>> 3)]! & (1 << (bit & 7))) return -1;
      return ((b[base + ((bit - 1) >>> 3)]! >>> ((bit - 1) & 7)) & 1) | (((b[base + ((bit + 1) >>> 3)]! >>> ((bit + 1) & 7)) & 1) << 1);
    }
    if (this.has(i)) return -1;
    return (i > 0 && this.has(i - 1) ? 1 : 0) | (i + 1 < this.size && this.has(i + 1) ? 2 : 0);
  }

  /** Sets element `i`; false when it already was. */
  set(i: number): boolean {
    if (this.size <= 1) {
      if (this.one) return false;
      this.one = true;
      return true;
    }
    const c = Math.floor(i / CHUNK_PAGES);
    let slot = this.slotOf(c);
    if (slot === undefined) {
      if (this.full !== null && this.full.has(c)) return false;
      slot = this.allocate(c);
    }
    const bit = i - c * CHUNK_PAGES;
    const at = slot * SLOT_BYTES + (bit >>> 3);
    const mask = 1 << (bit & 7);
    if (this.bits[at]! & mask) return false;
    // The last page of a chunk: the level above takes the chunk first, so a refused charge there changes nothing here.
    const fills = this.counts[slot]! + 1 === this.capacity(c);
    if (fills) this.upper().set(c);
    this.bits[at]! |= mask;
    this.counts[slot]!++;
    if (fills) this.release(c, slot);
    return true;
  }

  /** Sets elements start..end-1; returns how many were not set before. Whole chunks go up a level without a slot. */
  setRange(start: number, end: number): number {
    if (start >= end) return 0;
    if (this.size <= 1) return this.set(0) ? 1 : 0;
    let added = 0;
    let i = start;
    while (i < end) {
      const c = Math.floor(i / CHUNK_PAGES);
      const chunkEnd = c * CHUNK_PAGES + this.capacity(c);
      if (i > c * CHUNK_PAGES || end < chunkEnd || this.slotOf(c) !== undefined) {
        for (const stop = Math.min(end, chunkEnd); i < stop; i++) if (this.set(i)) added++;
        continue;
      }
      // Whole chunks without a slot (empty, or full already) from c on.
      const last = end >= this.size ? this.chunks : Math.floor(end / CHUNK_PAGES);
      let stop = c + 1;
      if (this.partial.size === 0) stop = last;
      else while (stop < last && !this.partial.has(stop)) stop++;
      const full = this.upper();
      const tail = this.capacity(stop - 1);
      const tailNew = !full.has(stop - 1);
      added += full.setRange(c, stop) * CHUNK_PAGES - (tailNew ? CHUNK_PAGES - tail : 0);
      i = Math.min(stop * CHUNK_PAGES, this.size);
    }
    return added;
  }

  private upper(): Level {
    return (this.full ??= new Level(this.chunks, this.charge, this.refund));
  }

  /** A slot for chunk `c`, charged before anything changes. */
  private allocate(c: number): number {
    this.pay(ENTRY_COST);
    let slot = this.freeSlots.pop();
    if (slot === undefined) {
      if (this.slots * SLOT_BYTES === this.bits.length) {
        // By half: less garbage (the old buffer, until collected) than doubling.
        const grow = Math.max(4, this.slots >>> 1);
        this.pay(grow * SLOT_COST);
        const bits = new Uint8Array((this.slots + grow) * SLOT_BYTES);
        bits.set(this.bits);
        const counts = new Uint16Array(this.slots + grow);
        counts.set(this.counts);
        this.bits = bits;
        this.counts = counts;
      }
      slot = this.slots++;
    }
    this.partial.set(c, slot);
    this.lastChunk = c;
    this.lastSlot = slot;
    return slot;
  }

  /** Chunk `c`, full and marked so above, gives its slot back. */
  private release(c: number, slot: number): void {
    this.bits.fill(0, slot * SLOT_BYTES, (slot + 1) * SLOT_BYTES);
    this.counts[slot] = 0;
    this.freeSlots.push(slot);
    this.partial.delete(c);
    this.refund(ENTRY_COST);
    this.bytes -= ENTRY_COST;
    this.lastChunk = -1;
  }

  private pay(bytes: number): void {
    this.charge(bytes);
    this.bytes += bytes;
  }

  /** Bytes charged here and above. */
  get totalBytes(): number {
    return this.bytes + (this.full?.totalBytes ?? 0);
  }

  /**
   * Calls `run(start, count)` for the runs of elements set, ascending and
   * merged. Walks chunks with slots byte by byte (whole 0x00 and 0xff bytes
   * in one step) and the level above for full chunks: the cost follows the
   * state, not the size.
   */
  eachRun(run: (start: number, count: number) => void): void {
    if (this.size <= 1) {
      if (this.one) run(0, 1);
      return;
    }
    let start = -1;
    let end = -1;
    const add = (s: number, n: number): void => {
      if (s === end) end += n;
      else {
        if (start >= 0) run(start, end - start);
        start = s;
        end = s + n;
      }
    };
    const keys = [...this.partial.keys()].sort((a, b) => a - b);
    let k = 0;
    const partialsBefore = (c: number): void => {
      for (; k < keys.length && keys[k]! < c; k++) this.chunkRuns(keys[k]!, add);
    };
    this.full?.eachRun((c, n) => {
      partialsBefore(c);
      add(c * CHUNK_PAGES, Math.min((c + n) * CHUNK_PAGES, this.size) - c * CHUNK_PAGES);
    });
    partialsBefore(Infinity);
    if (start >= 0) run(start, end - start);
  }

  private chunkRuns(c: number, add: (s: number, n: number) => void): void {
    const slot = this.partial.get(c)!;
    const base = c * CHUNK_PAGES;
    const cap = this.capacity(c);
    let s = -1;
    const close = (at: number): void => {
      if (s >= 0) add(base + s, at - s);
      s = -1;
    };
    for (let b = 0; b < SLOT_BYTES && b * 8 < cap; b++) {
      const byte = this.bits[slot * SLOT_BYTES + b]!;
      if (byte === 0xff) {
        if (s < 0) s = b * 8;
      } else if (byte === 0) close(b * 8);
      else {
        for (let j = 0; j < 8; j++) {
          if (byte & (1 << j)) {
            if (s < 0) s = b * 8 + j;
          } else close(b * 8 + j);
        }
      }
    }
    close(cap);
  }
}

/** One bit per page of a ramblock: received or not (see above). */
export class PageBitmap {
  private readonly level: Level;
  /** Pages set so far. */
  count = 0;
  /** Separate runs of pages set. */
  runCount = 0;

  constructor(
    readonly pages: number,
    private readonly budget = new PageBudget(),
  ) {
    this.level = new Level(
      pages,
      (b) => budget.charge(b, this),
      (b) => budget.refund(b),
    );
  }

  /** Marks page `i` (0 <= i < pages) received; false when it already was. */
  set(i: number): boolean {
    const near = this.level.probe(i);
    if (near < 0) return false;
    // A page between two runs joins them; one beside none starts a run, which a checkpoint pays for.
    const runs = near === 3 ? -1 : near === 0 ? 1 : 0;
    if (runs > 0) this.budget.charge(RUN_COST, this);
    try {
      this.level.set(i);
    } catch (e) {
      if (runs > 0) this.budget.refund(RUN_COST);
      throw e;
    }
    if (runs < 0) this.budget.refund(RUN_COST);
    this.runCount += runs;
    this.count++;
    return true;
  }

  /** Sets every page of `runs` ([start, count, ...], ascending, not overlapping). */
  setRuns(runs: number[]): void {
    if (this.count > 0) {
      for (let r = 0; r < runs.length; r += 2) for (let p = runs[r]!; p < runs[r]! + runs[r + 1]!; p++) this.set(p);
      return;
    }
    // An empty bitmap: whole chunks at once, and the runs counted as they merge.
    let end = -1;
    for (let r = 0; r < runs.length; r += 2) {
      if (runs[r + 1]! === 0) continue;
      if (runs[r] !== end) {
        this.budget.charge(RUN_COST, this);
        this.runCount++;
      }
      end = runs[r]! + runs[r + 1]!;
      this.count += this.level.setRange(runs[r]!, end);
    }
  }

  has(i: number): boolean {
    return this.level.has(i);
  }

  /** The first page not received (`pages` when all were). */
  firstMissing(): number {
    let first = 0;
    let done = false;
    this.level.eachRun((s, n) => {
      if (!done && s === 0) first = n;
      done = true;
    });
    return first;
  }

  /** The pages set, as runs [start, count, ...] (ascending, merged); costs what the state holds, not the block size. */
  runs(): number[] {
    const out: number[] = [];
    this.level.eachRun((s, n) => out.push(s, n));
    return out;
  }

  /** Bytes of chunks and their index held (what a peer's pages have cost, runs aside). */
  get allocatedBytes(): number {
    return this.level.totalBytes;
  }
}
