import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { native } from '../../src/native/load.js';
import { analysePages, writePacket } from '../../src/native/packet-io.js';
import { NativeIoError } from '../../src/errors.js';
import { ImageSource } from '../../src/image/image-source.js';
import { tmpdir } from '../helpers/index.js';

/** Reference zero check in plain TS. */
const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

t.test('zero-page scan: every accelerator agrees with the reference, at any alignment and page size', async (t) => {
  const accels = native.zeroPageAccels();
  t.ok(accels.includes('scalar'));
  const before = native.zeroPageAccel();
  t.teardown(() => void native._setZeroPageAccel(before));
  const pages = 64;
  // Page sizes below, at and above the vector paths' step and alignment head; offsets from a page
  // boundary that put the pages on, just past and just before a 64-byte line.
  for (const pageSize of [40, 100, 4096]) {
    const backing = native.alignedBuffer(Math.ceil((pages * pageSize) / 4096) * 4096 + 4096);
    for (const offset of [0, 1, 16, 48, 63]) {
      const buf = new Uint8Array(backing, offset, pages * pageSize);
      buf.fill(0);
      // page i: zero, or one byte set at a spot in the head, tail, middle or a vector lane
      const spots = [0, 1, 31, 32, 39, 63, 64, 99, 127, 128, 2047, 2048, 4000, 4095].filter((s) => s < pageSize);
      for (let i = 0; i < pages; i++) if (i % 3 !== 0) buf[i * pageSize + spots[i % spots.length]!] = 1 << (i % 8);
      const want = Array.from({ length: pages }, (_, i) => (isZero(buf.subarray(i * pageSize, (i + 1) * pageSize)) ? 1 : 0));
      for (const a of accels) {
        t.ok(native._setZeroPageAccel(a), `select ${a}`);
        const out = new Uint8Array(pages);
        const zeros = native.scanZeroPages(buf, pageSize, pages, out);
        t.same([...out], want, `${a}, ${pageSize}-byte pages at offset ${offset}: flags`);
        t.equal(zeros, want.filter(Boolean).length, `${a}, ${pageSize}-byte pages at offset ${offset}: count`);
      }
    }
  }
  t.notOk(native._setZeroPageAccel('no-such-accel'));
});

t.test('CRC-32C: check value, per-page results, zero pages', async (t) => {
  t.equal(native.crc32c(Buffer.from('123456789')), 0xe3069283, 'standard check value');
  const buf = randomBytes(5 * 4096);
  buf.fill(0, 4096, 8192);
  const crc = new Uint32Array(5);
  const zero = new Uint8Array(5);
  t.equal(native.analysePagesSync(buf, 4096, 5, zero, crc), 1);
  for (let i = 0; i < 5; i++) t.equal(crc[i], native.crc32c(buf.subarray(i * 4096, (i + 1) * 4096)), `page ${i}`);
});

t.test('natives refuse buffers too small for the counts', async (t) => {
  t.throws(() => native.scanZeroPages(new Uint8Array(4096), 4096, 2, new Uint8Array(2)), RangeError);
  t.throws(() => native.analysePagesSync(new Uint8Array(8192), 4096, 2, null, new Uint32Array(1)), RangeError);
  t.throws(() => native.scanZeroPages(new Uint8Array(4096) as never, 0, 1, new Uint8Array(1)), RangeError);
  t.throws(() => (native.scanZeroPages as (...a: unknown[]) => number)('x', 4096, 1, new Uint8Array(1)), TypeError);
});

t.test("ImageSource: mapped windows and the read tail give the file's bytes, zero-padded", async (t) => {
  const dir = tmpdir(t);
  const f = path.join(dir, 'img');
  const size = 40 * 1024 * 1024 + 3 * 4096 + 100; // three windows, a tail packet ending mid-page
  const data = randomBytes(size);
  fs.writeFileSync(f, data);
  const src = await ImageSource.open({ name: 'img', path: f }, 'map');
  t.teardown(() => src.close());
  const slab = new Uint8Array(512 * 1024);
  const held = [];
  for (let off = 0; off < size; off += 512 * 1024) {
    const count = Math.min(128, Math.ceil((size - off) / 4096));
    const { pages, release } = await src.load(off, count, 4096, () => slab);
    t.equal(pages.length, count * 4096);
    const want = Buffer.alloc(count * 4096);
    data.copy(want, 0, off, Math.min(size, off + count * 4096));
    if (!Buffer.from(pages.buffer, pages.byteOffset, pages.length).equals(want)) t.fail(`packet at ${off} differs`);
    held.push(release);
  }
  for (const r of held) r();
  t.pass('every packet matched the file');
});

/** A 1 MiB file of random bytes, open read-write and mapped whole. */
function mappedFile(t: Test): { f: string; fd: number; ab: ArrayBuffer } {
  const f = path.join(tmpdir(t), 'img');
  fs.writeFileSync(f, randomBytes(1 << 20));
  const fd = fs.openSync(f, 'r+');
  t.teardown(() => fs.closeSync(fd));
  return { f, fd, ab: native.mapRange(fd, 0, 1 << 20) };
}

t.test('a mapping whose file shrinks under the scan is an error, not a crash', async (t) => {
  const { fd, ab } = mappedFile(t);
  fs.ftruncateSync(fd, 4096);
  const pages = new Uint8Array(ab);
  await t.rejects(analysePages(pages, 4096, 256, new Uint8Array(256), new Uint32Array(256)), { code: 'ESHORTREAD' });
  native.unmapRange(ab);
  t.equal(ab.byteLength, 0, 'unmapped buffers are detached');
});

t.test('writePacket: runs land at their offsets from pieces, clipped to the block, padding checked', async (t) => {
  const dir = tmpdir(t);
  const f = path.join(dir, 'out');
  const blockSize = 3 * 4096 + 10;
  const fd = fs.openSync(f, 'w+');
  t.teardown(() => fs.closeSync(fd));
  fs.ftruncateSync(fd, blockSize);
  const pages = randomBytes(3 * 4096);
  pages.fill(0, 2 * 4096 + 10); // last page: 10 bytes of data then padding
  // As socket chunks: a page split across pieces, and an empty piece.
  const pieces = [pages.subarray(0, 1000), pages.subarray(1000, 1000), pages.subarray(1000, 9000), pages.subarray(9000)];
  const crc = new Uint32Array(3);
  await writePacket({
    fd,
    pages: pieces,
    pageSize: 4096,
    offsets: new Float64Array([0, 4096, 3 * 4096]),
    normal: 3,
    zero: 0,
    blockSize,
    writeZeros: false,
    crc,
  });
  for (let i = 0; i < 3; i++) t.equal(crc[i], native.crc32c(pages.subarray(i * 4096, (i + 1) * 4096)), `crc of page ${i} across pieces`);
  const got = fs.readFileSync(f);
  t.equal(got.length, blockSize, 'nothing written past the block');
  t.same(got.subarray(0, 8192), pages.subarray(0, 8192));
  t.same(got.subarray(3 * 4096), pages.subarray(2 * 4096, 2 * 4096 + 10));
  t.ok(
    got.subarray(8192, 3 * 4096).every((b) => b === 0),
    'the hole stays zero',
  );
  pages[2 * 4096 + 100] = 1;
  const e = await writePacket({
    fd,
    pages: [pages],
    pageSize: 4096,
    offsets: new Float64Array([0, 4096, 3 * 4096]),
    normal: 3,
    zero: 0,
    blockSize,
    writeZeros: false,
    crc,
  }).catch((x) => x);
  t.ok(e instanceof NativeIoError);
  t.match(e, { code: 'EPADDING', on: 'file', op: 'write', badPage: 2 });
  t.throws(
    () => native.writePacket(fd, [pages.subarray(0, 4096)], 4096, new Float64Array([blockSize]), 1, 0, blockSize, false, crc, () => {}),
    RangeError,
    'an offset outside the block never reaches pwrite',
  );
  t.throws(
    () => native.writePacket(fd, [pages.subarray(0, 100)], 4096, new Float64Array([0]), 1, 0, blockSize, false, crc, () => {}),
    RangeError,
    'pieces shorter than the pages',
  );
});

t.test('dataExtents: where a sparse file has data; analysePages takes hole pages as zero unread', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'sparse');
  const fd = fs.openSync(file, 'w+');
  t.teardown(() => fs.closeSync(fd));
  fs.ftruncateSync(fd, 1 << 20);
  fs.writeSync(fd, Buffer.alloc(8192, 7), 0, 8192, 65536);
  fs.writeSync(fd, Buffer.alloc(4096, 9), 0, 4096, 512 * 1024);
  const ext = [...native.dataExtents(fd, 0, 1 << 20)];
  if (ext.length === 2 && ext[0] === 0 && ext[1] === 1 << 20) return void t.skip('no SEEK_HOLE on this file system', () => {});
  t.same(ext, [65536, 65536 + 8192, 512 * 1024, 512 * 1024 + 4096], 'the two data extents, nothing else');
  const until = new Float64Array(1);
  t.same([...native.dataExtents(fd, 69632, 4096, until)], [69632, 73728], 'clipped to the range asked');
  t.equal(until[0], 65536 + 8192, 'until: where that data really ends, past the range');
  t.same([...native.dataExtents(fd, 600 * 1024, 4096, until)], [], 'a range wholly in a hole');
  t.equal(until[0], 0, 'until: 0 without data');
  native.dataExtents(fd, 65536, 16384, until);
  t.equal(until[0], 65536 + 8192, 'until: within the range when it ends in a hole');
  t.throws(() => native.dataExtents(fd, 0, 4096, new Float64Array(0)), /until must be a Float64Array/);
  t.throws(() => native.dataExtents(-1 >>> 0, 0, 4096), 'a bad descriptor throws');

  // Pages flagged as holes are trusted: here they hold data, and are still reported zero (so they were not read).
  const pages = Buffer.alloc(4 * 4096, 1);
  const zero = new Uint8Array(4);
  const crc = new Uint32Array(4);
  const holes = Uint8Array.from([0, 1, 1, 0]);
  t.equal(native.analysePagesSync(pages, 4096, 4, zero, crc, holes), 2);
  t.same([...zero], [0, 1, 1, 0]);
  t.equal(crc[1], native.crc32c(new Uint8Array(4096)), 'a hole page gets the CRC of a zero page');
  t.equal(crc[0], native.crc32c(pages.subarray(0, 4096)), 'a data page its own');
  t.equal(native.analysePagesSync(pages, 4096, 4, null, crc, holes), 0, 'without zero detection the hint is ignored');
  t.equal(crc[1], native.crc32c(pages.subarray(4096, 8192)));
});

t.test('ImageSource: an image truncated under it is an error, not a run of holes (lseek calls the lost tail a hole)', async (t) => {
  const dir = tmpdir(t);
  const f = path.join(dir, 'img');
  fs.writeFileSync(f, randomBytes(4 << 20));
  const src = await ImageSource.open({ name: 'img', path: f }, 'map');
  t.teardown(() => src.close());
  const scratch = (): Uint8Array => new Uint8Array(1 << 20);
  const first = await src.load(0, 128, 4096, scratch);
  t.equal(first.holes, null, 'a file of data has no holes');
  first.release();
  fs.truncateSync(f, 1 << 20);
  // Inside the span lseek found all data the pages are not asked about again: they are read, and
  // reading them fails; past it lseek is asked, and the shrink is found there.
  const inSpan = await src.load(2 << 20, 128, 4096, scratch);
  t.equal(inSpan.holes, null, 'the lost tail is not taken for holes');
  await t.rejects(analysePages(inSpan.pages, 4096, 128, new Uint8Array(128), new Uint32Array(128)), { code: 'ESHORTREAD' });
  inSpan.release();
  const other = await ImageSource.open({ name: 'img', path: f });
  t.teardown(() => other.close());
  fs.truncateSync(f, 512 << 10);
  await t.rejects(other.load(512 << 10, 128, 4096, scratch), {
    code: 'ERR_IMAGE_SHRANK',
    message: /shrank while sending: it is now 524288 bytes, expected 1048576 bytes/,
  });
});

t.test(
  'probeImageAccess: CPU time each way over whole pages inside the extents; past the end of the file ESHORTREAD, not a crash',
  async (t) => {
    const file = path.join(tmpdir(t), 'probe.ram');
    fs.writeFileSync(file, randomBytes(2 << 20));
    const fd = fs.openSync(file, 'r');
    t.teardown(() => fs.closeSync(fd));
    const [code, mapNs, readNs] = native.probeImageAccess(fd, Float64Array.of(0, 1 << 20, 1 << 20, 2 << 20));
    t.equal(code, 0);
    t.ok(mapNs! > 0 && readNs! > 0, 'both ways took some CPU time');
    t.same([...native.probeImageAccess(fd, Float64Array.of(100, 4000))], [0, 0, 0], 'no whole page inside an extent: nothing touched');
    t.same(
      [...native.probeImageAccess(fd, Float64Array.of(0, 4 << 20))],
      [native.resultCodes.ESHORTREAD, 0, 0],
      'pages past the end of the file: SIGBUS caught',
    );
    t.same([...native.probeImageAccess(1 << 20, Float64Array.of(0, 4096))], [-9, 0, 0], 'a bad descriptor: -EBADF');
  },
);
