/**
 * Byte-level mutations of valid inputs (flip, overwrite, truncate, extend,
 * splice), the values that sit on the edges of the decoders' checks, and a
 * small deterministic PRNG for corpus content.
 */
import fc from 'fast-check';

export type ByteOp =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'u32'; at: number; value: number; le: boolean }
  | { op: 'truncate'; at: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'erase'; at: number; len: number }
  | { op: 'append'; bytes: Uint8Array }
  | { op: 'copy'; from: number; at: number; len: number };

/** u32 values on the edges of every count, size and length check. */
export const EDGE_U32 = [
  0, 1, 2, 3, 4, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 1023, 1024, 1025, 4095, 4096, 4097, 8192, 16383, 16384, 16385,
  65535, 65536, 65537, 524287, 524288, 524289, 1048576, 1048577, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
] as const;

export const edgeU32: fc.Arbitrary<number> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...EDGE_U32) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
);

const position = fc.nat({ max: 1 << 20 });
const smallBytes = fc.uint8Array({ minLength: 1, maxLength: 64 });

export const byteOp: fc.Arbitrary<ByteOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: position, bit: fc.nat({ max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('set' as const), at: position, value: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('u32' as const), at: position, value: edgeU32, le: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: position }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('insert' as const), at: position, bytes: smallBytes }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('erase' as const), at: position, len: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('append' as const), bytes: smallBytes }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('copy' as const), from: position, at: position, len: fc.integer({ min: 1, max: 256 }) }),
  },
);

export const byteOps = (maxLength = 4): fc.Arbitrary<ByteOp[]> => fc.array(byteOp, { minLength: 1, maxLength });

/** A mutated copy of `src` (positions are taken modulo its length). */
export function applyByteOps(src: Uint8Array, ops: readonly ByteOp[]): Uint8Array {
  let b = Buffer.from(src);
  for (const o of ops) {
    const n = b.length;
    switch (o.op) {
      case 'flip':
        if (n > 0) b[o.at % n]! ^= 1 << o.bit;
        break;
      case 'set':
        if (n > 0) b[o.at % n] = o.value;
        break;
      case 'u32':
        if (n >= 4) {
          const at = o.at % (n - 3);
          if (o.le) b.writeUInt32LE(o.value, at);
          else b.writeUInt32BE(o.value, at);
        }
        break;
      case 'truncate':
        b = b.subarray(0, o.at % (n + 1));
        break;
      case 'insert': {
        const at = o.at % (n + 1);
        b = Buffer.concat([b.subarray(0, at), o.bytes, b.subarray(at)]);
        break;
      }
      case 'erase':
        if (n > 0) {
          const at = o.at % n;
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + o.len)]);
        }
        break;
      case 'append':
        b = Buffer.concat([b, o.bytes]);
        break;
      case 'copy':
        if (n > 0) {
          const from = o.from % n;
          const seg = Buffer.from(b.subarray(from, from + o.len));
          const at = o.at % n;
          seg.copy(b, at, 0, Math.min(seg.length, n - at));
        }
        break;
    }
  }
  return b;
}

/** xorshift32: deterministic content for corpora (the same seed gives the same corpus). */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

export type PageKind = 'zero' | 'text' | 'random' | 'sparse';

/** `count` pages of `kind`, deterministic in `seed`. */
export function makePages(kind: PageKind, count: number, pageSize: number, seed: number): Buffer {
  const b = Buffer.alloc(count * pageSize);
  const r = prng(seed);
  for (let p = 0; p < count; p++) {
    const page = b.subarray(p * pageSize, (p + 1) * pageSize);
    if (kind === 'text') {
      const words = ['mfd ', 'multifd ', 'page ', 'qemu ', 'ramblock ', '\n', 'zero ', 'the '];
      for (let at = 0; at < pageSize;) at += page.write(words[r() % words.length]!, at);
    } else if (kind === 'random') {
      for (let i = 0; i < pageSize; i += 4) page.writeUInt32LE(r(), i);
    } else if (kind === 'sparse') {
      for (let k = 0; k < 8; k++) page[r() % pageSize] = r() & 0xff;
    }
  }
  return b;
}

/** Splits `b` into non-empty pieces at the given cut points (as socket chunks arrive). */
export function split(b: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  if (b.length === 0) return [];
  const at = [...new Set(cuts.map((c) => c % b.length).filter((c) => c > 0))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  out.push(b.subarray(prev));
  return out;
}
