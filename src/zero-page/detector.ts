/**
 * Zero-page detection backends, named by QEMU's zero-page-detection values.
 * A backend loads one packet's pages per call, off the event loop: it reads
 * them into the slab, flags the zero pages (when it detects at all) and fills
 * each page's CRC-32C for the ramblock digest, so page data is touched once
 * while it is hot.
 */
import { UsageError } from '../errors.js';
import type { PacketSlab } from '../native/packet-io.js';

export interface PacketSource {
  fd: number;
  path: string;
}

export interface ZeroPageDetector {
  /** QEMU's zero-page-detection value. */
  readonly name: string;
  readonly description: string;
  /**
   * Reads `length` bytes at `position` of `src` into slab.data and analyses
   * `pageCount` pages (the part past `length` is zero padding): sets
   * slab.zero[i] to 1 for each zero page (all 0 when this backend does not
   * detect) and slab.crc[i] to page i's CRC-32C. Resolves to the zero count;
   * rejects with the addon's PacketIoError (code ESHORTREAD when the file
   * ended early, else an errno name).
   */
  load(src: PacketSource, position: number, length: number, slab: PacketSlab, pageSize: number, pageCount: number): Promise<number>;
  /** Which implementation runs (e.g. "cpu-avx2"), for the run summary. */
  path(): string;
}

const detectors = new Map<string, ZeroPageDetector>();

export function registerDetector(d: ZeroPageDetector): void {
  if (detectors.has(d.name)) throw new Error(`zero-page detector ${d.name} registered twice`);
  detectors.set(d.name, d);
}

export function getDetector(name: string): ZeroPageDetector {
  const d = detectors.get(name);
  if (!d) throw new UsageError(`Expected one of ${listDetectors().join('|')} for --zero-page-detection but received "${name}"`, 'ERR_UNKNOWN_DETECTOR');
  return d;
}

export function listDetectors(): string[] {
  return [...detectors.keys()];
}
