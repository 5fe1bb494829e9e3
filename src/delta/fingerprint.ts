/**
 * Page fingerprints (addon/delta.cc): XXH3-128 of every non-zero page, kept as
 * 16-byte entries (the top 96 bits of the hash and a u32 page index), so a
 * table costs 16 bytes per page. Files are taken in batches of FINGERPRINT_BATCH
 * pages, the next batch got while the addon hashes the last one on all cores
 * and the caller takes the one before. A batch is hashed from a read-only
 * mapping of the file where that costs less than reading it (fingerprintFile:
 * the image access, src/image/image-source.ts), its holes never touched.
 */
import fs from 'node:fs';
import { IoError, NativeIoError, UsageError, nativeIoFailure } from '../errors.js';
import { DELTA_UNAVAILABLE, native } from '../native/load.js';
import { ENTRY_SIZE, NO_MATCH, MAX_SAMPLE_ENTRIES } from '../control/delta.js';
import { preadPieces } from '../native/file-io.js';
import { measureAccess, onHugePages, type ImageAccess, type Measure } from '../image/image-source.js';

/** An entry's size and the index no entry has: defined below, with the `fingerprints` frames that carry entries. */
export { ENTRY_SIZE, NO_MATCH };

/**
 * Pages per addon call (4 MiB of 4 KiB pages). Small on purpose: each of the
 * three read buffers is touched afresh by every process, and a first touch is
 * a page fault (costly in a VM); with 16 MiB batches those faults made up a
 * third of fingerprinting's CPU (bench/delta.mjs counts them). Still 256+
 * pages per thread for the addon's split on four cores.
 */
export const FINGERPRINT_BATCH = 1024;

/**
 * Pages per addon call where the addon maps the file itself (fingerprintFile
 * with `pages: false`: 64 MiB of 4 KiB pages): its holes, mapping, page
 * tables, hashing on all cores and unmapping in one call off the event loop,
 * so the calls and their JavaScript cost little against the hashing; still
 * small enough that the receiver's first entries go out soon.
 */
export const FINGERPRINT_RANGE = 16384;

/**
 * The sampled pre-check (docs/control-protocol.md, Delta): pages p with
 * p % stride < run of each file, 1 in 64 by default: runs of 16 pages (64 KiB
 * of 4 KiB pages, one read each) every 1024. Images of fewer than
 * SAMPLE_MIN_PAGES pages are not sampled: fingerprinting them whole costs
 * little against the migration's start.
 */
export const SAMPLE_STRIDE = 1024;
export const SAMPLE_RUN = 16;
export const SAMPLE_MIN_PAGES = 16384;

/** The stride that keeps a sample of `pages` pages (runs of SAMPLE_RUN) within one `sample` frame. */
export function sampleStride(pages: number): number {
  return Math.max(SAMPLE_STRIDE, Math.ceil((pages * SAMPLE_RUN) / MAX_SAMPLE_ENTRIES));
}

export function deltaAvailable(): boolean {
  return native.deltaAvailable;
}

/** Refuses delta transfer, saying why, when the addon has no xxHash. */
export function requireDelta(what: string): void {
  if (!native.deltaAvailable) {
    throw new UsageError(`${what}: delta transfer is not available in this build of mfd: ${DELTA_UNAVAILABLE}`);
  }
}

/**
 * Entries of the non-zero pages among the `count` pages in `pages`, indices from `first`; into
 * `out`, their number returned; with `crc`, every page's CRC-32C. `holes` (a flag a page) marks
 * pages known to be zero, never looked at. `pages` may be a mapping of a file: if the file shrinks
 * under it, the promise resolves with a negative number (ESHORTREAD), not a crash.
 */
export function fingerprintPages(
  pages: Uint8Array,
  pageSize: number,
  count: number,
  first: number,
  out: Uint8Array,
  crc: Uint32Array | null = null,
  holes: Uint8Array | null = null,
): Promise<number> {
  return new Promise((resolve, reject) =>
    native.deltaFingerprint(pages, pageSize, count, first, out, crc, holes, (e, n) => (e ? reject(e) : resolve(n))),
  );
}

/**
 * fingerprintPages of the `length` bytes (whole pages) of `fd` at `position`, the addon mapping
 * them itself (deltaFingerprintFile): pages in holes never touched. `span` ([start, end) of the
 * file known to be all data) is kept from one call to the next. Resolves with the entries'
 * number, negative (ESHORTREAD) when the file is now shorter than `size` or shrinks meanwhile.
 */
export function fingerprintRange(
  fd: number,
  position: number,
  length: number,
  size: number,
  pageSize: number,
  first: number,
  out: Uint8Array,
  crc: Uint32Array | null,
  span: Float64Array,
): Promise<number> {
  return new Promise((resolve, reject) =>
    native.deltaFingerprintFile(fd, position, length, size, pageSize, first, out, crc, span, (e, n) => (e ? reject(e) : resolve(n))),
  );
}

export function sortEntries(entries: Uint8Array, count: number): Promise<void> {
  return new Promise((resolve, reject) => native.deltaSort(entries, count, (e) => (e ? reject(e) : resolve())));
}

/** out[i]: the page index in `table` (sorted) whose key is entry i's, or NO_MATCH. */
export function matchEntries(table: Uint8Array, tableCount: number, entries: Uint8Array, count: number, out: Uint32Array): number {
  return native.deltaMatch(table, tableCount, entries, count, out);
}

/** Below this many bytes a table is an ordinary buffer: a mapping of its own is for the large ones. */
const MAPPED_MIN = 1 << 16;

/**
 * Zero-filled memory for a delta migration's tables, freed by releaseBuffers.
 * The large ones get a mapping of their own (the addon's deltaAlloc), out of
 * malloc's heap: glibc raises its mmap threshold to the size of a large
 * block freed (up to 32 MiB, and the heap's trim threshold to twice that),
 * and the transfer after planning then kept tens of MiB more resident.
 */
export function tableMemory(bytes: number): ArrayBuffer {
  return bytes < MAPPED_MIN ? new ArrayBuffer(bytes) : native.deltaAlloc(bytes);
}

/** A Buffer of `bytes` zero-filled bytes of tableMemory(). */
export function tableBuffer(bytes: number): Buffer {
  return Buffer.from(tableMemory(bytes));
}

/** A frame's entries (checked base64: src/control/delta.ts) decoded into a tableBuffer of their own. */
export function decodeEntries(base64: string): Buffer {
  const pad = base64.endsWith('==') ? 2 : base64.endsWith('=') ? 1 : 0;
  const b = tableBuffer((base64.length / 4) * 3 - pad);
  b.write(base64, 'base64');
  return b;
}

/**
 * Frees these buffers' memory now (the addon detaches them: every view of
 * them is then empty), not whenever the garbage collector comes to them: a
 * delta migration's tables and maps (tens of MiB against a big base) would
 * otherwise still be held while the channels' compression contexts are made,
 * and add to the peak. Only a view spanning its whole ArrayBuffer is freed (a
 * small Buffer shares Node's pool); others, and null, are left alone. No
 * native call may still be using them.
 */
export function releaseBuffers(...views: readonly (ArrayBufferView | null | undefined)[]): void {
  for (const v of views) {
    if (!v || v.byteLength === 0 || v.byteOffset !== 0 || !(v.buffer instanceof ArrayBuffer) || v.byteLength !== v.buffer.byteLength)
      continue;
    native.deltaRelease(v.buffer);
  }
}

/** The page index of entry `i`. */
export function entryIndex(entries: Uint8Array, i: number): number {
  // By hand: a Buffer view per call costs more than the planning around it.
  const o = i * ENTRY_SIZE + 12;
  if (o + 4 > entries.length) throw new RangeError(`fingerprint entry ${i} is past the end (${entries.length} bytes)`);
  return (entries[o]! | (entries[o + 1]! << 8) | (entries[o + 2]! << 16) | (entries[o + 3]! << 24)) >>> 0;
}

/** Where global page index `g` falls in `starts` (ascending first indices): the part's index. */
export function partOf(starts: readonly number[], g: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= g) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** True when entries i and j have the same key (the 96 hash bits). */
export function sameKey(a: Uint8Array, i: number, b: Uint8Array, j: number): boolean {
  return Buffer.compare(a.subarray(i * ENTRY_SIZE, i * ENTRY_SIZE + 12), b.subarray(j * ENTRY_SIZE, j * ENTRY_SIZE + 12)) === 0;
}

function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, length, position, (e, n) => (e ? reject(e) : resolve(n))));
}

/** `want` bytes of `what` at `position` into buf: a read's failure as IoError, fewer bytes as ERR_DELTA_BASE_SHORT. */
async function readBase(fd: number, buf: Buffer, want: number, position: number, what: string): Promise<void> {
  let got: number;
  try {
    got = await readFully(fd, buf, want, position);
  } catch (e) {
    throw new IoError(`ERR_${(e as NodeJS.ErrnoException).code ?? 'READ'}`, `reading ${what}: ${(e as Error).message}`, e);
  }
  if (got < want)
    throw new IoError(
      'ERR_DELTA_BASE_SHORT',
      `reading ${what}: ${got} bytes at offset ${position}, expected ${want} (it shrank while being read)`,
    );
}

/** Reads `length` bytes at `position`, fewer only at end of file. */
export async function readFully(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const n = await readAt(fd, buf.subarray(got), length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** How fingerprintFile got a file's pages, and why (as ImageSource.access). */
export interface FingerprintAccess {
  how: 'map' | 'read';
  why: string;
}

export interface FingerprintOptions {
  /**
   * map, read, or auto (the default): read on hugetlbfs (where lseek cannot tell holes, and a hole
   * touched through a mapping takes a huge page) and for files of less than a few MiB of data;
   * elsewhere the cheaper of the two as measured on the file (the image access's measure,
   * src/image/image-source.ts). With `onBytes` the pages are always read.
   */
  access?: ImageAccess;
  /** What auto measures with (a test's fake; native.probeImageAccess by default). */
  measure?: Measure;
  /**
   * False when onBatch never looks at its `pages`: mapped, the addon then maps, hashes and unmaps
   * FINGERPRINT_RANGE pages a call itself (fingerprintRange), and `pages` is empty. True by default.
   */
  pages?: boolean;
}

/** statfs(2) of an open file, by its /proc/self/fd link. */
const fdPath = (fd: number): string => `/proc/self/fd/${fd}`;

async function chooseAccess(fd: number, size: number, access: ImageAccess, measure: Measure | undefined): Promise<FingerprintAccess> {
  if (access !== 'auto') return { how: access, why: `access ${access}` };
  if (await onHugePages(fdPath(fd))) return { how: 'read', why: 'auto: on hugetlbfs' };
  const m = measureAccess(fd, size, measure);
  return { how: m.how, why: `auto: ${m.why}` };
}

/**
 * Which whole pages of a batch lie in holes of the file (lseek SEEK_DATA/SEEK_HOLE), so that
 * they are neither touched through a mapping (on tmpfs that allocates a page) nor hashed. No lseek
 * for a batch inside a span found all data before: on tmpfs SEEK_HOLE walks the page cache up to
 * the next hole, so one call per batch would cost O(file) each.
 */
class HoleFinder {
  private sparse = true;
  private readonly span = new Float64Array(2);
  private readonly until = new Float64Array(1);
  constructor(
    private readonly fd: number,
    private readonly size: number,
    private readonly what: string,
  ) {}

  /** Flags for the `count` whole pages at `offset`, or null when none lies in a hole. */
  at(offset: number, count: number, pageSize: number): Uint8Array | null {
    if (!this.sparse) return null;
    const bytes = count * pageSize;
    if (offset >= this.span[0]! && offset + bytes <= this.span[1]!) return null;
    let extents: Float64Array;
    try {
      extents = native.dataExtents(this.fd, offset, bytes, this.until);
    } catch {
      this.sparse = false; // an optimisation only: without it every page is looked at
      return null;
    }
    if (extents.length === 2 && extents[0] === offset && extents[1]! >= offset + bytes) {
      this.span[0] = offset;
      this.span[1] = this.until[0]!;
      return null;
    }
    // lseek reports everything past the end of a file as a hole: a file that shrank would pass as zero pages.
    const now = fs.fstatSync(this.fd).size;
    if (now < this.size)
      throw new IoError(
        'ERR_DELTA_BASE_SHORT',
        `reading ${this.what}: it is now ${now} bytes, expected ${this.size} (it shrank while being read)`,
      );
    const holes = new Uint8Array(count).fill(1);
    for (let i = 0; i < extents.length; i += 2) {
      const from = Math.floor((extents[i]! - offset) / pageSize);
      const to = Math.ceil((extents[i + 1]! - offset) / pageSize);
      holes.fill(0, from, to);
    }
    return holes.includes(1) ? holes : null;
  }
}

/** A batch got: its pages (a view of a mapping, or of a read buffer), which of them lie in holes, and what gives them back. */
interface Batch {
  n: number;
  pages: Uint8Array;
  holes: Uint8Array | null;
  /** Bytes of the file in it (the last page may be partial). */
  bytes: number;
  /** Call once nothing uses `pages` any more (no hashing, no onBatch). */
  release(): void;
}

const NO_RELEASE = (): void => {};

/**
 * Fingerprints the `size` bytes of `fd` (the last page zero-padded), page
 * indices from `first`; `onBatch` gets each batch's entries, its pages (the
 * file's bytes, the last page zero-padded) and the file page it starts at
 * (views valid until it returns), in page order. With `crc` (one slot per page of the
 * file), each page's CRC-32C goes there too; `onBytes` sees every byte of the
 * file, in order, as it is read (a whole-file digest in the same pass).
 * `what` names the file in errors. Once `signal` aborts, no further batch is
 * read and the call rejects with its reason (a migration that needs the
 * fingerprints no more does not go on reading the whole file beside it).
 *
 * Mapped (`opts.access`; never with `onBytes`), `pages` is a view of a
 * read-only mapping of the file, unmapped once onBatch returns: hand it to
 * system calls (a write from it fails with EFAULT if the file shrank), and
 * read it in JavaScript only if the file cannot shrink meanwhile (that would
 * be SIGBUS), and never its pages in holes (they have no entry; on tmpfs a
 * touch allocates a page). A file that shrinks while it is hashed is
 * ERR_DELTA_BASE_SHORT, as when read. With `opts.pages` false (onBatch never
 * looks at its pages), mapped, the addon maps, hashes and unmaps
 * FINGERPRINT_RANGE pages a call itself and `pages` is empty. Resolves with
 * how the pages were got.
 */
export async function fingerprintFile(
  fd: number,
  size: number,
  pageSize: number,
  first: number,
  what: string,
  onBatch: (entries: Uint8Array, count: number, pages: Uint8Array, page: number) => void | Promise<void>,
  crc: Uint32Array | null = null,
  onBytes: ((bytes: Uint8Array) => void) | null = null,
  signal: AbortSignal | null = null,
  opts: FingerprintOptions = {},
): Promise<FingerprintAccess> {
  const pages = Math.ceil(size / pageSize);
  const bytes = FINGERPRINT_BATCH * pageSize;
  const access: FingerprintAccess = onBytes
    ? { how: 'read', why: 'its bytes are digested as they are read' }
    : pages === 0
      ? { how: 'read', why: 'empty' }
      : await chooseAccess(fd, size, opts.access ?? 'auto', opts.measure);
  if (access.how === 'map' && opts.pages === false && Math.floor(size / pageSize) > 0) {
    const done = await fingerprintRanges(fd, size, pageSize, first, what, onBatch, crc, signal);
    if (done) return access;
    access.how = 'read';
    access.why += '; read after the addon could not map it';
  }
  // Three batches in flight: one read, one hashed, one in onBatch (the receiver writes its clone then).
  const bufs = [tableBuffer(bytes), tableBuffer(bytes), tableBuffer(bytes)];
  const outs = [Buffer.alloc(FINGERPRINT_BATCH * ENTRY_SIZE), Buffer.alloc(FINGERPRINT_BATCH * ENTRY_SIZE)];
  const holes = new HoleFinder(fd, size, what);
  const shrank = (): IoError =>
    new IoError('ERR_DELTA_BASE_SHORT', `reading ${what}: it ended under its mapping, expected ${size} bytes (it shrank while being read)`);
  const read = async (page: number, buf: Buffer): Promise<Batch> => {
    const n = Math.min(FINGERPRINT_BATCH, pages - page);
    const want = Math.min(n * pageSize, size - page * pageSize);
    // Whole pages only: a partial last page is read and padded.
    if (access.how === 'map' && want === n * pageSize) {
      const h = holes.at(page * pageSize, n, pageSize);
      let mapping: ArrayBuffer | null = null;
      try {
        mapping = native.mapRange(fd, page * pageSize, want);
      } catch (e) {
        access.how = 'read';
        access.why += `; read after mapping failed (${(e as Error).message})`;
      }
      if (mapping) {
        const m = mapping;
        return { n, pages: new Uint8Array(m, 0, want), holes: h, bytes: want, release: () => native.unmapRange(m) };
      }
    }
    await readBase(fd, buf, want, page * pageSize, what);
    buf.fill(0, want, n * pageSize);
    return { n, pages: buf.subarray(0, n * pageSize), holes: null, bytes: want, release: NO_RELEASE };
  };
  let next = pages > 0 ? read(0, bufs[0]!) : null;
  let batch: Promise<void> = Promise.resolve();
  for (let page = 0, k = 0; page < pages; page += FINGERPRINT_BATCH, k++) {
    const cur = await next!;
    signal?.throwIfAborted();
    // Batch k - 2's buffers are free: its onBatch ended before batch k - 1's began.
    next = page + FINGERPRINT_BATCH < pages ? read(page + FINGERPRINT_BATCH, bufs[(k + 1) % 3]!) : null;
    next?.catch(() => {}); // awaited on the next turn
    const out = outs[k % 2]!;
    const n = cur.n;
    const printed = fingerprintPages(cur.pages, pageSize, n, first + page, out, crc ? crc.subarray(page, page + n) : null, cur.holes);
    // Both only read the batch: the digest runs here while the addon hashes on the pool.
    onBytes?.(cur.pages.subarray(0, cur.bytes));
    const count = await printed;
    // A mapping is left to the collector after a failure (nothing may unmap what may still be in use).
    if (count < 0) throw shrank();
    // In page order, one at a time, each while the next batch is read and hashed.
    await batch;
    batch = Promise.resolve(onBatch(out, count, cur.pages, page)).then(cur.release);
    batch.catch(() => {}); // awaited on the next turn, or below
  }
  await batch;
  // Nothing reads into them or hashes them any more (after a failure something may: left to the collector).
  releaseBuffers(...bufs, ...outs);
  return access;
}

const NO_PAGES = new Uint8Array(0);

/**
 * fingerprintFile's mapped path when onBatch needs no pages: FINGERPRINT_RANGE pages an addon call
 * (fingerprintRange), the next one hashed while onBatch takes the last; a partial last page is
 * read and padded. False, having called no onBatch, when the file's first range cannot be mapped.
 */
async function fingerprintRanges(
  fd: number,
  size: number,
  pageSize: number,
  first: number,
  what: string,
  onBatch: (entries: Uint8Array, count: number, pages: Uint8Array, page: number) => void | Promise<void>,
  crc: Uint32Array | null,
  signal: AbortSignal | null,
): Promise<boolean> {
  const whole = Math.floor(size / pageSize);
  const span = new Float64Array(2);
  const outs = [tableBuffer(FINGERPRINT_RANGE * ENTRY_SIZE), tableBuffer(FINGERPRINT_RANGE * ENTRY_SIZE)];
  const shrank = (): IoError =>
    new IoError('ERR_DELTA_BASE_SHORT', `reading ${what}: it ended under its mapping, expected ${size} bytes (it shrank while being read)`);
  const hash = (page: number, out: Uint8Array): Promise<number> => {
    const n = Math.min(FINGERPRINT_RANGE, whole - page);
    return fingerprintRange(
      fd,
      page * pageSize,
      n * pageSize,
      size,
      pageSize,
      first + page,
      out,
      crc?.subarray(page, page + n) ?? null,
      span,
    );
  };
  let next: Promise<number> | null = hash(0, outs[0]!);
  let batch: Promise<void> = Promise.resolve();
  for (let page = 0, k = 0; page < whole; page += FINGERPRINT_RANGE, k++) {
    let count: number;
    try {
      count = await next!;
    } catch (e) {
      if (page === 0) return false;
      throw new IoError('ERR_DELTA_MAP', `reading ${what}: ${(e as Error).message}`, e);
    }
    signal?.throwIfAborted();
    // After a failure the addon may still hash into the other buffer: both are left to the collector.
    if (count < 0) throw shrank();
    // Range k - 1's onBatch ends before range k + 1 is hashed into its buffer.
    await batch;
    next = page + FINGERPRINT_RANGE < whole ? hash(page + FINGERPRINT_RANGE, outs[(k + 1) % 2]!) : null;
    next?.catch(() => {}); // awaited on the next turn
    batch = Promise.resolve(onBatch(outs[k % 2]!, count, NO_PAGES, page));
    batch.catch(() => {}); // awaited on the next turn, or below
  }
  await batch;
  if (whole * pageSize < size) {
    // The partial last page: read, padded with zeros, hashed.
    const buf = Buffer.alloc(pageSize);
    const want = size - whole * pageSize;
    await readBase(fd, buf, want, whole * pageSize, what);
    const out = outs[0]!;
    const count = await fingerprintPages(buf, pageSize, 1, first + whole, out, crc?.subarray(whole, whole + 1) ?? null);
    await onBatch(out, count, NO_PAGES, whole);
  }
  releaseBuffers(...outs);
  return true;
}

/**
 * Fingerprints the sampled pages of the `size` bytes of `fd` (pages p with
 * p % stride < run; with run >= stride, every page), page indices from
 * `first`: `onBatch` gets each batch's entries (views valid until it returns),
 * in page order; when it returns true, no further batch is read.
 */
export async function fingerprintSample(
  fd: number,
  size: number,
  pageSize: number,
  first: number,
  stride: number,
  run: number,
  what: string,
  onBatch: (entries: Uint8Array, count: number) => boolean | void,
): Promise<void> {
  const pages = Math.ceil(size / pageSize);
  run = Math.min(run, stride);
  const runsPer = Math.max(1, Math.floor(FINGERPRINT_BATCH / run));
  const buf = tableBuffer(runsPer * run * pageSize);
  const out = tableBuffer(runsPer * run * ENTRY_SIZE);
  for (let k = 0; k * stride < pages; k += runsPer) {
    const pieces: Uint8Array[] = [];
    const positions: number[] = [];
    let n = 0;
    for (let r = k; r < k + runsPer && r * stride < pages; r++) {
      const at = r * stride;
      const count = Math.min(run, pages - at);
      const want = Math.min(count * pageSize, size - at * pageSize);
      pieces.push(buf.subarray(n * pageSize, n * pageSize + want));
      positions.push(at * pageSize);
      buf.fill(0, n * pageSize + want, (n + count) * pageSize);
      n += count;
    }
    try {
      await preadPieces(fd, pieces, positions);
    } catch (e) {
      if (!(e instanceof NativeIoError)) throw e;
      if (e.code === 'ESHORTREAD')
        throw new IoError(
          'ERR_DELTA_BASE_SHORT',
          `reading ${what}: ${e.moved} of ${e.asked} bytes at offset ${e.at} (it shrank while being read)`,
        );
      throw nativeIoFailure(e, { subject: what });
    }
    const count = await fingerprintPages(buf, pageSize, n, 0, out);
    // Positions in the buffer to page indices: run after run, each `run` pages but the file's last.
    for (let i = 0; i < count; i++) {
      const o = i * ENTRY_SIZE + 12;
      const pos = out.readUInt32LE(o);
      out.writeUInt32LE(first + (k + Math.floor(pos / run)) * stride + (pos % run), o);
    }
    if (onBatch(out, count) === true) break;
  }
  // Nothing reads into them any more (after a failure something may: left to the collector).
  releaseBuffers(buf, out);
}
