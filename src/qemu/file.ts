/**
 * QEMU's own migration files (`migrate file:PATH[,offset=N]`, QEMU 8.2+), read by
 * `mfd recv --qemu --from file:` and `mfd inspect` through the one main-channel parser
 * (main-channel.ts): the file is the main channel's stream from byte N. Without mapped-ram that is
 * all there is (QEMU allows multifd over file: only with mapped-ram). With mapped-ram (9.0+; the
 * configuration section lists the capability) each ramblock's entry in the MEM_SIZE record is
 * followed by a 28-byte MappedRamHeader, the block's page bitmap and its page region, where page i
 * is at pages_offset + i x page size when bit i is set and is zero otherwise; the stream goes on
 * after the region. Multifd channels of a mapped-ram migration write into the regions, so the file
 * looks the same for any channel count. Offsets in the header are absolute file offsets; every
 * one is checked against the file before a byte of the region is used, and errors name the file
 * byte. See docs/qemu-peer.md, "Migration files".
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { ConnectionError, IoError, ProtocolError, UnsupportedStreamError } from '../errors.js';
import type { FileTarget } from '../file/target.js';
import { bitmapBytes } from '../file/format.js';
import { MAPPED_RAM, MainReader, StreamReader, readConfiguration, type MappedRamReader } from './main-channel.js';
import { QEMU_VM_CONFIGURATION, QEMU_VM_FILE_MAGIC, QEMU_VM_SUBSECTION, Writer } from './format.js';

/** MappedRamHeader (migration/ram.c): be32 version, be64 page_size, be64 bitmap_offset, be64 pages_offset. */
export const MAPPED_RAM_HEADER_SIZE = 28;
/** MAPPED_RAM_HDR_VERSION: the one QEMU 9.0..10.x writes. */
export const MAPPED_RAM_VERSION = 1;
/** Region bytes read at a time (QEMU's MAPPED_RAM_LOAD_BUF_SIZE). */
const CHUNK = 1 << 20;
/** The configuration subsection that lists capabilities, and where QEMU puts it (after target-page-bits, before uuid). */
const CAPABILITIES = 'configuration/capabilities';

/** An open QEMU migration file: its main-channel reader, starting at the URI's offset (offsets are file bytes). */
export interface QemuFile {
  reader: FileReader;
  /** Names the file in errors. */
  where: string;
  size: number;
  /** The mapped-ram reader for this file, given to parseMainChannel. */
  mappedRam: MappedRamReader;
  close(): void;
}

function ioError(what: string, e: unknown): IoError {
  const err = e as NodeJS.ErrnoException;
  return new IoError(`ERR_${err.code ?? 'IO'}`, `${what}: ${err.message}`, e);
}

/** Whether the bytes at the target's offset are QEMU's stream magic ("QEVM"): a regular file only. */
export function isQemuMigrationFile(t: FileTarget): boolean {
  let fd = -1;
  try {
    if (!fs.statSync(t.path).isFile()) return false;
    fd = fs.openSync(t.path, 'r');
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, t.offset) === 4 && b.readUInt32BE(0) === QEMU_VM_FILE_MAGIC;
  } catch {
    return false;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

/**
 * The main channel read from a file of `size` bytes with positional reads, a window at a time:
 * `offset` is the file byte, and seek() moves it (past a mapped-ram region). Bytes taken stay
 * valid until the next call (each window is a fresh buffer).
 */
export class FileReader extends MainReader {
  private window: Buffer = Buffer.alloc(0);
  private start = 0;
  /** Bytes read from the file so far. */
  bytesRead = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly where: string,
    offset: number,
  ) {
    super();
    this.offset = offset;
  }

  /** Bytes [at, at + n) of the file, read whole; a short file is a truncated migration. */
  read(at: number, n: number, what: string): Buffer {
    if (at + n > this.size) {
      throw new ConnectionError(
        'ERR_QEMU_MAIN_TRUNCATED',
        `${this.where}: the file ends at byte ${this.size} in the middle of ${what} (${Math.max(0, this.size - at)} of ${n} bytes there)`,
      );
    }
    const b = Buffer.allocUnsafe(n);
    for (let got = 0; got < n;) {
      let k: number;
      try {
        k = fs.readSync(this.fd, b, got, n - got, at + got);
      } catch (e) {
        throw ioError(`reading ${this.where} at byte ${at + got}`, e);
      }
      if (k === 0)
        throw new ConnectionError(
          'ERR_QEMU_MAIN_TRUNCATED',
          `${this.where}: the file ends at byte ${at + got} in the middle of ${what} (did it shrink?)`,
        );
      got += k;
    }
    this.bytesRead += n;
    return b;
  }

  private ensure(n: number, what: string): Buffer {
    const at = this.offset - this.start;
    if (at >= 0 && at + n <= this.window.length) return this.window.subarray(at, at + n);
    if (this.offset + n > this.size) this.read(this.offset, n, what); // throws
    this.window = this.read(this.offset, Math.min(Math.max(n, CHUNK), this.size - this.offset), what);
    this.start = this.offset;
    return this.window.subarray(0, n);
  }

  take(n: number, what: string): Promise<Buffer> {
    const b = this.ensure(n, what);
    this.offset += n;
    this.record?.push(Buffer.from(b));
    return Promise.resolve(b);
  }

  peek(what: string): Promise<number> {
    return Promise.resolve(this.ensure(1, what)[0]!);
  }

  /** Moves to file byte `offset` (within the file). */
  seek(offset: number): void {
    this.offset = offset;
  }

  drain(sink: (b: Buffer) => void): Promise<void> {
    while (this.offset < this.size) {
      const n = Math.min(CHUNK, this.size - this.offset);
      const b = Buffer.from(this.ensure(n, 'the device state'));
      this.offset += n;
      sink(b);
    }
    return Promise.resolve();
  }
}

/** Opens a QEMU migration file for reading from its offset. Only a regular file: its size bounds every offset in it. */
export function openQemuFile(t: FileTarget, pageSize: number): QemuFile {
  const where = `QEMU migration file "${t.path}"`;
  let fd: number;
  try {
    if (!fs.statSync(t.path).isFile()) throw new IoError('ERR_NOT_A_FILE', `${where} is not a regular file`);
    fd = fs.openSync(t.path, 'r');
  } catch (e) {
    if (e instanceof IoError) throw e;
    throw ioError(`cannot open ${where}`, e);
  }
  const size = fs.fstatSync(fd).size;
  if (t.offset > size) {
    fs.closeSync(fd);
    throw new ProtocolError(
      'ERR_QEMU_FILE_OFFSET',
      `${where}: the migration is said to start at byte ${t.offset}, but the file has ${size} bytes`,
    );
  }
  const reader = new FileReader(fd, size, where, t.offset);
  let open = true;
  return {
    reader,
    where,
    size,
    mappedRam: mappedRamReader(reader, pageSize, where),
    close: () => {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

interface Region {
  name: string;
  size: number;
  bitmap: Buffer;
  pagesOffset: number;
}

/**
 * The mapped-ram reader of one file: for each block, the header (version 1, the stream's page
 * size), the bitmap (after the header, inside the file, no bit set past the block's pages) and the
 * region (page-aligned, after the bitmap, inside the file, after everything before it) are
 * checked, and the stream goes on after the region. Then pages() reads the runs of set bits (at
 * most 1 MiB at a time) as pages and hands on the clear ones as zero pages, without reading them.
 */
export function mappedRamReader(r: FileReader, pageSize: number, where: string): MappedRamReader {
  const regions: Region[] = [];
  return {
    async block(block) {
      const at = r.offset;
      const b = Buffer.from(await r.take(MAPPED_RAM_HEADER_SIZE, `the mapped-ram header of ramblock "${block.name}"`));
      const what = `${where}, mapped-ram header of ramblock "${block.name}" at byte ${at}`;
      const u64 = (o: number): number => b.readUInt32BE(o) * 2 ** 32 + b.readUInt32BE(o + 4);
      const version = b.readUInt32BE(0);
      if (version !== MAPPED_RAM_VERSION) {
        throw new UnsupportedStreamError(
          `${what}: version ${version}, expected ${MAPPED_RAM_VERSION} (QEMU 9.0..10.x)`,
          'ERR_QEMU_MAPPED_RAM_VERSION',
        );
      }
      const ps = u64(4);
      if (ps !== pageSize)
        throw new UnsupportedStreamError(
          `${what}: page size ${ps} (byte ${at + 4}), expected ${pageSize}`,
          'ERR_QEMU_MAPPED_RAM_PAGE_SIZE',
        );
      const bitmapOffset = u64(12);
      const pagesOffset = u64(20);
      const pages = block.size / pageSize;
      const bitmapSize = bitmapBytes(block.size, pageSize);
      const headerEnd = r.offset;
      if (bitmapOffset < headerEnd || bitmapOffset + bitmapSize > r.size) {
        throw new ProtocolError(
          'ERR_QEMU_MAPPED_RAM_OFFSET',
          `${what}: bitmap offset ${bitmapOffset} (byte ${at + 12}), expected ${headerEnd} or later (after the header) with its ${bitmapSize} bytes (used_length ${block.size}) inside the file's ${r.size} bytes`,
        );
      }
      if (pagesOffset % pageSize !== 0) {
        throw new ProtocolError(
          'ERR_QEMU_MAPPED_RAM_ALIGN',
          `${what}: pages offset ${pagesOffset} (byte ${at + 20}) is not a multiple of the page size ${pageSize}`,
        );
      }
      if (pagesOffset < bitmapOffset + bitmapSize) {
        throw new ProtocolError(
          'ERR_QEMU_MAPPED_RAM_OFFSET',
          `${what}: pages offset ${pagesOffset} (byte ${at + 20}) overlaps the bitmap, bytes ${bitmapOffset}..${bitmapOffset + bitmapSize - 1} (${pages} pages), expected ${bitmapOffset + bitmapSize} or later`,
        );
      }
      if (pagesOffset + block.size > r.size) {
        throw new ProtocolError(
          'ERR_QEMU_MAPPED_RAM_OFFSET',
          `${what}: the page region, bytes ${pagesOffset}..${pagesOffset + block.size - 1} (used_length ${block.size}), ends past the file's ${r.size} bytes`,
        );
      }
      const bitmap = r.read(bitmapOffset, bitmapSize, `the mapped-ram bitmap of ramblock "${block.name}"`);
      for (let i = pages; i < bitmapSize * 8; i++) {
        if (bitmap[i >> 3]! & (1 << (i & 7))) {
          throw new ProtocolError(
            'ERR_QEMU_MAPPED_RAM_BITMAP',
            `${where}, mapped-ram bitmap of ramblock "${block.name}": bit ${i} (byte ${bitmapOffset + (i >> 3)}) is set, but the block has ${pages} pages (used_length ${block.size})`,
          );
        }
      }
      regions.push({ name: block.name, size: block.size, bitmap, pagesOffset });
      // The next block (or the rest of the stream) follows the region: nothing of it is read twice.
      r.seek(pagesOffset + block.size);
    },
    async pages(epoch, h) {
      const max = CHUNK / pageSize;
      const set = (bm: Buffer, i: number): boolean => (bm[i >> 3]! & (1 << (i & 7))) !== 0;
      for (const g of regions) {
        const pages = g.size / pageSize;
        for (let i = 0; i < pages;) {
          if (!set(g.bitmap, i)) {
            h.onZero(g.name, i * pageSize, 0, epoch);
            i++;
            continue;
          }
          let n = 1;
          while (n < max && i + n < pages && set(g.bitmap, i + n)) n++;
          const data = r.read(g.pagesOffset + i * pageSize, n * pageSize, `the pages of ramblock "${g.name}"`);
          for (let j = 0; j < n; j++) h.onPage(g.name, (i + j) * pageSize, data.subarray(j * pageSize, (j + 1) * pageSize), epoch);
          i += n;
          // Let a Ctrl-C or a failure elsewhere in between.
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      }
      regions.length = 0;
    },
  };
}

/**
 * `raw` (a configuration section as received, type byte included) with the mapped-ram capability
 * listed or not: a QEMU destination refuses a stream whose listed capabilities differ from its own
 * ("Capability ... is off, but received capability is on"). Other subsections are kept as they were.
 */
export async function configurationWith(raw: Buffer, mappedRam: boolean): Promise<Buffer> {
  if (raw.length === 0 || raw[0] !== QEMU_VM_CONFIGURATION) return raw;
  const where = 'the saved configuration section';
  // A byte that is no subsection marker after it, as the next section's type byte is in a stream.
  const c = await readConfiguration(new StreamReader(Readable.from([raw.subarray(1), Buffer.from([0])]), where), where);
  if (c.capabilities.includes(MAPPED_RAM) === mappedRam) return raw;
  const caps = [...c.capabilities.filter((x) => x !== MAPPED_RAM), ...(mappedRam ? [MAPPED_RAM] : [])];
  const w = new Writer().bytes(c.head);
  const before = c.subsections.filter((x) => x.name === 'configuration/target-page-bits');
  const after = c.subsections.filter((x) => x.name !== CAPABILITIES && x.name !== 'configuration/target-page-bits');
  for (const x of before) w.bytes(x.raw);
  if (caps.length > 0) {
    w.u8(QEMU_VM_SUBSECTION).str(CAPABILITIES).u32(1).u32(caps.length);
    for (const cap of caps) w.str(cap);
  }
  for (const x of after) w.bytes(x.raw);
  return w.take();
}
