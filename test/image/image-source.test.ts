/**
 * An image's scattered pages (src/image/image-source.ts, a gathered job's list): read back to back
 * into the caller's buffer, a partial last page padded with zeros, and a file that shrank an error
 * naming the image, never a SIGBUS or zero pages sent as if read. Pages a few apart are one read,
 * the pages between them read into scratch, never into the buffer.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir } from '../helpers/index.js';
import { GATHER_GAP_BYTES, ImageSource, gatherReads, type Measure } from '../../src/image/image-source.js';
import { native } from '../../src/native/load.js';
import type { MfdError } from '../../src/errors.js';

const PS = 4096;

function image(t: Test, pages: number, tail = 0): string {
  const file = path.join(tmpdir(t), 'vm.ram');
  const b = Buffer.alloc(pages * PS - tail);
  for (let p = 0; p < pages; p++) b.fill(p + 1, p * PS, Math.min(b.length, (p + 1) * PS));
  fs.writeFileSync(file, b);
  return file;
}

t.test('the listed pages, back to back; the partial last page padded', async (t) => {
  const file = image(t, 10, 100);
  const src = await ImageSource.open({ name: 'vm.ram', path: file });
  t.teardown(() => src.close());
  const slab = new Uint8Array(8 * PS).fill(0xee);
  const { pages, holes } = await src.load(2 * PS, 4, PS, () => slab, Uint32Array.from([2, 3, 7, 9]));
  t.equal(pages.length, 4 * PS);
  t.equal(holes, null);
  t.same(
    [0, 1, 2, 3].map((i) => pages[i * PS]),
    [3, 4, 8, 10],
    'pages 2, 3, 7 and 9 in list order',
  );
  t.ok(
    pages.subarray(3 * PS, 4 * PS - 100).every((x) => x === 10),
    'the last page: its bytes in the file',
  );
  t.ok(
    pages.subarray(4 * PS - 100, 4 * PS).every((x) => x === 0),
    'then zeros past the end of the file',
  );
});

t.test('pages a few apart: one contiguous read through scratch for the gaps; farther apart: reads of their own', async (t) => {
  const GATHER_GAP = GATHER_GAP_BYTES / PS;
  const slab = new Uint8Array(5 * PS);
  const junk = new Uint8Array(GATHER_GAP_BYTES);
  const far = 3 + GATHER_GAP + 2; // a gap of GATHER_GAP + 1 pages before it
  const { pieces, positions } = gatherReads([0, 1, 3, far, far + 1 + GATHER_GAP], PS, 100 * PS, slab, junk);
  const runs: number[][] = [];
  positions.forEach((p, i) => {
    const last = runs.at(-1);
    if (last && last[1] === p) last[1] = p + pieces[i]!.length;
    else runs.push([p, p + pieces[i]!.length]);
  });
  t.same(
    runs,
    [
      [0, 4 * PS],
      [far * PS, (far + 1 + GATHER_GAP + 1) * PS],
    ],
    'pages 0, 1 and 3 one run; the page past the longer gap starts another, which its neighbour GATHER_GAP pages on joins',
  );
  t.ok(
    pieces.every((p) => p.buffer === slab.buffer || p.buffer === junk.buffer),
    'every piece is the slab or the scratch',
  );
  t.equal(pieces.filter((p) => p.buffer === slab.buffer).length, 5, 'each listed page into the slab once');
});

t.test('larger pages: a gap of one 64 KiB page is longer than GATHER_GAP_BYTES, so each page is a read of its own', async (t) => {
  const big = 65536;
  const { positions } = gatherReads([0, 2, 3], big, 10 * big, new Uint8Array(3 * big), new Uint8Array(4 * big));
  t.same(positions, [0, 2 * big, 3 * big], 'no piece for the page between, though the scratch would hold it');
});

t.test('gathered pages with gaps between them: the listed pages, never the gaps', async (t) => {
  const file = image(t, 40, 100);
  const src = await ImageSource.open({ name: 'vm.ram', path: file });
  t.teardown(() => src.close());
  const list = [0, 2, 5, 6, 30, 33, 39];
  const slab = new Uint8Array(list.length * PS).fill(0xee);
  const { pages } = await src.load(0, list.length, PS, () => slab, Uint32Array.from(list));
  t.same(
    list.map((_, i) => pages[i * PS]),
    list.map((p) => p + 1),
  );
  t.ok(
    list.every((p, i) => pages.subarray(i * PS, (i + 1) * PS - (p === 39 ? 100 : 0)).every((x) => x === p + 1)),
    'every byte of every listed page',
  );
  t.ok(
    pages.subarray(list.length * PS - 100).every((x) => x === 0),
    'the partial last page padded',
  );
});

t.test('an image that shrank: ERR_IMAGE_SHRANK naming it', async (t) => {
  const file = image(t, 10);
  const src = await ImageSource.open({ name: 'vm.ram', path: file });
  t.teardown(() => src.close());
  fs.truncateSync(file, 5 * PS);
  const e = (await src.load(PS, 2, PS, () => new Uint8Array(2 * PS), Uint32Array.from([1, 8])).catch((x: unknown) => x)) as MfdError;
  t.equal(e.code, 'ERR_IMAGE_SHRANK');
  t.match(e.message, new RegExp(`image "${file}" shrank while sending: it is now ${5 * PS} bytes, expected ${10 * PS} bytes`));
});

t.test('holes: none asked for inside a span found all data, found again past it', async (t) => {
  // Data [0, 64 KiB), a hole [64, 128 KiB), data [128, 192 KiB).
  const file = path.join(tmpdir(t), 'sparse.ram');
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, 192 * 1024);
  fs.writeSync(fd, Buffer.alloc(64 * 1024, 1), 0, 64 * 1024, 0);
  fs.writeSync(fd, Buffer.alloc(64 * 1024, 2), 0, 64 * 1024, 128 * 1024);
  fs.closeSync(fd);
  const src = await ImageSource.open({ name: 'sparse.ram', path: file });
  t.teardown(() => src.close());
  const first = await src.load(0, 4, PS, () => new Uint8Array(4 * PS));
  if (first.holes === null && (await src.load(64 * 1024, 4, PS, () => new Uint8Array(4 * PS))).holes === null)
    return void t.skip('no SEEK_HOLE on this file system', () => {});
  t.equal(first.holes, null, 'pages 0..3: data');
  t.equal((await src.load(32 * 1024, 8, PS, () => new Uint8Array(8 * PS))).holes, null, 'pages 8..15: data (inside the span)');
  const across = await src.load(48 * 1024, 8, PS, () => new Uint8Array(8 * PS));
  t.same([...across.holes!], [0, 0, 0, 0, 1, 1, 1, 1], 'pages 12..19: the hole after the span is found');
  const after = await src.load(128 * 1024, 4, PS, () => new Uint8Array(4 * PS));
  t.equal(after.holes, null, 'pages 32..35: data again');
});

t.test('skipHoles: only the data is read, the pages in holes left as the buffer held them; without it they read as zeros', async (t) => {
  // Data [0, 16 KiB), a hole [16, 48 KiB), data [48, 56 KiB), a hole to 64 KiB, then 100 bytes of data: a partial last page.
  const file = path.join(tmpdir(t), 'sparse.ram');
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, 64 * 1024 + 100);
  fs.writeSync(fd, Buffer.alloc(16 * 1024, 1), 0, 16 * 1024, 0);
  fs.writeSync(fd, Buffer.alloc(8 * 1024, 2), 0, 8 * 1024, 48 * 1024);
  fs.writeSync(fd, Buffer.alloc(100, 3), 0, 100, 64 * 1024);
  fs.closeSync(fd);
  const wfd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(wfd));
  const sources = [
    ['the main thread', await ImageSource.open({ name: 'sparse.ram', path: file }, 'read')],
    ['a compute worker', ImageSource.forWorker(wfd, file, 64 * 1024 + 100)],
  ] as const;
  t.teardown(() => sources[0][1].close());
  for (const [who, src] of sources) {
    const slab = new Uint8Array(18 * PS).fill(0xee);
    const { pages, holes } = await src.load(0, 18, PS, () => slab, undefined, true);
    if (!holes) return void t.skip('no SEEK_HOLE on this file system', () => {});
    const expected = [1, 1, 1, 1, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 2, 2, 0xee, 0xee, 3, 0];
    t.same([...holes], [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0], `${who}: the holes found (whole pages inside the file)`);
    t.same(
      expected.map((_, i) => pages[i * PS + PS - 1]),
      [1, 1, 1, 1, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 2, 2, 0xee, 0xee, 0, 0],
      `${who}: each page's last byte: data read, holes untouched, the partial page padded, the page past the end zeros`,
    );
    t.same(
      expected.map((_, i) => pages[i * PS]),
      expected,
      `${who}: each page's first byte`,
    );
    slab.fill(0xee);
    const full = await src.load(0, 18, PS, () => slab);
    t.same(
      expected.map((_, i) => full.pages[i * PS]),
      expected.map((x) => (x === 0xee ? 0 : x)),
      `${who}: without skipHoles, the holes read as zeros`,
    );
  }
});

t.test("a compute worker's source reads every packet into its scratch, never a mapping; a shrunk file is ERR_IMAGE_SHRANK", async (t) => {
  const file = image(t, 40, 100);
  const fd = fs.openSync(file, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const size = fs.fstatSync(fd).size;
  const src = ImageSource.forWorker(fd, file, size);
  const slab = new Uint8Array(16 * PS).fill(0xee);
  const { pages } = await src.load(8 * PS, 16, PS, () => slab);
  t.equal(pages.buffer, slab.buffer, 'whole pages inside the file come in the scratch too (the main thread maps them)');
  t.same(
    [...Array(16).keys()].map((i) => pages[i * PS]),
    [...Array(16).keys()].map((i) => i + 9),
    'pages 8..23, each its own bytes',
  );
  const tail = await src.load(32 * PS, 8, PS, () => slab);
  t.ok(
    tail.pages.subarray(8 * PS - 100, 8 * PS).every((x) => x === 0),
    'the partial last page padded with zeros',
  );
  const main = await ImageSource.open({ name: 'vm.ram', path: file }, 'map');
  t.teardown(() => main.close());
  t.not((await main.load(8 * PS, 16, PS, () => slab)).pages.buffer, slab.buffer, "the main thread's source maps whole pages when asked to");
  fs.ftruncateSync(fd, 20 * PS);
  await t.rejects(
    src.load(16 * PS, 16, PS, () => slab),
    { code: 'ERR_IMAGE_SHRANK', message: /shrank while sending: it ended at byte 81920/ },
  );
});

t.test('image access: auto reads a file with too little data to measure, map maps, read reads; the same bytes', async (t) => {
  const file = image(t, 40, 100);
  const onHuge = fs.statfsSync(path.dirname(file)).type === 0x958458f6;
  const want = (at: number, count: number): number[] => [...Array(count).keys()].map((i) => at + i + 1);
  for (const access of ['auto', 'map', 'read'] as const) {
    const src = await ImageSource.open({ name: 'vm.ram', path: file }, access);
    t.teardown(() => src.close());
    const mapped = access === 'map' || (access === 'auto' && onHuge);
    const slab = new Uint8Array(16 * PS).fill(0xee);
    const { pages, release } = await src.load(8 * PS, 16, PS, () => slab);
    t.equal(pages.buffer === slab.buffer, !mapped, `${access}: whole pages ${mapped ? 'from a mapping' : "in the caller's buffer"}`);
    t.same(
      [...Array(16).keys()].map((i) => pages[i * PS]),
      want(8, 16),
      `${access}: pages 8..23, each its own bytes`,
    );
    release();
    const tail = await src.load(32 * PS, 8, PS, () => slab);
    t.ok(
      tail.pages.subarray(7 * PS, 8 * PS - 100).every((x) => x === 40) && tail.pages.subarray(8 * PS - 100, 8 * PS).every((x) => x === 0),
      `${access}: the partial last page read and padded`,
    );
  }
});

const MiB = 1024 * 1024;

/** A sparse image: `runs` runs of data (`run` bytes each, page n of the file filled with n % 251 + 1) with holes of `gap` bytes between. */
function sparse(t: Test, runs: number, run: number, gap: number): { file: string; data: [number, number][] } {
  const file = path.join(tmpdir(t), 'sparse.ram');
  const fd = fs.openSync(file, 'w');
  const data: [number, number][] = [];
  for (let i = 0; i < runs; i++) {
    const at = gap + i * (run + gap);
    const b = Buffer.alloc(run);
    for (let p = 0; p < run / PS; p++) b.fill(((at / PS + p) % 251) + 1, p * PS, (p + 1) * PS);
    fs.writeSync(fd, b, 0, run, at);
    data.push([at, at + run]);
  }
  fs.ftruncateSync(fd, gap + runs * (run + gap));
  fs.closeSync(fd);
  return { file, data };
}

/** A fake measurement (as native.probeImageAccess answers) that records the extents it was given. */
function fakeMeasure(code: number, mapNs: number, readNs: number): Measure & { seen: number[][] } {
  const seen: number[][] = [];
  return Object.assign((_fd: number, extents: Float64Array) => (seen.push([...extents]), Float64Array.of(code, mapNs, readNs)), { seen });
}

t.test(
  'auto off hugetlbfs measures at the first packet: maps where touching through a mapping costs less than 0.8 of reading, else reads',
  async (t) => {
    const { file } = sparse(t, 4, MiB, MiB);
    if (fs.statfsSync(path.dirname(file)).type === 0x958458f6) return void t.skip('on hugetlbfs auto maps without measuring', () => {});
    for (const [mapNs, readNs, how] of [
      [1e6, 5e6, 'map'],
      [3.9e6, 5e6, 'map'],
      [4.1e6, 5e6, 'read'],
      [9e6, 2e6, 'read'],
    ] as const) {
      const measure = fakeMeasure(0, mapNs, readNs);
      const src = await ImageSource.open({ name: 'vm.ram', path: file }, 'auto', measure);
      t.teardown(() => src.close());
      t.equal(measure.seen.length, 0, 'nothing measured before a packet is loaded');
      t.match(src.access.why, /not measured/);
      const slab = new Uint8Array(16 * PS);
      const at = 3 * MiB; // data: the second run
      const { pages, release } = await src.load(at, 16, PS, () => slab);
      t.equal(pages[0], ((at / PS) % 251) + 1, 'the right bytes either way');
      release();
      await src.load(at + 16 * PS, 16, PS, () => slab);
      t.equal(measure.seen.length, 1, `${mapNs}/${readNs}: measured once, at the first packet`);
      t.equal(src.access.how, how, `${mapNs}/${readNs}: ${how}`);
      t.equal(
        pages.buffer === slab.buffer,
        how === 'read',
        `${how}: the pages ${how === 'map' ? 'from a mapping' : "in the caller's buffer"}`,
      );
      t.match(
        src.access.why,
        new RegExp(
          `^auto: touching 4 MiB of its data through a mapping took ${(mapNs / 1e6).toFixed(2)} ms of CPU, reading it ${(readNs / 1e6).toFixed(2)} ms$`,
        ),
        'the reason names what was measured',
      );
    }
  },
);

t.test(
  'auto measures on data only: the extents it gives lie inside the data, at most 16 MiB, and the real measurement allocates no hole',
  async (t) => {
    const { file, data } = sparse(t, 24, MiB, 3 * MiB);
    const fd = fs.openSync(file, 'r');
    const holesHere = native.dataExtents(fd, 0, fs.fstatSync(fd).size).length > 2;
    fs.closeSync(fd);
    if (!holesHere) return void t.skip('this file system reports no holes (no SEEK_HOLE)', () => {});
    const fake = fakeMeasure(0, 1e6, 2e6);
    const src = await ImageSource.open({ name: 'vm.ram', path: file }, 'auto', fake);
    t.teardown(() => src.close());
    if (src.access.how === 'map') return void t.skip('on hugetlbfs auto maps without measuring', () => {});
    await src.load(0, 8, PS, () => new Uint8Array(8 * PS));
    const pairs = fake.seen[0]!;
    let bytes = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const [a, b] = [pairs[i]!, pairs[i + 1]!];
      bytes += b - a;
      t.ok(
        data.some(([s, e]) => a >= s && b <= e),
        `[${a}, ${b}) lies inside one run of data`,
      );
    }
    t.equal(bytes, 16 * MiB, 'the first 16 MiB of data, no more');

    const blocks = fs.statSync(file).blocks;
    const real = await ImageSource.open({ name: 'vm.ram', path: file }, 'auto');
    t.teardown(() => real.close());
    const { pages, release } = await real.load(0, 8, PS, () => new Uint8Array(8 * PS));
    release();
    t.ok(
      pages.every((x) => x === 0),
      'a hole reads as zeros',
    );
    t.match(real.access.why, /^auto: touching 16 MiB of its data through a mapping took [\d.]+ ms of CPU, reading it [\d.]+ ms$/);
    t.equal(fs.statSync(file).blocks, blocks, 'the file holds as many blocks as before: no hole was touched through the mapping');
  },
);

t.test('auto reads, and says why, where there is too little data to measure or the measurement fails', async (t) => {
  const small = sparse(t, 1, 256 * 1024, MiB).file;
  const fake = fakeMeasure(0, 1, 100);
  const a = await ImageSource.open({ name: 'vm.ram', path: small }, 'auto', fake);
  t.teardown(() => a.close());
  if (fs.statfsSync(path.dirname(small)).type === 0x958458f6) return void t.skip('on hugetlbfs auto maps without measuring', () => {});
  await a.load(0, 4, PS, () => new Uint8Array(4 * PS));
  t.equal(fake.seen.length, 0, 'nothing measured');
  t.same(a.access, { how: 'read', why: 'auto: only 0.3 MiB of data to measure on, too little' });

  const big = sparse(t, 2, MiB, MiB).file;
  const failing = fakeMeasure(native.resultCodes.ESHORTREAD!, 0, 0);
  const b = await ImageSource.open({ name: 'vm.ram', path: big }, 'auto', failing);
  t.teardown(() => b.close());
  const slab = new Uint8Array(4 * PS);
  const { pages } = await b.load(MiB, 4, PS, () => slab);
  t.equal(pages.buffer, slab.buffer, 'read');
  t.same(b.access, { how: 'read', why: 'auto: measuring failed (ESHORTREAD)' });
});

t.test('map and read as asked are reported as asked, and never measured', async (t) => {
  const { file } = sparse(t, 2, MiB, MiB);
  for (const access of ['map', 'read'] as const) {
    const fake = fakeMeasure(0, 1, 100);
    const src = await ImageSource.open({ name: 'vm.ram', path: file }, access, fake);
    t.teardown(() => src.close());
    await src.load(MiB, 4, PS, () => new Uint8Array(4 * PS));
    t.equal(fake.seen.length, 0, `${access}: nothing measured`);
    t.same(src.access, { how: access, why: `--image-access ${access}` });
  }
});
