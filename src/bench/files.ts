/** Byte-for-byte comparison of an output with its image, and reading an image into the page cache. */
import fs from 'node:fs';
import { VerifyError } from '../errors.js';

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
