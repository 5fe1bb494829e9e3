/**
 * One ramblock's output file. Written under a temporary name next to the
 * target (`.NAME.mfd-partial`), sparse, and renamed over the target only
 * after the migration verified; with in-place mode the target itself is
 * written (zero pages zeroed) and a `NAME.mfd-partial` marker beside it says
 * it is incomplete until then. Writes are positional and clipped to the
 * block's declared size: nothing is ever written outside it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { IoError, ResumeError } from '../errors.js';
import { WriteGate } from '../io/write-gate.js';
import { NO_FOLLOW, checkRenamed, createFreshSync, writeFreshSync } from '../io/no-follow.js';

export class Output {
  /** Open file descriptor; writes go through use(), never the bare number. */
  private fd = -1;
  /** Operations on `fd` not finished yet: the descriptor outlives every one of them. */
  private readonly gate: WriteGate;
  private constructor(
    readonly name: string,
    readonly size: number,
    readonly finalPath: string,
    readonly writePath: string,
    readonly markerPath: string | null,
    readonly inPlace: boolean,
  ) {
    this.gate = new WriteGate(`output for ram block "${name}"`);
  }

  static tempPathFor(finalPath: string): string {
    return sidecarPath(finalPath, '.', '.mfd-partial');
  }

  /** The file the pages are written to: the target itself in place, else its temporary file. */
  static writePathFor(finalPath: string, inPlace: boolean): string {
    return inPlace ? finalPath : Output.tempPathFor(finalPath);
  }

  /**
   * Creates the output, or with `existing` (a resume) opens the one a failed
   * migration left, which must be there with the block's size.
   */
  static async create(name: string, size: number, finalPath: string, inPlace: boolean, existing = false): Promise<Output> {
    const out = new Output(
      name,
      size,
      finalPath,
      Output.writePathFor(finalPath, inPlace),
      inPlace ? sidecarPath(finalPath, '', '.mfd-partial') : null,
      inPlace,
    );
    try {
      // Links are never followed (see no-follow.ts): a link at the target is replaced by the
      // rename at the end, and refused in place (resolveTargets); one at a temporary name is removed.
      const st = fs.lstatSync(finalPath, { throwIfNoEntry: false });
      if (st && !st.isFile() && !(st.isSymbolicLink() && !inPlace))
        throw new IoError('ERR_OUTPUT_NOT_FILE', `output "${finalPath}" for ram block "${name}" exists and is not a regular file`);
      if (out.markerPath) writeFreshSync(out.markerPath, `mfd: ${finalPath} is being written by a migration that has not verified yet\n`);
      if (existing) {
        out.fd = await openExisting(out.writePath, name);
        const had = fs.fstatSync(out.fd).size;
        if (had !== size)
          throw new ResumeError(
            'ERR_RESUME_MISMATCH',
            `cannot resume ram block "${name}": "${out.writePath}" is ${had} bytes, expected ${size}`,
          );
        checkInPlace(fs.fstatSync(out.fd), out.writePath, name);
        return out;
      }
      // In place: keep the existing bytes (every page is rewritten); else a fresh sparse file.
      if (inPlace) {
        out.fd = fs.openSync(out.writePath, fs.constants.O_RDWR | fs.constants.O_CREAT | NO_FOLLOW, 0o644);
        checkInPlace(fs.fstatSync(out.fd), out.writePath, name);
      } else {
        // Readable too: recv --qemu reads a page back before it rewrites it (its digest).
        out.fd = createFreshSync(out.writePath, fs.constants.O_RDWR);
      }
      fs.ftruncateSync(out.fd, size);
    } catch (e) {
      // Never pushed to the migration's outputs, so nobody else cleans up after it: the
      // temporary file goes now (an in-place target keeps its marker, as after any failure).
      if (!existing && out.fd >= 0) await out.abort();
      out.closeQuietly();
      if (e instanceof IoError || e instanceof ResumeError) throw e;
      const err = e as NodeJS.ErrnoException;
      throw new IoError(
        `ERR_${err.code ?? 'OUTPUT'}`,
        `cannot create output for ram block "${name}" at "${out.writePath}": ${linkMessage(err)}`,
        e,
      );
    }
    return out;
  }

  /**
   * An output that keeps nothing, for checking a migration file without
   * restoring it (`mfd inspect`): pages are written to the null device, so
   * they take the same path (CRCs computed as they are written); commit and
   * abort only close it.
   */
  static discard(name: string, size: number): Output {
    const out = new Output(name, size, os.devNull, os.devNull, null, true);
    out.fd = fs.openSync(os.devNull, 'w');
    return out;
  }

  /** Not yet committed, aborted or kept. */
  get isOpen(): boolean {
    return this.fd >= 0;
  }

  /**
   * Runs `op` on the open descriptor. A failed migration aborts while the
   * addon may still be writing on the thread pool, so abort() and commit()
   * wait for every operation started here (see WriteGate).
   */
  use<T>(op: (fd: number) => Promise<T>): Promise<T> {
    return this.gate.run(() => op(this.fd));
  }

  /**
   * A synchronous write at `position` (null: at the file position, appending),
   * for a caller that orders its writes itself; none can be in flight at abort.
   * A failure is an IoError naming `what` was written.
   */
  writeSync(what: string, data: Uint8Array, position: number | null, length = data.length): void {
    if (this.fd < 0) throw new IoError('ERR_FILE_CLOSED', `output for ram block "${this.name}": write after the migration stopped`);
    let done = 0;
    try {
      while (done < length) done += fs.writeSync(this.fd, data, done, length - done, position === null ? null : position + done);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new IoError(`ERR_${err.code ?? 'WRITE'}`, `writing ${what} to "${this.writePath}": ${err.message}`, e);
    }
  }

  /** Reads `data.length` bytes at `position` back (recv --qemu: a page about to be rewritten, for its digest); short at the end of the file. */
  readSync(what: string, data: Uint8Array, position: number): number {
    if (this.fd < 0) throw new IoError('ERR_FILE_CLOSED', `output for ram block "${this.name}": read after the migration stopped`);
    try {
      return fs.readSync(this.fd, data, 0, data.length, position);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new IoError(`ERR_${err.code ?? 'READ'}`, `reading ${what} back from "${this.writePath}": ${err.message}`, e);
    }
  }

  /** Puts the file under its final name, after flushing it to disk when `sync` is set. */
  async commit(sync: boolean): Promise<void> {
    await this.gate.drain();
    try {
      // The fsync goes through the gate too: a failure meanwhile waits for it before closing.
      if (sync) await this.use((fd) => new Promise<void>((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve()))));
      if (this.gate.closed) throw new IoError('ERR_FILE_CLOSED', `finishing ram block "${this.name}": the migration stopped meanwhile`);
      if (!this.inPlace) {
        await fs.promises.rename(this.writePath, this.finalPath);
        checkRenamed(this.fd, this.finalPath, `ram block "${this.name}"`);
      }
      fs.closeSync(this.fd);
      this.fd = -1;
      if (this.markerPath) await fs.promises.rm(this.markerPath, { force: true });
    } catch (e) {
      if (e instanceof IoError) throw e;
      const err = e as NodeJS.ErrnoException;
      throw new IoError(`ERR_${err.code ?? 'COMMIT'}`, `finishing ram block "${this.name}" at "${this.finalPath}": ${err.message}`, e);
    }
  }

  /**
   * After a failure that leaves a journal to resume from, once its writes
   * have finished: the file stays as it is, under its temporary name.
   */
  async keep(): Promise<void> {
    await this.gate.close();
    this.closeQuietly();
  }

  /** After a failure, once its writes have finished: the temporary file goes; an in-place target keeps its marker. */
  async abort(): Promise<void> {
    await this.gate.close();
    this.closeQuietly();
    if (!this.inPlace) fs.rmSync(this.writePath, { force: true });
  }

  private closeQuietly(): void {
    if (this.fd >= 0) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* nothing left to do */
      }
      this.fd = -1;
    }
  }
}

async function openExisting(file: string, name: string): Promise<number> {
  try {
    return await new Promise<number>((resolve, reject) =>
      fs.open(file, fs.constants.O_RDWR | NO_FOLLOW, (e, fd) => (e ? reject(e) : resolve(fd))),
    );
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new ResumeError('ERR_RESUME_NO_PARTIAL', `cannot resume ram block "${name}": its partial output "${file}" is gone`);
    throw e;
  }
}

/**
 * A file written in place is the file the user named: not a link (O_NOFOLLOW
 * refused it), and not a file with other names (a hard link), which may be
 * outside the output directory. Checked before any file is touched
 * (resolveTargets), and again on the open file.
 */
export function checkInPlace(st: fs.Stats, file: string, name: string): void {
  if (!st.isFile()) throw new IoError('ERR_OUTPUT_NOT_FILE', `output "${file}" for ram block "${name}" is not a regular file`);
  if (st.nlink > 1)
    throw new IoError(
      'ERR_OUTPUT_LINK',
      `output "${file}" for ram block "${name}" has ${st.nlink} names (hard links): mfd writes no file that is also elsewhere; give a file of its own`,
    );
}

/** A system error's message; ELOOP (O_NOFOLLOW met a symbolic link) said plainly. */
export function linkMessage(e: NodeJS.ErrnoException): string {
  return e.code === 'ELOOP' ? `${e.message} (a symbolic link: mfd writes through none)` : e.message;
}

/** Longest file name Linux file systems take (bytes). */
export const NAME_MAX = 255;

/**
 * A file beside `finalPath` named `${prefix}NAME${suffix}`, room left for a
 * `.tmp` on top. A ramblock name may use all of NAME_MAX itself; for such a
 * name the sidecar is named after a hash of it instead, so the name that
 * works for the output works for its sidecars too.
 */
export function sidecarPath(finalPath: string, prefix: string, suffix: string): string {
  const base = path.basename(finalPath);
  let name = `${prefix}${base}${suffix}`;
  if (Buffer.byteLength(name) + '.tmp'.length > NAME_MAX)
    name = `${prefix}${createHash('sha256').update(base).digest('hex').slice(0, 32)}${suffix}`;
  return path.join(path.dirname(finalPath), name);
}
