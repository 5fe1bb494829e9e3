/** Byte-for-byte comparison of an output with its image, reading an image into the page cache, and images changed since an earlier version (delta cells). */
import fs from 'node:fs';
import { createCipheriv, createHash } from 'node:crypto';
import { VerifyError } from '../errors.js';
import { prng } from '../image/generate.js';

const CHUNK = 8 << 20;

/**
 * Compares `output` with `image` in 8 MiB chunks (streaming: memory stays flat whatever the size).
 * Throws a VerifyError naming `what` and the first differing byte.
 */
export async function compareFiles(image: string, output: string, what: string): Promise<void> {
  let b: fs.promises.FileHandle;
  try {
    b = await fs.promises.open(output, 'r');
  } catch (e) {
    throw new VerifyError('ERR_BENCH_MISMATCH', `${what}: output ${output} is missing (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  const a = await fs.promises.open(image, 'r').catch(async (e: unknown) => {
    await b.close();
    throw e;
  });
  try {
    const [sa, sb] = [(await a.stat()).size, (await b.stat()).size];
    if (sa !== sb) throw new VerifyError('ERR_BENCH_MISMATCH', `${what}: output ${output} is ${sb} bytes, the image ${sa}`);
    const ba = Buffer.allocUnsafe(CHUNK);
    const bb = Buffer.allocUnsafe(CHUNK);
    for (let off = 0; off < sa; off += CHUNK) {
      const n = Math.min(CHUNK, sa - off);
      const [ra, rb] = await Promise.all([readFull(a, ba, n, off), readFull(b, bb, n, off)]);
      if (ra !== n || rb !== n) throw new VerifyError('ERR_BENCH_MISMATCH', `${what}: short read at byte ${off}`);
      if (!ba.subarray(0, n).equals(bb.subarray(0, n))) {
        let i = 0;
        while (i < n && ba[i] === bb[i]) i++;
        throw new VerifyError('ERR_BENCH_MISMATCH', `${what}: output ${output} differs from the image at byte ${off + i}`);
      }
    }
  } finally {
    await a.close();
    await b.close();
  }
}

async function readFull(fh: fs.promises.FileHandle, buf: Buffer, n: number, pos: number): Promise<number> {
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** Reads a file through once, so every contender starts with it in the page cache. */
export async function readThrough(file: string): Promise<void> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let pos = 0; ;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/**
 * Writes `out`: `base` with `percent`% of its pages changed (chosen by a PRNG from `seed`),
 * each changed page overwritten with bytes of an AES-128-CTR keystream (random-looking, so
 * incompressible: the worst case for compression). Returns how many pages changed.
 */
export function changeImage(base: string, out: string, percent: number, seed: number, pageSize = 4096): number {
  fs.copyFileSync(base, out);
  const size = fs.statSync(out).size;
  const pages = Math.floor(size / pageSize);
  const rand = prng(seed ^ 0x5bd1e995);
  const key = createHash('sha256').update(`mfd-changed-${seed}`).digest().subarray(0, 16);
  const stream = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(pageSize);
  const fd = fs.openSync(out, 'r+');
  let changed = 0;
  try {
    for (let p = 0; p < pages; p++) {
      if (rand() * 100 >= percent) continue;
      fs.writeSync(fd, stream.update(zero), 0, pageSize, p * pageSize);
      changed++;
    }
  } finally {
    fs.closeSync(fd);
  }
  return changed;
}

/** How many `pageSize` pages of `a` differ from `b`'s (a page past the end of the shorter file counts as changed). */
export async function changedPages(a: string, b: string, pageSize = 4096): Promise<number> {
  const [fa, fb] = [await fs.promises.open(a, 'r'), await fs.promises.open(b, 'r')];
  try {
    const [sa, sb] = [(await fa.stat()).size, (await fb.stat()).size];
    const ba = Buffer.allocUnsafe(CHUNK);
    const bb = Buffer.allocUnsafe(CHUNK);
    let n = Math.ceil(Math.abs(sa - sb) / pageSize);
    for (let off = 0; off < Math.min(sa, sb); off += CHUNK) {
      const len = Math.min(CHUNK, Math.min(sa, sb) - off);
      await Promise.all([readFull(fa, ba, len, off), readFull(fb, bb, len, off)]);
      for (let p = 0; p < len; p += pageSize) if (!ba.subarray(p, p + pageSize).equals(bb.subarray(p, p + pageSize))) n++;
    }
    return n;
  } finally {
    await fa.close();
    await fb.close();
  }
}
