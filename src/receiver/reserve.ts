/**
 * Room for the last checkpoint on a full disk. A journal is rewritten through
 * a new file (journal.ts), which needs free space: when the outputs fill the
 * disk, the checkpoint after the failure would fail too, and the pages
 * written so far could not be resumed. So beside each journal the receiver
 * keeps `.NAME.mfd-reserve`: RESERVE_BYTES written (allocated, not a hole)
 * and held open. The last checkpoint after a failure is written into it, over
 * those bytes, so it needs no new space (on a file system that overwrites in
 * place; a copy-on-write one may still refuse), cut to the longest runs that
 * fit (a resume sends the other pages again), and it is renamed to be the
 * journal.
 */
import fs from 'node:fs';
import { IoError } from '../errors.js';
import { checkRenamed, createFreshSync } from '../io/no-follow.js';
import { syncDirectory } from '../io/sync-directory.js';
import { sidecarPath } from './output.js';

/** Bytes reserved per output: a journal of about 1900 runs. */
export const RESERVE_BYTES = 64 * 1024;

export function reservePathFor(finalPath: string): string {
  return sidecarPath(finalPath, '.', '.mfd-reserve');
}

export class Reserve {
  private constructor(
    readonly file: string,
    private fd: number,
  ) {}

  /** Writes the reserve beside `finalPath`; a disk too full for it fails here, before any page. */
  static make(finalPath: string): Reserve {
    const file = reservePathFor(finalPath);
    let fd = -1;
    try {
      fd = createFreshSync(file);
      const zeros = Buffer.alloc(RESERVE_BYTES);
      for (let done = 0; done < zeros.length;) done += fs.writeSync(fd, zeros, done);
      return new Reserve(file, fd);
    } catch (e) {
      if (fd >= 0) fs.closeSync(fd);
      fs.rmSync(file, { force: true });
      const err = e as NodeJS.ErrnoException;
      throw new IoError(
        `ERR_${err.code ?? 'RESERVE'}`,
        `cannot reserve ${RESERVE_BYTES} bytes for the progress journal at "${file}": ${err.message}`,
        e,
      );
    }
  }

  /** Not yet used or released. */
  get isOpen(): boolean {
    return this.fd >= 0;
  }

  /** Writes `text` (at most RESERVE_BYTES) over the reserve, flushes it and renames it to `final`. */
  async writeAs(text: string, final: string): Promise<void> {
    const fd = this.fd;
    this.fd = -1;
    try {
      const b = Buffer.from(text);
      for (let done = 0; done < b.length;) done += fs.writeSync(fd, b, done, b.length - done, done);
      fs.ftruncateSync(fd, b.length);
      await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (e) => (e ? reject(e) : resolve())));
      await fs.promises.rename(this.file, final);
      checkRenamed(fd, final, `progress journal "${final}"`);
      await syncDirectory(final);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(this.file, { force: true });
    }
  }

  /** Gives the room back; never throws (a reserve left behind is only a stale file). */
  release(): void {
    if (this.fd < 0) return;
    try {
      fs.closeSync(this.fd);
      fs.rmSync(this.file, { force: true });
    } catch {
      /* see above */
    }
    this.fd = -1;
  }
}
