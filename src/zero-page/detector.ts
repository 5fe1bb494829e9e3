/**
 * Zero-page detection backends, named by QEMU's zero-page-detection values.
 *
 * Contract, per run:
 *   check()  once on the main thread before any channel opens: validates the
 *            options (--accel-path, --require-hardware), opens shared devices,
 *            and says which path the run takes; throws UsageError/AccelError.
 *   open()   once per channel, on the thread that scans for it (the event
 *            loop, or the channel's compute worker).
 *   analyse() per packet, off the event loop: flags the zero pages (when the
 *            backend detects at all) and fills each page's CRC-32C for the
 *            ramblock digest, so page data is read once while it is hot; counts
 *            the pages per path (and any fallback, with its reason) into the
 *            channel's tally.
 */
import { UsageError } from '../errors.js';
import type { PathTally } from '../offload/paths.js';
import type { BackendProbe, ProbeContext } from '../offload/probe.js';

export interface DetectorOptions {
  /** --accel-path values (QEMU's accel-path), e.g. dsa:/dev/dsa/wq0.0. */
  accelPaths: string[];
  /** Fallbacks are errors (--require-hardware). */
  requireHardware: boolean;
}

export interface ScannerOptions extends DetectorOptions {
  channel: number;
  tally: PathTally;
  /** The scanner runs on a compute worker, off the event loop: a CPU scan may run on that thread rather than hop to the libuv pool. */
  onWorker?: boolean;
}

export interface ZeroPageScanner {
  /**
   * Analyses `count` pages of `pages` (count x pageSize bytes, possibly a
   * mapping of the image): sets zeroOut[i] to 1 for each zero page (all 0 when
   * this backend does not detect) and crcOut[i] to page i's CRC-32C. Resolves
   * to the zero count; rejects with a PacketIoError (code ESHORTREAD) when the
   * mapped image shrank under the scan. `holes` (count flags, or null) marks
   * pages that lie in holes of a sparse image: zero without being read. A
   * detecting backend may take them as zero pages unread (counted under
   * HOLE_PATH); one that does not detect sends them as normal pages anyway.
   */
  analyse(
    pages: Uint8Array,
    pageSize: number,
    count: number,
    zeroOut: Uint8Array,
    crcOut: Uint32Array,
    holes?: Uint8Array | null,
  ): Promise<number>;
}

/** Path name of the zero pages taken from a sparse image's holes (lseek SEEK_HOLE) instead of a scan. */
export const HOLE_PATH = 'file-hole';

export interface ZeroPageDetector {
  /** QEMU's zero-page-detection value. */
  readonly name: string;
  readonly description: string;
  /** Whether the backend uses hardware (for --require-hardware). */
  readonly hardware: boolean;
  /**
   * True when its scanners take a page flagged in `holes` as zero without reading it (HOLE_PATH):
   * the sender may then leave such pages unread (ImageSource.load's skipHoles), since a zero page's
   * bytes go nowhere else (a method's prepare() gets the normal pages only), and may send a packet
   * wholly in holes without scanning it at all.
   */
  readonly skipsHoles?: boolean;
  /** Validates the run's options; returns the path the run takes (e.g. "cpu-avx2"), for the summary. */
  check(o: DetectorOptions): string;
  open(o: ScannerOptions): ZeroPageScanner;
  /** Device failures seen so far in this process (each to be logged once). */
  failures(): string[];
  /** A backend with hardware behind it reports that device for `mfd accel` (as a method's probe()). */
  probe?(ctx: ProbeContext): BackendProbe;
}

const detectors = new Map<string, ZeroPageDetector>();

export function registerDetector(d: ZeroPageDetector): void {
  if (detectors.has(d.name)) throw new Error(`zero-page detector ${d.name} registered twice`);
  detectors.set(d.name, d);
}

export function getDetector(name: string): ZeroPageDetector {
  const d = detectors.get(name);
  if (!d)
    throw new UsageError(
      `Expected one of ${listDetectors().join('|')} for --zero-page-detection but received "${name}"`,
      'ERR_UNKNOWN_DETECTOR',
    );
  return d;
}

export function listDetectors(): string[] {
  return [...detectors.keys()];
}
