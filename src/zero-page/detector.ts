/**
 * Zero-page detection backends, named by QEMU's zero-page-detection values.
 * A backend analyses one packet's pages per call, off the event loop: it
 * flags the zero pages (when it detects at all) and fills each page's CRC-32C
 * for the ramblock digest, so page data is read once while it is hot.
 */
import { UsageError } from '../errors.js';

export interface ZeroPageDetector {
  /** QEMU's zero-page-detection value. */
  readonly name: string;
  readonly description: string;
  /**
   * Analyses `count` pages of `pages` (count x pageSize bytes, possibly a
   * mapping of the image): sets zeroOut[i] to 1 for each zero page (all 0 when
   * this backend does not detect) and crcOut[i] to page i's CRC-32C. Resolves
   * to the zero count; rejects with a PacketIoError (code ESHORTREAD) when the
   * mapped image shrank under the scan.
   */
  analyse(pages: Uint8Array, pageSize: number, count: number, zeroOut: Uint8Array, crcOut: Uint32Array): Promise<number>;
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
