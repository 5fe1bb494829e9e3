/**
 * --max-bandwidth (QEMU's max-bandwidth): one budget of bytes per second for
 * the whole migration, shared by every channel. Each packet reserves its
 * bytes on a common timeline before it is written, and may start once the
 * bytes reserved before it have had their time at the rate. A late start
 * (a timer that fired late, a channel busy compressing) keeps up to
 * CREDIT_MS of its lost time as credit, as QEMU's 100 ms rate-limit window
 * does (the first packet finds that credit too, for the time spent
 * connecting), so the rate holds on a busy host; no more, so no burst runs
 * further ahead of the rate than that.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** Longest single wait, so a failure elsewhere is noticed within it. */
const MAX_WAIT_MS = 100;
/** How far the timeline may lag behind the clock (the most a burst can run ahead). */
const CREDIT_MS = 100;

export class RateLimiter {
  /** performance.now() at which the next reservation may start. */
  private next = -Infinity;

  constructor(readonly bytesPerSec: number) {}

  /** Resolves when `bytes` may be written (or at once when `stopped()` turns true). */
  async take(bytes: number, stopped: () => unknown): Promise<void> {
    const now = performance.now();
    const start = Math.max(now - CREDIT_MS, this.next);
    this.next = start + (bytes * 1000) / this.bytesPerSec;
    for (let wait = start - performance.now(); wait > 0 && !stopped(); wait = start - performance.now()) {
      await sleep(Math.min(wait, MAX_WAIT_MS));
    }
  }
}
