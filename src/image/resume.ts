/**
 * Shared pieces of `mfd send --resume`: page runs (the compact form of a set
 * of pages, [start, count, ...], used by the receiver's journal and by
 * `ready.have`), digesting the pages one side already holds by reading them
 * back, and the sender's identity of an image.
 */
import fs from 'node:fs';
import { IoError } from '../errors.js';
import { analysePages } from '../native/packet-io.js';
import type { BlockDigest } from './digest.js';

/** Pages read back per read() when digesting held pages. */
const READ_BYTES = 4 << 20;

/** Pages in `runs`. */
export function runPages(runs: number[]): number {
  let n = 0;
  for (let i = 1; i < runs.length; i += 2) n += runs[i]!;
  return n;
}

/**
 * How many numbers of ready.have each block's runs may take (`lengths`: the
 * numbers each block's journal holds), so that together they stay within
 * `budget`: blocks that need less than an even split keep all theirs and
 * leave the rest to the others (water-filling, smallest first). Each share
 * is even (whole runs).
 */
export function shareRuns(lengths: number[], budget: number): number[] {
  const share = new Array<number>(lengths.length).fill(0);
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[a]! - lengths[b]!);
  let left = budget;
  order.forEach((i, k) => {
    const fair = 2 * Math.floor(left / (2 * (order.length - k)));
    share[i] = Math.min(lengths[i]!, fair);
    left -= share[i]!;
  });
  return share;
}

/**
 * At most `max` numbers of `runs` (an even count): the longest runs, in
 * order. What is left out is sent again, so this only costs time.
 */
export function limitRuns(runs: number[], max: number): number[] {
  if (runs.length <= max) return runs;
  const keep = Math.floor(max / 2);
  const idx = Array.from({ length: runs.length / 2 }, (_, i) => i);
  idx.sort((a, b) => runs[b * 2 + 1]! - runs[a * 2 + 1]!);
  return idx
    .slice(0, keep)
    .sort((a, b) => a - b)
    .flatMap((i) => [runs[i * 2]!, runs[i * 2 + 1]!]);
}

/** The runs of pages in 0..pages that are not in `held` (ascending, not overlapping). */
export function missingRuns(held: number[], pages: number): number[] {
  const out: number[] = [];
  let at = 0;
  for (let i = 0; i < held.length; i += 2) {
    if (held[i]! > at) out.push(at, held[i]! - at);
    at = held[i]! + held[i + 1]!;
  }
  if (at < pages) out.push(at, pages - at);
  return out;
}

/**
 * Adds the pages in `runs` of the `size`-byte file `fd` to `digest`, reading
 * them back (the last page zero-padded, as on the wire). `what` names the file
 * in errors; once `stopped()` (the migration failed), it stops reading.
 */
export async function digestRuns(
  fd: number,
  size: number,
  pageSize: number,
  runs: number[],
  digest: BlockDigest,
  what: string,
  stopped: () => boolean = () => false,
): Promise<void> {
  const buf = Buffer.alloc(Math.max(READ_BYTES - (READ_BYTES % pageSize), pageSize));
  const perRead = buf.length / pageSize;
  const crc = new Uint32Array(perRead);
  for (let r = 0; r < runs.length; r += 2) {
    const end = runs[r]! + runs[r + 1]!;
    for (let page = runs[r]!; page < end; page += perRead) {
      if (stopped()) return;
      const n = Math.min(perRead, end - page);
      const pos = page * pageSize;
      const want = Math.min(n * pageSize, size - pos);
      const got = await readFull(fd, buf, want, pos, what);
      buf.fill(0, got, n * pageSize);
      // One call per read for the read's CRCs, off the event loop (the transfer runs beside this).
      await analysePages(buf, pageSize, n, null, crc);
      for (let i = 0; i < n; i++) digest.add(page + i, crc[i]!);
    }
  }
}

async function readFull(fd: number, buf: Buffer, length: number, position: number, what: string): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.read(fd, buf, done, length - done, position + done, (e, got) =>
        e
          ? reject(new IoError(`ERR_${e.code ?? 'READ'}`, `reading back ${what} at offset ${position + done}: ${e.message}`, e))
          : resolve(got),
      ),
    );
    if (n === 0)
      throw new IoError(
        'ERR_SHORT_READ',
        `reading back ${what}: it ends at byte ${position + done}, expected at least ${position + length}`,
      );
    done += n;
  }
  return done;
}

/**
 * The sender's identity of an image: size, modification time (ns) and inode.
 * A resume compares it with the journaled one: an image rewritten since the
 * failed attempt is refused rather than mixed with the pages sent before.
 */
export function imageSource(fd: number): string {
  const st = fs.fstatSync(fd, { bigint: true });
  return `size=${st.size} mtime=${st.mtimeNs} ino=${st.ino}`;
}
