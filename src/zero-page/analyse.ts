/** Promise wrapper over the addon's analysePages (runs on the libuv pool). */
import { native } from '../native/load.js';

export function analysePages(pages: Uint8Array, pageSize: number, count: number, zeroOut: Uint8Array | null, crcOut: Uint32Array | null): Promise<number> {
  return new Promise((resolve, reject) => {
    native.analysePages(pages, pageSize, count, zeroOut, crcOut, (err, zeros) => (err ? reject(err) : resolve(zeros)));
  });
}
