/**
 * An image file as packets of pages, mapped or read (the image access, `--image-access`):
 * - `map` (the main thread's, for methods that send the pages as they are):
 *   whole pages inside the file are served from read-only mappings of 16 MiB
 *   windows (no copy of the page cache; a window is unmapped once its last
 *   packet has been written, so memory stays flat); the tail of a file that
 *   ends inside a page, or a file that cannot be mapped, is read into a
 *   scratch buffer the caller provides on demand.
 * - `read`: every packet is read with pread into the caller's scratch buffer,
 *   on the libuv pool from the main thread, or on a compute worker's own
 *   thread (forWorker). Pages in holes are read too (as zeros), unless the zero-page scanner
 *   never looks at them (ZeroPageDetector.skipsHoles, the CPU scan): then only the data is read,
 *   which on a guest's mostly sparse RAM file saves most of the copying (README, "Threads and
 *   copies").
 *
 * Which is cheaper depends on the host: the mapping's cost is per page-table entry and a read is
 * one copy. On one VM mapping a tmpfs file cost about five times reading it; on another, with the
 * same kernel settings, half (the figures: README, "Threads and copies, per packet"). So `auto`
 * maps on hugetlbfs (a VM's usual memory-backend-file, where the mapping costs no more than the
 * read and saves the copy) and elsewhere measures, at the first packet loaded: the thread's CPU
 * time to touch up to PROBE_BYTES of the image's data pages through a mapping and to read them
 * (native.probeImageAccess; data only, since a hole touched through a mapping of a tmpfs file has
 * a page allocated for it), then takes the mapping where it costs less than PROBE_MAP_SHARE of
 * the read. What it chose and why is reported (ImageSource.access, the sender's summary). A
 * compressing method needs a copy of the pages anyway (a mapping of a file truncated meanwhile is
 * SIGBUS in user space): its worker always reads, and nothing is measured.
 */
import fs from 'node:fs';
import { IoError, NativeIoError, nativeIoFailure } from '../errors.js';
import { native } from '../native/load.js';
import { resultName } from '../native/io-error.js';
import { preadPieces } from '../native/file-io.js';
import type { BlockSpec } from './ramblock.js';

const WINDOW = 16 * 1024 * 1024;
/** Data bytes `auto` measures each way (module comment): enough to see page-fault costs above the noise, a few ms. */
const PROBE_BYTES = 16 * 1024 * 1024;
/** Below this much data (a small or mostly sparse image) there is nothing worth measuring: read. */
const PROBE_MIN_BYTES = 1024 * 1024;
/** Extents probed at most (each one a mapping of its own). */
const PROBE_MAX_EXTENTS = 256;
/** `auto` maps when touching through a mapping costs less than this share of reading the same pages. */
const PROBE_MAP_SHARE = 0.8;
const OS_PAGE = 4096;
/** statfs(2)'s f_type of hugetlbfs (linux/magic.h). */
const HUGETLBFS_MAGIC = 0x958458f6;

/** How a sender gets an image's pages (module comment): `auto` maps images on hugetlbfs, and elsewhere measures. */
export const IMAGE_ACCESS = ['auto', 'map', 'read'] as const;
export type ImageAccess = (typeof IMAGE_ACCESS)[number];

/** Whether `path` lies on hugetlbfs, where mapping costs no more than a read. */
export async function onHugePages(path: string): Promise<boolean> {
  try {
    return (await fs.promises.statfs(path)).type === HUGETLBFS_MAGIC;
  } catch {
    return false;
  }
}

/** What `auto` measures with (native.probeImageAccess's shape): [code, mapNs, readNs] for the data extents given. */
export type Measure = (fd: number, extents: Float64Array) => Float64Array;

export interface LoadedPages {
  /** count x pageSize bytes: a view of a mapping, or the slab. */
  pages: Uint8Array;
  /** Pages that lie wholly in a hole of the file (read as zero, never read here), or null for none. */
  holes: Uint8Array | null;
  /** Call once the pages have been written. */
  release(): void;
}

interface Window {
  buffer: ArrayBuffer;
  refs: number;
  /** Every packet of the window has been handed out. */
  complete: boolean;
}

const NO_RELEASE = (): void => {};

/**
 * Listed pages with at most this many bytes between them are read with the
 * bytes between in one preadv: copying 16 KiB more from the page cache costs
 * less than a system call of its own (at 50% of the pages changed, a packet's
 * 128 scattered 4 KiB pages took some 60 calls). 4 pages of 4 KiB, 1 of 16 KiB, none of 64 KiB.
 */
export const GATHER_GAP_BYTES = 16384;

/**
 * The reads of a gathered job: each listed page into its slot of `slab`
 * (in list order; a partial last page zero-padded, only what the file holds
 * read), and each gap of at most GATHER_GAP_BYTES between two listed pages
 * (and no longer than `junk`) into `junk`, so that runs of nearby pages are one contiguous read (one
 * preadv: addon/file_io.cc groups pieces that follow on in the file).
 */
export function gatherReads(
  list: ArrayLike<number>,
  pageSize: number,
  size: number,
  slab: Uint8Array,
  junk: Uint8Array,
): { pieces: Uint8Array[]; positions: number[] } {
  const pieces: Uint8Array[] = [];
  const positions: number[] = [];
  for (let i = 0; i < list.length; i++) {
    const at = list[i]! * pageSize;
    const piece = slab.subarray(i * pageSize, (i + 1) * pageSize);
    // The block's last page may be partial: read what the file holds, pad with zeros.
    const inFile = Math.min(pageSize, size - at);
    if (inFile < pageSize) piece.fill(0, Math.max(0, inFile));
    if (inFile <= 0) continue;
    const gap = i > 0 ? list[i]! - list[i - 1]! - 1 : 0;
    // The gap lies before a page in the file, so wholly inside it.
    if (gap > 0 && gap * pageSize <= GATHER_GAP_BYTES && junk.length >= gap * pageSize) {
      pieces.push(junk.subarray(0, gap * pageSize));
      positions.push(at - gap * pageSize);
    }
    pieces.push(piece.subarray(0, inFile));
    positions.push(at);
  }
  return { pieces, positions };
}

export class ImageSource {
  /** Where gather() reads the pages between the listed ones (never looked at: concurrent reads may share it). */
  private junk: Uint8Array | null = null;
  private readonly windows = new Map<number, Window>();
  /** Whether to look for holes (false once the file system cannot tell). */
  private sparse = true;
  /**
   * Bytes [start, end) that lseek last found all data: no lseek for a packet inside them. Asking
   * again per packet costs a SEEK_HOLE each, which on tmpfs walks the page cache up to the next
   * hole, or to the end of a file that has none (every packet's call O(file)). A hole punched there
   * since reads as zeros all the same; only holes are never taken from an earlier answer.
   */
  private readonly dataSpan = new Float64Array(2);
  private readonly until = new Float64Array(1);

  private constructor(
    readonly name: string,
    readonly path: string,
    readonly fd: number,
    readonly size: number,
    /**
     * map: whole pages from mappings (until a mapping fails: then read-pool); read on this thread (a
     * worker's) or on the libuv pool (the main thread's).
     */
    private how: 'map' | 'read-here' | 'read-pool' | 'probe',
    /** Why the pages are got as `how` says (access). */
    private why: string,
    private readonly measure: Measure = native.probeImageAccess,
  ) {}

  /** How the pages are got (map or read) and why: the sender's summary reports it. */
  get access(): { how: 'map' | 'read'; why: string } {
    return { how: this.how === 'map' ? 'map' : 'read', why: this.why };
  }

  /**
   * The image for the main thread, mapped or read as `access` says (auto: the module comment; `measure` is
   * what it measures with, native.probeImageAccess unless a test gives a fake).
   */
  static async open(spec: BlockSpec, access: ImageAccess = 'auto', measure: Measure = native.probeImageAccess): Promise<ImageSource> {
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) => fs.open(spec.path, 'r', (e, f) => (e ? reject(e) : resolve(f))));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // "a/b=x" or "=x" is a path, not NAME=PATH: say so when no such file exists.
      const hint =
        code === 'ENOENT' && spec.path.includes('=') ? ' (read as a path: in NAME=PATH the name must be non-empty and without "/")' : '';
      throw new IoError(`ERR_${code ?? 'OPEN'}`, `cannot open image "${spec.path}": ${(e as Error).message}${hint}`, e);
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new IoError('ERR_NOT_A_FILE', `image "${spec.path}" is not a regular file`);
    }
    const make = (how: 'map' | 'read-pool' | 'probe', why: string): ImageSource =>
      new ImageSource(spec.name, spec.path, fd, st.size, how, why, measure);
    if (access !== 'auto') return make(access === 'map' ? 'map' : 'read-pool', `--image-access ${access}`);
    if (await onHugePages(spec.path)) return make('map', 'auto: on hugetlbfs');
    return make('probe', 'auto: not measured (no packet loaded here)');
  }

  /** The same file seen from a compute worker, through the same descriptor: read, not mapped (above). */
  static forWorker(fd: number, path: string, size: number): ImageSource {
    return new ImageSource(path, path, fd, size, 'read-here', 'read by a compute worker into its own buffer');
  }

  /**
   * The `count` pages at `offset` (offsets are handed out in increasing
   * order). Past the end of the file the last page is zero-padded. With
   * `skipHoles` (the scanner never reads a page in a hole: ZeroPageDetector.skipsHoles),
   * a read leaves the pages flagged in `holes` unread: their bytes in the
   * buffer are whatever it held, and only the file's data is copied. `known`:
   * the holes the caller already found for these pages (holesIn()), not asked again.
   */
  async load(
    offset: number,
    count: number,
    pageSize: number,
    scratch: () => Uint8Array,
    list?: Uint32Array,
    skipHoles = false,
    known?: Uint8Array | null,
  ): Promise<LoadedPages> {
    if (list) return this.gather(list, pageSize, scratch());
    if (this.how === 'probe') this.probe();
    const length = count * pageSize;
    const holes = known === undefined ? this.holesIn(offset, count, pageSize) : known;
    if (this.how === 'map' && offset + length <= this.size) {
      const mapped = this.mapped(offset, length);
      if (mapped) return { ...mapped, holes };
    }
    const slab = scratch();
    if (holes && skipHoles) {
      // Each run of pages outside the holes, one read each (holes flag whole pages inside the file only).
      for (let i = 0; i < count;) {
        if (holes[i]) {
          i++;
          continue;
        }
        let end = i + 1;
        while (end < count && !holes[end]) end++;
        await this.readPadded(slab, offset, i * pageSize, end * pageSize);
        i = end;
      }
    } else await this.readPadded(slab, offset, 0, length);
    return { pages: slab.subarray(0, length), holes, release: NO_RELEASE };
  }

  /** Bytes [from, to) of the packet at `offset` into the same bytes of `slab`, zero past the end of the file. */
  private async readPadded(slab: Uint8Array, offset: number, from: number, to: number): Promise<void> {
    const bytes = Math.max(0, Math.min(to, this.size - offset) - from);
    if (bytes > 0) await this.read(slab.subarray(from, from + bytes), offset + from, bytes);
    if (from + bytes < to) slab.fill(0, from + bytes, to);
  }

  /**
   * The pages `list` names (ascending page indices, scattered: the pages
   * between them travel otherwise), read back to back into `slab` with one
   * positional read call: pages up to GATHER_GAP_BYTES apart share a preadv, the
   * pages between them read into a scratch buffer no one looks at
   * (gatherReads). Read, not mapped: a file that shrank is an error here,
   * never a SIGBUS.
   */
  private async gather(list: Uint32Array, pageSize: number, slab: Uint8Array): Promise<LoadedPages> {
    this.junk ??= Buffer.allocUnsafeSlow(GATHER_GAP_BYTES);
    const { pieces, positions } = gatherReads(list, pageSize, this.size, slab, this.junk);
    try {
      await preadPieces(this.fd, pieces, positions);
    } catch (e) {
      if (!(e instanceof NativeIoError)) throw e;
      if (e.code === 'ESHORTREAD')
        throw (
          this.shrunk() ??
          new IoError(
            'ERR_IMAGE_SHRANK',
            `image "${this.path}" shrank while sending: ${e.moved} of ${e.asked} bytes at byte ${e.at}, expected ${this.size} bytes in all`,
          )
        );
      throw nativeIoFailure(e, { subject: `image "${this.path}"` });
    }
    return { pages: slab.subarray(0, list.length * pageSize), holes: null, release: NO_RELEASE };
  }

  /** `auto` off hugetlbfs: measures mapping against reading on this image's data pages, and takes the cheaper (module comment). */
  private probe(): void {
    const { how, why } = measureAccess(this.fd, this.size, this.measure);
    this.how = how === 'map' ? 'map' : 'read-pool';
    this.why = `auto: ${why}`;
  }

  /**
   * Which of the `count` pages at `offset` lie wholly in holes of the file
   * (lseek SEEK_DATA/SEEK_HOLE: a few calls per packet, none inside a span
   * already found all data), so that zero-page
   * detection can take them as zero without faulting in (and the kernel
   * zero-filling) page cache for them. Null when there is none.
   */
  holesIn(offset: number, count: number, pageSize: number): Uint8Array | null {
    if (!this.sparse) return null;
    const inFile = Math.min(count * pageSize, this.size - offset);
    if (offset >= this.dataSpan[0]! && offset + inFile <= this.dataSpan[1]!) return null;
    let extents: Float64Array;
    try {
      extents = native.dataExtents(this.fd, offset, inFile, this.until);
    } catch {
      this.sparse = false; // the hint is an optimisation: without it every page is read
      return null;
    }
    if (extents.length === 2 && extents[0] === offset && extents[1]! >= offset + inFile) {
      this.dataSpan[0] = offset;
      this.dataSpan[1] = this.until[0]!;
      return null;
    }
    // lseek reports everything past the end of a file as a hole: an image truncated under the
    // sender would otherwise be sent as zero pages, unread, and arrive "complete".
    const shrunk = this.shrunk();
    if (shrunk) throw shrunk;
    const holes = new Uint8Array(count);
    // Whole pages inside the file only: a tail page past the end is read and padded.
    holes.fill(1, 0, Math.floor(inFile / pageSize));
    for (let i = 0; i < extents.length; i += 2) {
      const first = Math.floor((extents[i]! - offset) / pageSize);
      const end = Math.ceil((extents[i + 1]! - offset) / pageSize);
      holes.fill(0, first, end);
    }
    return holes.includes(1) ? holes : null;
  }

  /** The error for this image being shorter now than when it was opened, or null. */
  shrunk(): IoError | null {
    let now: number;
    try {
      now = fs.fstatSync(this.fd).size;
    } catch {
      return null;
    }
    return now < this.size
      ? new IoError('ERR_IMAGE_SHRANK', `image "${this.path}" shrank while sending: it is now ${now} bytes, expected ${this.size} bytes`)
      : null;
  }

  private mapped(offset: number, length: number): LoadedPages | null {
    const index = Math.floor(offset / WINDOW);
    let win = this.windows.get(index);
    if (!win) {
      const start = index * WINDOW;
      const len = Math.min(WINDOW, Math.ceil((this.size - start) / OS_PAGE) * OS_PAGE);
      try {
        win = { buffer: native.mapRange(this.fd, start, len), refs: 0, complete: false };
      } catch (e) {
        // e.g. a file system without mmap: read instead
        this.how = 'read-pool';
        this.why += `; read after mapping failed (${(e as Error).message})`;
        return null;
      }
      // Offsets come in order: every earlier window has handed out all its packets.
      for (const [i, w] of this.windows) {
        w.complete = true;
        if (w.refs === 0) this.unmap(i, w);
      }
      this.windows.set(index, win);
    }
    const w = win;
    w.refs++;
    return {
      pages: new Uint8Array(w.buffer, offset - index * WINDOW, length),
      holes: null,
      release: () => {
        if (--w.refs === 0 && w.complete) this.unmap(index, w);
      },
    };
  }

  private unmap(index: number, w: Window): void {
    this.windows.delete(index);
    native.unmapRange(w.buffer);
  }

  /**
   * `length` bytes at `position` into `buf`: on the libuv pool from the main thread; on the calling
   * thread from a worker, which would only wait for the pool (it runs one packet at a time).
   */
  private read(buf: Uint8Array, position: number, length: number): Promise<void> {
    const failed = (err: NodeJS.ErrnoException, at: number): IoError =>
      new IoError(`ERR_${err.code ?? 'READ'}`, `reading image "${this.path}" at offset ${at}: ${err.message}`, err);
    const ended = (at: number): IoError =>
      new IoError('ERR_IMAGE_SHRANK', `image "${this.path}" shrank while sending: it ended at byte ${at}, expected ${this.size} bytes`);
    if (this.how === 'read-here') {
      for (let done = 0; done < length;) {
        let n: number;
        try {
          n = fs.readSync(this.fd, buf, done, length - done, position + done);
        } catch (e) {
          return Promise.reject(failed(e as NodeJS.ErrnoException, position + done));
        }
        if (n === 0) return Promise.reject(ended(position + done));
        done += n;
      }
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const step = (done: number): void => {
        if (done === length) return resolve();
        fs.read(this.fd, buf, done, length - done, position + done, (err, n) => {
          if (err) return reject(failed(err, position + done));
          if (n === 0) return reject(ended(position + done));
          step(done + n);
        });
      };
      step(0);
    });
  }

  close(): void {
    for (const [i, w] of this.windows) if (w.refs === 0) this.unmap(i, w);
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

/**
 * `auto` off hugetlbfs (module comment): measures mapping against reading on up to PROBE_BYTES of
 * the data pages of the `size` bytes of `fd`, and says which is cheaper and why.
 */
export function measureAccess(fd: number, size: number, measure: Measure = native.probeImageAccess): { how: 'map' | 'read'; why: string } {
  const pairs: number[] = [];
  let bytes = 0;
  try {
    for (let pos = 0; pos < size && bytes < PROBE_BYTES && pairs.length < 2 * PROBE_MAX_EXTENTS; pos += 4 * WINDOW) {
      const ext = native.dataExtents(fd, pos, Math.min(4 * WINDOW, size - pos));
      for (let i = 0; i < ext.length && bytes < PROBE_BYTES && pairs.length < 2 * PROBE_MAX_EXTENTS; i += 2) {
        // Whole pages inside the extent (the native side rounds the same way).
        const start = Math.ceil(ext[i]! / OS_PAGE) * OS_PAGE;
        const end = Math.min(Math.floor(ext[i + 1]! / OS_PAGE) * OS_PAGE, start + PROBE_BYTES - bytes);
        if (end <= start) continue;
        pairs.push(start, end);
        bytes += end - start;
      }
    }
  } catch (e) {
    return { how: 'read', why: `the file's data extents are unknown (${(e as Error).message})` };
  }
  const mib = (n: number): string => `${Number((n / 2 ** 20).toFixed(1))} MiB`;
  if (bytes < PROBE_MIN_BYTES) return { how: 'read', why: `only ${mib(bytes)} of data to measure on, too little` };
  const [code, mapNs, readNs] = measure(fd, Float64Array.from(pairs));
  if (code! < 0) return { how: 'read', why: `measuring failed (${resultName(code!)})` };
  const ms = (ns: number): string => `${(ns / 1e6).toFixed(2)} ms`;
  const figures = `touching ${mib(bytes)} of its data through a mapping took ${ms(mapNs!)} of CPU, reading it ${ms(readNs!)}`;
  return { how: mapNs! < PROBE_MAP_SHARE * readNs! ? 'map' : 'read', why: figures };
}
