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
import { GATHER_GAP_BYTES, ImageSource, gatherReads } from '../../src/image/image-source.js';
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

t.test("the main thread's image access: auto reads off hugetlbfs, map maps, read reads; the same bytes every way", async (t) => {
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
