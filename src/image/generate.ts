/**
 * Sample RAM images, reproducible from a seed. Pages come in runs, like real
 * guest memory: `mixed` is about 50% zero, 30% text-like and 20% random pages.
 * Random bytes are an AES-128-CTR keystream keyed by the seed; text pages are
 * slices of a seeded word corpus with a few bytes changed, so no two match.
 * Zero runs are left as holes.
 */
import fs from 'node:fs';
import { createCipheriv, createHash } from 'node:crypto';
import { UsageError } from '../errors.js';

export const PROFILES = {
  mixed: { zero: 0.5, text: 0.3, random: 0.2 },
  zero: { zero: 1, text: 0, random: 0 },
  random: { zero: 0, text: 0, random: 1 },
  text: { zero: 0, text: 1, random: 0 },
} as const;
export type Profile = keyof typeof PROFILES;

const WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she ' +
  'all would there their will when who him been has more if no out do so can what up said about other into than its time only ' +
  'kernel page memory buffer process thread socket device driver error return value struct int char void static const unsigned ' +
  'migration channel packet offset block virtual machine guest host network file system cache queue request response'
).split(' ');

/** splitmix32-style PRNG: small, fast, reproducible. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

export interface GenerateOptions {
  size: number;
  profile: Profile;
  seed: number;
  pageSize?: number;
  /** Mean run length in pages. */
  meanRun?: number;
}

export interface GenerateResult {
  size: number;
  pages: { zero: number; text: number; random: number };
}

export function generateImage(file: string, opts: GenerateOptions): GenerateResult {
  const ps = opts.pageSize ?? 4096;
  const mix = PROFILES[opts.profile];
  if (!mix) throw new UsageError(`Expected one of ${Object.keys(PROFILES).join('|')} for --profile but received "${opts.profile}"`);
  const rand = prng(opts.seed);
  const key = createHash('sha256').update(`mfd-image-${opts.seed}`).digest();
  const keystream = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  const corpus = makeCorpus(rand, 1 << 20);
  const pages = Math.ceil(opts.size / ps);
  const chunkPages = 256;
  const chunk = Buffer.alloc(chunkPages * ps);
  const zeroChunk = Buffer.alloc(chunkPages * ps);
  const kinds = new Uint8Array(chunkPages);
  const counts = { zero: 0, text: 0, random: 0 };
  const fd = fs.openSync(file, 'w', 0o644);
  try {
    fs.ftruncateSync(fd, opts.size);
    let kind = 0;
    let left = 0;
    for (let p0 = 0; p0 < pages; p0 += chunkPages) {
      const n = Math.min(chunkPages, pages - p0);
      for (let i = 0; i < n; i++) {
        if (left === 0) {
          const u = rand();
          kind = u < mix.zero ? 0 : u < mix.zero + mix.text ? 1 : 2;
          left = 1 + Math.floor(-Math.log(1 - rand()) * (opts.meanRun ?? 16));
        }
        left--;
        kinds[i] = kind;
        const page = chunk.subarray(i * ps, (i + 1) * ps);
        if (kind === 0) {
          page.fill(0);
          counts.zero++;
        } else if (kind === 1) {
          const from = Math.floor(rand() * (corpus.length - ps));
          corpus.copy(page, 0, from, from + ps);
          for (let k = 0; k < 8; k++) page[Math.floor(rand() * ps)] = 0x61 + Math.floor(rand() * 26);
          counts.text++;
        } else {
          keystream.update(zeroChunk.subarray(0, ps)).copy(page);
          counts.random++;
        }
      }
      // Write runs of non-zero pages; zero runs stay holes.
      const base = p0 * ps;
      for (let i = 0; i < n;) {
        if (kinds[i] === 0) {
          i++;
          continue;
        }
        let j = i + 1;
        while (j < n && kinds[j] !== 0) j++;
        const end = Math.min(j * ps, opts.size - base);
        fs.writeSync(fd, chunk, i * ps, end - i * ps, base + i * ps);
        i = j;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return { size: opts.size, pages: counts };
}

function makeCorpus(rand: () => number, size: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  let line = 0;
  while (len < size) {
    const w = WORDS[Math.floor(rand() * WORDS.length)]!;
    const sep = ++line % 12 === 0 ? '\n' : ' ';
    parts.push(w + sep);
    len += w.length + 1;
  }
  return Buffer.from(parts.join(''), 'latin1').subarray(0, size);
}

/** "512M", "2G", "4096", "1.5G" -> bytes (binary units). */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(s.trim());
  if (!m) throw new UsageError(`Expected a size like 4096, 512M or 2G but received "${s}"`);
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const v = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(v)) throw new UsageError(`size "${s}" is too large`);
  return v;
}
