/**
 * fingerprintFile with `pages: false` (src/delta/fingerprint.ts): the addon maps, hashes and
 * unmaps a range a call itself (deltaFingerprintFile, addon/delta.cc). The same entries and CRCs
 * as the read path; holes of a sparse file never touched (on tmpfs a touch allocates a page); a
 * file shorter than it should be, or that shrinks meanwhile, is ERR_DELTA_BASE_SHORT, not a crash.
 */
import { page, PS, requireDeltaOrSkip, tmpfsDir } from '../helpers/delta.js';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir } from '../helpers/index.js';
import {
  ENTRY_SIZE,
  FINGERPRINT_RANGE,
  NO_MATCH,
  matchEntries,
  sortEntries,
  entryIndex,
  fingerprintFile,
  fingerprintRange,
  type FingerprintAccess,
} from '../../src/delta/fingerprint.js';
import type { ImageAccess } from '../../src/image/image-source.js';
import type { MfdError } from '../../src/errors.js';

requireDeltaOrSkip();

interface Printed {
  entries: Buffer;
  crc: Uint32Array;
  /** The first page of each onBatch call. */
  starts: number[];
  access: FingerprintAccess;
}

async function print(file: string, access: ImageAccess, pages: boolean): Promise<Printed> {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const crc = new Uint32Array(Math.ceil(size / PS));
    const entries: Buffer[] = [];
    const starts: number[] = [];
    const got = await fingerprintFile(
      fd,
      size,
      PS,
      7,
      'img',
      (e, n, _p, at) => {
        entries.push(Buffer.from(e.subarray(0, n * ENTRY_SIZE)));
        starts.push(at);
      },
      crc,
      null,
      null,
      { access, pages },
    );
    return { entries: Buffer.concat(entries), crc, starts, access: got };
  } finally {
    fs.closeSync(fd);
  }
}

function put(fd: number, at: number, seeds: number[]): void {
  fs.writeSync(fd, Buffer.concat(seeds.map((s) => (s < 0 ? Buffer.alloc(PS) : page(s)))), 0, seeds.length * PS, at * PS);
}

t.test('a range a call: the same entries and CRCs as read, in page order, the partial last page zero-padded', async (t) => {
  const file = path.join(tmpfsDir(t) ?? tmpdir(t), 'img');
  const fd = fs.openSync(file, 'w');
  // Two ranges and some: zero pages, repeated pages, a partial last page.
  const seeds = Array.from({ length: FINGERPRINT_RANGE + 300 }, (_, i) => (i % 5 === 2 ? -1 : i % 700));
  put(fd, 0, seeds);
  fs.writeSync(fd, page(4242), 0, 123, seeds.length * PS);
  fs.closeSync(fd);
  const read = await print(file, 'read', true);
  const ranged = await print(file, 'map', false);
  t.equal(ranged.access.how, 'map');
  t.same(ranged.starts, [0, FINGERPRINT_RANGE, seeds.length], 'a call a range, then the partial last page');
  t.equal(read.entries.length, (seeds.filter((s) => s >= 0).length + 1) * ENTRY_SIZE, 'an entry a non-zero page');
  t.ok(ranged.entries.equals(read.entries), 'the same entries');
  t.same(ranged.crc, read.crc, 'the same CRCs');
  const idx = Array.from({ length: ranged.entries.length / ENTRY_SIZE }, (_, i) => entryIndex(ranged.entries, i));
  t.same(
    idx,
    [...idx].sort((a, b) => a - b),
    'entries in page order',
  );
});

t.test('a sparse file on tmpfs: its holes are never touched (st.blocks unchanged), and are zero pages', async (t) => {
  const dir = tmpfsDir(t);
  if (!dir) return t.skip('no tmpfs at /dev/shm', () => {});
  const file = path.join(dir, 'sparse');
  const fd = fs.openSync(file, 'w');
  const pages = 2 * FINGERPRINT_RANGE + 64;
  fs.ftruncateSync(fd, pages * PS);
  // Data inside the first range, across the first two ranges' edge, none in the last pages.
  put(fd, 100, [1, 2, 3, -1, 4]);
  put(fd, FINGERPRINT_RANGE - 2, [5, 6, 7, 8]);
  put(fd, 2 * FINGERPRINT_RANGE - 1, [9]);
  fs.closeSync(fd);
  const blocks = fs.statSync(file).blocks;
  const ranged = await print(file, 'map', false);
  t.equal(ranged.access.how, 'map');
  t.equal(fs.statSync(file).blocks, blocks, 'no page allocated for a hole');
  const read = await print(file, 'read', true);
  t.equal(ranged.entries.length, 9 * ENTRY_SIZE, 'entries for the 9 non-zero pages only');
  t.ok(ranged.entries.equals(read.entries), 'the same entries as read');
  t.same(ranged.crc, read.crc, 'a hole page has the zero page CRC');
});

t.test('a file shorter than its size said, or that shrinks between ranges: ERR_DELTA_BASE_SHORT, not a crash', async (t) => {
  const file = path.join(tmpfsDir(t) ?? tmpdir(t), 'img');
  const pages = 2 * FINGERPRINT_RANGE;
  const w = fs.openSync(file, 'w');
  put(
    w,
    0,
    Array.from({ length: pages }, (_, i) => i),
  );
  const fd = fs.openSync(file, 'r');
  t.teardown(() => (fs.closeSync(fd), fs.closeSync(w)));
  // The addon call alone: a range past the end of the file is ESHORTREAD (negative), not a crash.
  const out = Buffer.alloc(16 * ENTRY_SIZE);
  const span = new Float64Array(2);
  t.ok((await fingerprintRange(fd, pages * PS, 16 * PS, (pages + 16) * PS, PS, 0, out, null, span)) < 0, 'past the end: negative');
  t.equal(await fingerprintRange(fd, 0, 16 * PS, pages * PS, PS, 0, out, null, span), 16, 'inside it: 16 entries');
  const seen: number[] = [];
  const e = (await fingerprintFile(
    fd,
    pages * PS,
    PS,
    0,
    'img',
    (_e, _n, _p, at) => {
      seen.push(at);
      // The next range is being hashed by now, or is next: it ends under its mapping.
      if (at === 0) fs.ftruncateSync(w, PS);
    },
    new Uint32Array(pages),
    null,
    null,
    { access: 'map', pages: false },
  ).catch((x: unknown) => x)) as MfdError;
  t.equal(e.code, 'ERR_DELTA_BASE_SHORT', String(e));
  t.match(e.message, /shrank/);
  t.same(seen, [0], 'no range after the first is handed on');
});

t.test('matchEntries finds every key of a sorted table however its keys are spread (a peer chooses them)', async (t) => {
  // Keys bunched at the low end, then one at the top: the search guesses from an even spread.
  const keys: bigint[] = [...Array.from({ length: 3000 }, (_, i) => BigInt(i * 3)), 2n ** 64n - 1n];
  const entry = (hi: bigint, mid: number, idx: number): Buffer => {
    const b = Buffer.alloc(ENTRY_SIZE);
    b.writeBigUInt64LE(hi, 0);
    b.writeUInt32LE(mid, 8);
    b.writeUInt32LE(idx, 12);
    return b;
  };
  const table = Buffer.concat(keys.map((k, i) => entry(k, i % 3, i)));
  await sortEntries(table, keys.length);
  const probes = [...keys.map((k, i) => entry(k, i % 3, 0)), entry(1n, 0, 0), entry(2n ** 63n, 0, 0), entry(2n ** 64n - 1n, 1, 0)];
  const out = new Uint32Array(probes.length);
  const found = matchEntries(table, keys.length, Buffer.concat(probes), probes.length, out);
  t.equal(found, keys.length, 'each key of the table found, no other');
  t.same(
    Array.from(out.subarray(0, keys.length)),
    keys.map((_, i) => i),
    'each at its own index',
  );
  t.same(Array.from(out.subarray(keys.length)), [NO_MATCH, NO_MATCH, NO_MATCH], 'keys not in the table: no match');
});
