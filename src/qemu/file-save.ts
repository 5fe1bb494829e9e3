/**
 * `mfd send --qemu --to file:PATH[,offset=N] [--mapped-ram]`: the replay (replay.ts) written to a
 * file QEMU loads with `migrate-incoming file:PATH[,offset=N]`, instead of a QEMU destination's
 * sockets. The main channel is written from byte N on, as QEMU's `migrate file:` writes it (the
 * file truncated to N first, bytes before N kept); without mapped-ram that is the whole file (no
 * multifd: QEMU takes multifd over file: only with mapped-ram). With mapped-ram each ramblock's
 * MEM_SIZE entry is followed by its MappedRamHeader, its bitmap and, at the next 1 MiB boundary of
 * the file, its page region: the non-zero pages are written in place and their bits set, zero
 * pages are left out (holes), as QEMU does. The layout does not depend on the destination's
 * multifd-channels. See file.ts for the reading side and docs/qemu-peer.md, "Migration files".
 */
import fs from 'node:fs';
import path from 'node:path';
import { IoError } from '../errors.js';
import { BlockDigest } from '../image/digest.js';
import { native } from '../native/load.js';
import { openForSave, type FileTarget, type OpenFile } from '../file/target.js';
import { alignUp, bitmapBytes, REGION_ALIGN } from '../file/format.js';
import { MAPPED_RAM_HEADER_SIZE, MAPPED_RAM_VERSION } from './file.js';

/** Where a replay goes instead of a QEMU destination. */
export interface QemuFileOutput {
  target: FileTarget;
  /** QEMU's mapped-ram layout (the destination must have the capability on too). */
  mappedRam: boolean;
}

/** Block bytes read and scanned at a time: 256 pages. */
const CHUNK = 1 << 20;

function writeAt(f: OpenFile, b: Uint8Array, at: number): void {
  try {
    for (let done = 0; done < b.length;) done += fs.writeSync(f.fd, b, done, b.length - done, at + done);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new IoError(`ERR_${err.code ?? 'IO'}`, `writing QEMU migration file "${f.path}" at byte ${at}: ${err.message}`, e);
  }
}

/**
 * The main channel of a replay, written to a file from the target's offset (as the replay's
 * socket sink: write, finish, bytes), and the mapped-ram regions in it.
 */
export class QemuFileSink {
  bytes = 0;
  /** File byte the next stream byte goes to. */
  position: number;
  private closed = false;

  private constructor(
    private readonly file: OpenFile,
    private readonly stopped: () => Error | null,
  ) {
    this.position = file.offset;
  }

  /** Creates (mode 0600) and truncates the file to the offset, as QEMU's outgoing file: migration does; `stopped` says the user interrupted. */
  static open(o: QemuFileOutput, stopped: () => Error | null): QemuFileSink {
    return new QemuFileSink(openForSave(o.target, false), stopped);
  }

  /** Lets the event loop see a Ctrl-C between writes (the writes themselves are synchronous), then stops if it came. */
  private async yieldToStop(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    const stop = this.stopped();
    if (stop) throw stop;
  }

  async write(chunks: Uint8Array[]): Promise<void> {
    for (const c of chunks) {
      writeAt(this.file, c, this.position);
      this.position += c.length;
      this.bytes += c.length;
    }
    await this.yieldToStop();
  }

  /**
   * Block `b`'s MappedRamHeader, bitmap and page region at the current position (just after its
   * name and used_length): each non-zero page of DIR/FILE at pages_offset + its offset, zero pages
   * not written; the stream goes on after the region. Returns the pages of each kind and the
   * crc32c-pages-v1 digest of the pages read.
   */
  async block(
    dir: string,
    b: { name: string; size: number; file: string },
    pageSize: number,
  ): Promise<{ normal: number; zero: number; digest: string }> {
    const headerAt = this.position;
    const bitmapOffset = headerAt + MAPPED_RAM_HEADER_SIZE;
    const bitmap = Buffer.alloc(bitmapBytes(b.size, pageSize));
    // REGION_ALIGN is QEMU's MAPPED_RAM_FILE_OFFSET_ALIGNMENT (1 MiB), as for mfd's own files.
    const pagesOffset = alignUp(bitmapOffset + bitmap.length, REGION_ALIGN);
    const src = path.join(dir, path.basename(b.file));
    let fd: number;
    try {
      fd = fs.openSync(src, 'r');
    } catch (e) {
      throw new IoError(
        `ERR_${(e as NodeJS.ErrnoException).code ?? 'OPEN'}`,
        `ramblock "${b.name}": cannot open ${src}: ${(e as Error).message}`,
        e,
      );
    }
    const counts = { normal: 0, zero: 0 };
    const buf = Buffer.allocUnsafe(CHUNK);
    const isZero = new Uint8Array(CHUNK / pageSize);
    const crc = new Uint32Array(CHUNK / pageSize);
    const digest = new BlockDigest();
    try {
      for (let at = 0; at < b.size; at += CHUNK) {
        const len = Math.min(CHUNK, b.size - at);
        if (fs.readSync(fd, buf, 0, len, at) !== len)
          throw new IoError('ERR_SHORT_READ', `ramblock "${b.name}": ${src} is shorter than ${b.size} bytes`);
        const n = len / pageSize;
        native.analysePagesSync(buf, pageSize, n, isZero.fill(0), crc);
        for (let i = 0; i < n; i++) digest.add(at / pageSize + i, crc[i]!);
        // Runs of non-zero pages, one write each.
        for (let i = 0; i < n;) {
          if (isZero[i]) {
            counts.zero++;
            i++;
            continue;
          }
          let j = i;
          for (; j < n && !isZero[j]; j++) {
            const page = at / pageSize + j;
            bitmap[page >> 3]! |= 1 << (page & 7);
          }
          writeAt(this.file, buf.subarray(i * pageSize, j * pageSize), pagesOffset + at + i * pageSize);
          counts.normal += j - i;
          i = j;
        }
        await this.yieldToStop();
      }
    } finally {
      fs.closeSync(fd);
    }
    const header = Buffer.alloc(MAPPED_RAM_HEADER_SIZE);
    header.writeUInt32BE(MAPPED_RAM_VERSION, 0);
    header.writeBigUInt64BE(BigInt(pageSize), 4);
    header.writeBigUInt64BE(BigInt(bitmapOffset), 12);
    header.writeBigUInt64BE(BigInt(pagesOffset), 20);
    writeAt(this.file, Buffer.concat([header, bitmap]), headerAt);
    this.bytes += pagesOffset + b.size - headerAt;
    this.position = pagesOffset + b.size;
    return { ...counts, digest: digest.hex() };
  }

  /** Closes the file; the stream is whole. */
  finish(): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.file.fd);
  }
}
