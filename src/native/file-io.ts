/** Promise wrappers over the addon's positional file I/O (addon/file_io.cc): one call per buffer or packet. */
import { native } from './load.js';
import { errnoName, SHORT_READ } from './packet-io.js';

/** addon/file_io.h: a write moved fewer bytes than asked (never retried). */
export const SHORT_WRITE = -100002;

/** What failed, where: `at` is the file position of the failed call, `asked` and `moved` its byte counts. */
export class FileIoError extends Error {
  constructor(
    /** An errno name (ENOSPC, EINVAL, ...), or ESHORTWRITE / ESHORTREAD. */
    readonly code: string,
    readonly at: number,
    readonly asked: number,
    readonly moved: number,
  ) {
    super(
      code === 'ESHORTWRITE'
        ? `short write at byte ${at}: wrote ${moved} of ${asked} bytes`
        : code === 'ESHORTREAD'
          ? `end of file at byte ${at + moved}: read ${moved} of ${asked} bytes`
          : `${code} at byte ${at} (${asked} bytes)`,
    );
  }
}

function io(fd: number, mode: 0 | 1 | 2, pieces: Uint8Array[], positions: ArrayLike<number>): Promise<void> {
  return new Promise((resolve, reject) => {
    native.positionalIo(fd, mode, pieces, Float64Array.from(positions), (err, r, [at, asked, moved]) => {
      if (err) return reject(err);
      if (r === 0) return resolve();
      const code = r === SHORT_WRITE ? 'ESHORTWRITE' : r === SHORT_READ ? 'ESHORTREAD' : errnoName(-r);
      reject(new FileIoError(code, at, asked, moved));
    });
  });
}

/**
 * Writes pieces[i] at positions[i]; rejects with FileIoError on any failed or short write. With
 * `startWriteback`, the kernel is asked to start writing those pages to disk at once (not waited for).
 */
export function pwritePieces(fd: number, pieces: Uint8Array[], positions: ArrayLike<number>, startWriteback = false): Promise<void> {
  return io(fd, startWriteback ? 2 : 1, pieces, positions);
}

/** Fills pieces[i] from positions[i]; rejects with FileIoError (ESHORTREAD) when the file ends first. */
export function preadPieces(fd: number, pieces: Uint8Array[], positions: ArrayLike<number>): Promise<void> {
  return io(fd, 0, pieces, positions);
}

/** A zero-filled buffer at a 4096-aligned address (a multiple of 4096 bytes). */
export function alignedBuffer(size: number): Uint8Array {
  return new Uint8Array(native.alignedBuffer(size));
}
