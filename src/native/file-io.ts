/** Promise wrappers over the addon's positional file I/O (addon/file_io.cc): one call per buffer or packet. */
import { native } from './load.js';
import { nativeIoError } from './io-error.js';

function io(fd: number, mode: 0 | 1 | 2, pieces: Uint8Array[], positions: ArrayLike<number>): Promise<void> {
  return new Promise((resolve, reject) => {
    native.positionalIo(fd, mode, pieces, Float64Array.from(positions), (err, r, [at, asked, moved]) => {
      if (err) return reject(err);
      if (r === 0) return resolve();
      reject(nativeIoError(r, { on: 'file', op: mode === 0 ? 'read' : 'write', at, asked, moved }));
    });
  });
}

/**
 * Writes pieces[i] at positions[i]; rejects with a NativeIoError on any failed or short write (ESHORTWRITE). With
 * `startWriteback`, the kernel is asked to start writing those pages to disk at once (not waited for).
 */
export function pwritePieces(fd: number, pieces: Uint8Array[], positions: ArrayLike<number>, startWriteback = false): Promise<void> {
  return io(fd, startWriteback ? 2 : 1, pieces, positions);
}

/** Fills pieces[i] from positions[i]; rejects with a NativeIoError (ESHORTREAD) when the file ends first. */
export function preadPieces(fd: number, pieces: Uint8Array[], positions: ArrayLike<number>): Promise<void> {
  return io(fd, 0, pieces, positions);
}

/** A zero-filled buffer at a 4096-aligned address (a multiple of 4096 bytes). */
export function alignedBuffer(size: number): Uint8Array {
  return new Uint8Array(native.alignedBuffer(size));
}
