/**
 * Which implementation handled each packet and page, and why anything fell
 * back: the counts behind the run summary's "paths" block. Every backend that
 * has more than one path (hardware, software, raw) counts into a PathTally of
 * its channel; the sender and receiver add the channels up. A tally made with
 * requireHardware turns the first fallback into an AccelError naming what was
 * missing (--require-hardware).
 */
import { AccelError } from '../errors.js';

export interface PathCounts {
  /** Packets per path (a packet whose pages took several paths counts under each). */
  packets: Record<string, number>;
  /** Pages per path. */
  pages: Record<string, number>;
  /** Pages that fell back, by reason. */
  fallbacks: Record<string, number>;
}

export function emptyPathCounts(): PathCounts {
  return { packets: {}, pages: {}, fallbacks: {} };
}

function bump(r: Record<string, number>, key: string, n: number): void {
  if (n !== 0) r[key] = (r[key] ?? 0) + n;
}

export class PathTally {
  counts: PathCounts = emptyPathCounts();

  /**
   * @param what the backend, for --require-hardware messages (e.g. "qpl compression").
   * @param requireHardware fallbacks are errors.
   */
  constructor(
    readonly what: string,
    readonly requireHardware = false,
  ) {}

  /** `pages` pages of one packet took `path`. */
  add(path: string, pages: number, packets = 1): void {
    if (pages === 0 && packets === 0) return;
    bump(this.counts.packets, path, packets);
    bump(this.counts.pages, path, pages);
  }

  /**
   * `pages` pages fell back for `reason`; `missing` says what was not there
   * (for --require-hardware), e.g. "an IAA device (this build has no libqpl)".
   */
  fallback(reason: string, pages: number, missing: string): void {
    if (pages === 0) return;
    bump(this.counts.fallbacks, reason, pages);
    if (this.requireHardware) {
      throw new AccelError(
        'ERR_HARDWARE_REQUIRED',
        `${this.what}: ${pages} page(s) fell back (${reason}): ${missing}; --require-hardware forbids fallbacks`,
      );
    }
  }

  merge(other: PathCounts): void {
    for (const k of ['packets', 'pages', 'fallbacks'] as const) {
      for (const [key, n] of Object.entries(other[k])) bump(this.counts[k], key, n);
    }
  }

  /** The counts since the last take(), and a fresh start (to ship a worker's counts per packet). */
  take(): PathCounts {
    const c = this.counts;
    this.counts = emptyPathCounts();
    return c;
  }
}

/** One line per backend for the human summary: "hardware 0 pages, software 812 pages; fallbacks: no-device 812". */
export function formatPathCounts(c: PathCounts): string {
  const list = (r: Record<string, number>, unit: string): string =>
    Object.entries(r)
      .map(([k, n]) => `${k} ${n} ${unit}`)
      .join(', ') || 'none';
  const fallbacks = Object.keys(c.fallbacks).length ? `; fallbacks: ${list(c.fallbacks, 'pages')}` : '; no fallbacks';
  return `${list(c.pages, 'pages')} (${list(c.packets, 'packets')})${fallbacks}`;
}
