/** Promise wrappers over the addon's per-packet calls, with their result codes mapped to errors. */
import type { NativeIoError } from '../errors.js';
import { native } from './load.js';
import { nativeIoError } from './io-error.js';

function toError(op: 'scan' | 'copy' | 'write', code: number, badPage = -1): NativeIoError {
  return nativeIoError(code, op === 'write' ? { on: 'file', op, ...(badPage >= 0 ? { badPage } : {}) } : { on: 'pages', op });
}

/**
 * Zero flags and per-page CRC-32C for one packet's pages, off the event loop; resolves to the zero
 * count. Pages flagged in `holes` are zero without being read (only used together with zeroOut).
 */
export function analysePages(
  pages: Uint8Array,
  pageSize: number,
  count: number,
  zeroOut: Uint8Array | null,
  crcOut: Uint32Array,
  holes: Uint8Array | null = null,
): Promise<number> {
  return new Promise((resolve, reject) => {
    native.analysePages(pages, pageSize, count, zeroOut, crcOut, holes, (err, r) => {
      if (err) return reject(err);
      if (r < 0) return reject(toError('scan', r));
      resolve(r);
    });
  });
}

/** analysePages on the calling thread (a compute worker, already off the event loop): no hop to the libuv pool and back. */
export function analysePagesHere(
  pages: Uint8Array,
  pageSize: number,
  count: number,
  zeroOut: Uint8Array | null,
  crcOut: Uint32Array,
  holes: Uint8Array | null = null,
): number {
  const r = native.analysePagesSync(pages, pageSize, count, zeroOut, crcOut, holes);
  if (r < 0) throw toError('scan', r);
  return r;
}

export interface WriteRequest {
  fd: number;
  /** The normal pages, back to back across the pieces. */
  pages: Uint8Array[];
  pageSize: number;
  offsets: Float64Array;
  normal: number;
  zero: number;
  blockSize: number;
  writeZeros: boolean;
  crc: Uint32Array;
}

/** Digests and writes one packet's pages. */
export function writePacket(w: WriteRequest): Promise<void> {
  return new Promise((resolve, reject) => {
    native.writePacket(w.fd, w.pages, w.pageSize, w.offsets, w.normal, w.zero, w.blockSize, w.writeZeros, w.crc, (err, r, badPage) => {
      if (err) return reject(err);
      if (r < 0) return reject(toError('write', r, badPage));
      resolve();
    });
  });
}

/**
 * writePacket on the calling thread (a compute worker, already off the event loop): no hop to the
 * libuv pool and back. Returns 0 or the negative code, with the page a padding failure is about
 * (writeFailure() makes the error of them, on whichever thread reports it).
 */
export function writePacketHere(w: WriteRequest): { result: number; badPage: number } {
  const [result, badPage] = native.writePacketSync(
    w.fd,
    w.pages,
    w.pageSize,
    w.offsets,
    w.normal,
    w.zero,
    w.blockSize,
    w.writeZeros,
    w.crc,
  );
  return { result, badPage };
}

/** The error of writePacketHere's negative result, as writePacket rejects with it. */
export function writeFailure(result: number, badPage: number): NativeIoError {
  return toError('write', result, badPage);
}
