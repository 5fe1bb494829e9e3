/**
 * Page fingerprints (addon/delta.cc): XXH3-128 of every non-zero page, kept as
 * 16-byte entries (the top 96 bits of the hash and a u32 page index), so a
 * table costs 16 bytes per page. Files are read in batches of FINGERPRINT_BATCH
 * pages, the next batch read while the addon hashes the last one on all cores
 * and the caller takes the one before.
 */
import fs from 'node:fs';
import { IoError, NativeIoError, UsageError, nativeIoFailure } from '../errors.js';
import { native } from '../native/load.js';
import { ENTRY_SIZE, NO_MATCH, MAX_SAMPLE_ENTRIES } from '../control/delta.js';
import { preadPieces } from '../native/file-io.js';

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
    throw new UsageError(
      `${what}: delta transfer is not available in this build of mfd: the addon was built without xxhash.h (Debian: apt-get install libxxhash-dev, then rebuild: npm run build)`,
    );
  }
}

/** Entries of the non-zero pages among the `count` pages in `pages`, indices from `first`; into `out`, their number returned; with `crc`, every page's CRC-32C. */
export function fingerprintPages(
  pages: Uint8Array,
  pageSize: number,
  count: number,
  first: number,
  out: Uint8Array,
  crc: Uint32Array | null = null,
): Promise<number> {
  return new Promise((resolve, reject) =>
    native.deltaFingerprint(pages, pageSize, count, first, out, crc, (e, n) => (e ? reject(e) : resolve(n))),
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

/** True when entries i and j have the same key (the 96 hash bits). */
export function sameKey(a: Uint8Array, i: number, b: Uint8Array, j: number): boolean {
  return Buffer.compare(a.subarray(i * ENTRY_SIZE, i * ENTRY_SIZE + 12), b.subarray(j * ENTRY_SIZE, j * ENTRY_SIZE + 12)) === 0;
}

function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, length, position, (e, n) => (e ? reject(e) : resolve(n))));
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
): Promise<void> {
  const pages = Math.ceil(size / pageSize);
  const bytes = FINGERPRINT_BATCH * pageSize;
  // Three batches in flight: one read, one hashed, one in onBatch (the receiver writes its clone then).
  const bufs = [tableBuffer(bytes), tableBuffer(bytes), tableBuffer(bytes)];
  const outs = [Buffer.alloc(FINGERPRINT_BATCH * ENTRY_SIZE), Buffer.alloc(FINGERPRINT_BATCH * ENTRY_SIZE)];
  const read = async (page: number, buf: Buffer): Promise<number> => {
    const n = Math.min(FINGERPRINT_BATCH, pages - page);
    const want = Math.min(n * pageSize, size - page * pageSize);
    let got: number;
    try {
      got = await readFully(fd, buf, want, page * pageSize);
    } catch (e) {
      throw new IoError(`ERR_${(e as NodeJS.ErrnoException).code ?? 'READ'}`, `reading ${what}: ${(e as Error).message}`, e);
    }
    if (got < want)
      throw new IoError(
        'ERR_DELTA_BASE_SHORT',
        `reading ${what}: ${got} bytes at offset ${page * pageSize}, expected ${want} (it shrank while being read)`,
      );
    buf.fill(0, want, n * pageSize);
    return n;
  };
  let next = pages > 0 ? read(0, bufs[0]!) : null;
  let batch: Promise<void> = Promise.resolve();
  for (let page = 0, k = 0; page < pages; page += FINGERPRINT_BATCH, k++) {
    const n = await next!;
    signal?.throwIfAborted();
    // Batch k - 2's buffers are free: its onBatch ended before batch k - 1's began.
    next = page + FINGERPRINT_BATCH < pages ? read(page + FINGERPRINT_BATCH, bufs[(k + 1) % 3]!) : null;
    next?.catch(() => {}); // awaited on the next turn
    const buf = bufs[k % 3]!;
    const out = outs[k % 2]!;
    const printed = fingerprintPages(buf, pageSize, n, first + page, out, crc ? crc.subarray(page, page + n) : null);
    // Both only read the batch: the digest runs here while the addon hashes on the pool.
    onBytes?.(buf.subarray(0, Math.min(n * pageSize, size - page * pageSize)));
    const count = await printed;
    // In page order, one at a time, each while the next batch is read and hashed.
    await batch;
    batch = Promise.resolve(onBatch(out, count, buf.subarray(0, n * pageSize), page));
    batch.catch(() => {}); // awaited on the next turn, or below
  }
  await batch;
  // Nothing reads into them or hashes them any more (after a failure something may: left to the collector).
  releaseBuffers(...bufs, ...outs);
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
