/**
 * fingerprintFile mapped and read (src/delta/fingerprint.ts): the same entries, CRCs and pages
 * either way; holes of a sparse file are never touched through the mapping (on tmpfs a touch
 * allocates a page); a file that shrinks under the mapping is ERR_DELTA_BASE_SHORT, not a crash.
 */
import { page, PS, requireDeltaOrSkip, tmpfsDir } from '../helpers/delta.js';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir } from '../helpers/index.js';
import { ENTRY_SIZE, FINGERPRINT_BATCH, entryIndex, fingerprintFile, type FingerprintAccess } from '../../src/delta/fingerprint.js';
import type { ImageAccess } from '../../src/image/image-source.js';
import type { MfdError } from '../../src/errors.js';

requireDeltaOrSkip();

interface Printed {
  entries: Buffer;
  crc: Uint32Array;
  /** Each batch's pages with an entry, copied while onBatch had them. */
  pages: Buffer;
  access: FingerprintAccess;
}

async function print(file: string, access: ImageAccess): Promise<Printed> {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const crc = new Uint32Array(Math.ceil(size / PS));
    const entries: Buffer[] = [];
    const pages: Buffer[] = [];
    const got = await fingerprintFile(
      fd,
      size,
      PS,
      5,
      'img',
      (e, n, p, at) => {
        entries.push(Buffer.from(e.subarray(0, n * ENTRY_SIZE)));
        // Only the pages with an entry: the others may be holes.
        for (let i = 0; i < n; i++) {
          const k = entryIndex(e, i) - 5 - at;
          pages.push(Buffer.from(p.subarray(k * PS, (k + 1) * PS)));
        }
      },
      crc,
      null,
      null,
      { access },
    );
    return { entries: Buffer.concat(entries), crc, pages: Buffer.concat(pages), access: got };
  } finally {
    fs.closeSync(fd);
  }
}

/** Pages of `seeds` (-1: zero) at page `at` of `fd`. */
function put(fd: number, at: number, seeds: number[]): void {
  fs.writeSync(fd, Buffer.concat(seeds.map((s) => (s < 0 ? Buffer.alloc(PS) : page(s)))), 0, seeds.length * PS, at * PS);
}

t.test('mapped and read, a file gives the same entries, CRCs and pages, the partial last page zero-padded', async (t) => {
  const file = path.join(tmpfsDir(t) ?? tmpdir(t), 'img');
  const fd = fs.openSync(file, 'w');
  // Two batches and some: zero pages, repeated pages, a partial last page.
  const seeds = Array.from({ length: 2 * FINGERPRINT_BATCH + 40 }, (_, i) => (i % 7 === 3 ? -1 : i % 300));
  put(fd, 0, seeds);
  fs.writeSync(fd, page(9999), 0, 100, seeds.length * PS);
  fs.closeSync(fd);
  const read = await print(file, 'read');
  const mapped = await print(file, 'map');
  t.equal(read.access.how, 'read');
  t.equal(mapped.access.how, 'map');
  const nonzero = seeds.filter((s) => s >= 0).length + 1;
  t.equal(read.entries.length, nonzero * ENTRY_SIZE, 'an entry a non-zero page');
  t.ok(read.entries.equals(mapped.entries), 'the same entries');
  t.same(mapped.crc, read.crc, 'the same CRCs');
  t.ok(mapped.pages.equals(read.pages), 'onBatch had the same pages');
  const last = Buffer.alloc(PS);
  page(9999).copy(last, 0, 0, 100);
  t.ok(read.pages.subarray(-PS).equals(last), 'the last page zero-padded');
});

t.test('a sparse file on tmpfs: its holes are never touched through the mapping (st.blocks unchanged), and are zero pages', async (t) => {
  const dir = tmpfsDir(t);
  if (!dir) return t.skip('no tmpfs at /dev/shm', () => {});
  const file = path.join(dir, 'sparse');
  const fd = fs.openSync(file, 'w');
  const pages = 3 * FINGERPRINT_BATCH;
  fs.ftruncateSync(fd, pages * PS);
  // Data in the middle of the first batch, across the first two batches' edge, none in the third.
  put(fd, 100, [1, 2, 3, -1, 4]);
  put(fd, FINGERPRINT_BATCH - 2, [5, 6, 7, 8]);
  fs.closeSync(fd);
  const blocks = fs.statSync(file).blocks;
  const mapped = await print(file, 'map');
  t.equal(mapped.access.how, 'map');
  t.equal(fs.statSync(file).blocks, blocks, 'no page allocated for a hole');
  const read = await print(file, 'read');
  t.ok(read.entries.equals(mapped.entries), 'the same entries as read');
  t.equal(mapped.entries.length, 8 * ENTRY_SIZE, 'entries for the 8 non-zero pages only');
  t.same(mapped.crc, read.crc, 'a hole page has the zero page CRC');
  t.ok(mapped.pages.equals(read.pages));
});

t.test('a file that shrinks under its mapping: ERR_DELTA_BASE_SHORT, not a crash', async (t) => {
  const file = path.join(tmpfsDir(t) ?? tmpdir(t), 'img');
  const pages = 3 * FINGERPRINT_BATCH;
  const w = fs.openSync(file, 'w');
  put(
    w,
    0,
    Array.from({ length: pages }, (_, i) => i),
  );
  const fd = fs.openSync(file, 'r');
  t.teardown(() => (fs.closeSync(fd), fs.closeSync(w)));
  const seen: number[] = [];
  const e = (await fingerprintFile(
    fd,
    pages * PS,
    PS,
    0,
    'img',
    (_e, _n, _p, at) => {
      seen.push(at);
      // The next batch is mapped by now: it ends under its mapping.
      if (at === 0) fs.ftruncateSync(w, PS);
    },
    new Uint32Array(pages),
    null,
    null,
    { access: 'map' },
  ).catch((x: unknown) => x)) as MfdError;
  t.equal(e.code, 'ERR_DELTA_BASE_SHORT', String(e));
  t.match(e.message, /shrank/);
  t.same(seen, [0], 'no batch after the first is handed on');
});

t.test('auto reads a file with too little data to measure, and says so', async (t) => {
  const file = path.join(tmpdir(t), 'small');
  fs.writeFileSync(file, Buffer.concat([page(1), page(2)]));
  t.match((await print(file, 'auto')).access, { how: 'read', why: /^auto: only .* too little/ });
  let asked = 0;
  const fd = fs.openSync(file.replace(/small$/, 'big'), 'w');
  put(
    fd,
    0,
    Array.from({ length: 512 }, (_, i) => i),
  );
  fs.closeSync(fd);
  // A fake measure: mapping cheaper, then dearer.
  for (const [mapNs, how] of [
    [1e6, 'map'],
    [9e6, 'read'],
  ] as const) {
    const b = fs.openSync(file.replace(/small$/, 'big'), 'r');
    const got = await fingerprintFile(b, 512 * PS, PS, 0, 'big', () => {}, null, null, null, {
      measure: () => (asked++, Float64Array.from([0, mapNs, 5e6])),
    });
    fs.closeSync(b);
    t.equal(got.how, how);
    t.match(got.why, /^auto: touching 2 MiB/);
  }
  t.equal(asked, 2);
});
