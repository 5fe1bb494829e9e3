/** Promise wrappers over the addon's per-packet I/O calls, with their result codes mapped to errors. */
import os from 'node:os';
import { native } from './load.js';

/** Codes from addon/packet_io.h beyond -errno. */
export const SHORT_READ = -100000;
export const BAD_PADDING = -100001;

export class PacketIoError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly badPage = -1,
  ) {
    super(message);
  }
}

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

function toError(op: string, code: number, badPage = -1): PacketIoError {
  if (code === SHORT_READ) return new PacketIoError('ESHORTREAD', `${op}: end of file`);
  if (code === BAD_PADDING) return new PacketIoError('EPADDING', `${op}: non-zero bytes past the end of the block`, badPage);
  const name = errnoNames.get(-code) ?? `errno ${-code}`;
  return new PacketIoError(name, `${op}: ${name}`);
}

export interface PacketSlab {
  data: Uint8Array;
  zero: Uint8Array;
  crc: Uint32Array;
}

/** Reads a packet's pages into the slab and analyses them; resolves to the zero-page count. */
export function readPacket(fd: number, position: number, length: number, slab: PacketSlab, pageSize: number, pageCount: number, detect: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    native.readPacket(fd, position, length, slab.data, pageSize, pageCount, detect ? slab.zero : null, slab.crc, (err, r) => {
      if (err) return reject(err);
      if (r < 0) return reject(toError('read', r));
      if (!detect) slab.zero.fill(0, 0, pageCount);
      resolve(r);
    });
  });
}

export interface WriteRequest {
  fd: number;
  pages: Uint8Array;
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
