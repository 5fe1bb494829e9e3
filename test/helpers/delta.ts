/** Pages for the delta tests (test/delta/): distinct by seed, written to image files. */
import fs from 'node:fs';
import t, { type Test } from 'tap';
import { DELTA_UNAVAILABLE, native } from '../../src/native/load.js';

export const PS = 4096;

/** Why delta transfer cannot be tested with this addon (built without xxHash), or false: a test's `skip`. */
export const deltaUnavailable: string | false = native.deltaAvailable ? false : `delta transfer is unavailable: ${DELTA_UNAVAILABLE}`;

/** Ends the test file with a skip, saying why, when the addon has no xxHash (delta transfer unavailable). */
export function requireDeltaOrSkip(): void {
  if (deltaUnavailable) {
    t.plan(0, deltaUnavailable);
    process.exit(0);
  }
}

/** A 4 KiB page whose bytes follow from `seed` (no two seeds give the same page). */
export const page = (seed: number): Buffer => {
  const b = Buffer.alloc(PS);
  for (let i = 0; i < PS; i += 4) b.writeUInt32LE((Math.imul(seed + 1, 2654435761) ^ Math.imul(i + 7, 40503)) >>> 0, i);
  return b;
};

/** Writes pages (seeds; -1 = zero page) to `file`, plus `tail` bytes of one more page. */
export function writePages(file: string, seeds: number[], tail = 0): string {
  fs.writeFileSync(file, Buffer.concat([...seeds.map((s) => (s < 0 ? Buffer.alloc(PS) : page(s))), page(424242).subarray(0, tail)]));
  return file;
}

/** statfs(2)'s f_type of tmpfs (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;

/** A folder on tmpfs (/dev/shm), removed at the test's end; null where there is none. */
export function tmpfsDir(t: Test): string | null {
  try {
    if (fs.statfsSync('/dev/shm').type !== TMPFS_MAGIC) return null;
    const d = fs.mkdtempSync('/dev/shm/mfd-test-');
    t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
    return d;
  } catch {
    return null;
  }
}
