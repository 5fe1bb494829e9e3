/**
 * The qpl and qatzip methods against the real Intel libraries, where this addon was built with
 * them (CI builds one against ../shared/qpl and ../shared/qatzip and runs this file on it through
 * MFD_ADDON_PATH; a build without them skips, saying so):
 * - packets the library compressed (its software path, as QEMU runs it without a device), in
 *   multifd framing, are received by mfd's receiver and rebuilt by mfd inspect byte for byte;
 * - the library decodes every page each of mfd's engines writes;
 * - the jobs' edges: incompressible pages, output limits, a library error mapped to mfd's error.
 * Images: a synthetic one (text, records, random, half-random and zero pages), and real guest RAM
 * when MFD_GUEST_RAM names an image (../shared/corpus/guest-ram makes one; too slow for CI): its
 * first 24 MiB, which doubles the file's time (`npx tap --timeout 900` on a busy machine).
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { native } from '../../src/native/load.js';
import { migrate, sha256, tmpdir } from '../helpers/index.js';
import { readChannelDump } from '../helpers/streams.js';
import { built } from '../helpers/build.js';
import { extractSink, inspectStream } from '../../src/inspect/inspect.js';
import { getMethod } from '../../src/methods/index.js';
import { installTestNatives } from '../helpers/test-natives.js';
import type { MethodName, ParamsOfMethod } from '../../src/methods/index.js';

// The fake work queue and the fake IAA engine are in the test addon (addon/test/), which the program never loads.
installTestNatives();

const PS = 4096;
const CHANNELS = 2;
const noQpl = built.qpl ? false : 'this addon was built without libqpl (CI tests a build against ../shared/qpl through MFD_ADDON_PATH)';
const noQz = built.qatzip
  ? false
  : 'this addon was built without QATzip (CI tests a build against ../shared/qatzip through MFD_ADDON_PATH)';

/** Pages of text, records, random bytes, half-random (passes the random-looking check, does not fit) and zeros. */
function synthetic(file: string, pages: number): string {
  const b = Buffer.alloc(pages * PS);
  const words = ['kernel ', 'page ', 'GET /a.html HTTP/1.1\n', 'migration ', '{"id": ', 'error ', '0x7ffd '];
  for (let p = 0; p < pages; p++) {
    const page = b.subarray(p * PS, (p + 1) * PS);
    switch (p % 6) {
      case 0:
        for (let at = 0; at < PS;) at += page.write(words[(p * 7 + at) % words.length]! + String(at % 97), at);
        break;
      case 1:
        for (let i = 0; i < PS; i += 8) {
          page.writeUInt32LE(p * 512 + i, i);
          page.writeUInt32LE(i % 61, i + 4);
        }
        break;
      case 2:
        randomBytes(PS).copy(page);
        break;
      case 3:
        randomBytes(PS - 512).copy(page, 512);
        break;
      case 4:
        break;
      default:
        page.fill(p & 0xff, 0, 100);
    }
  }
  fs.writeFileSync(file, b);
  return file;
}

/** The images: synthetic, and the first 24 MiB of real guest RAM when MFD_GUEST_RAM names one. */
function images(t: Test, dir: string): { name: string; path: string }[] {
  const list = [{ name: 'synthetic', path: synthetic(path.join(dir, 'synthetic.ram'), 1024) }];
  const guest = process.env.MFD_GUEST_RAM;
  if (guest && fs.existsSync(guest)) {
    const fd = fs.openSync(guest, 'r');
    const b = Buffer.alloc(Math.min(24 << 20, fs.fstatSync(fd).size - (fs.fstatSync(fd).size % PS)));
    fs.readSync(fd, b, 0, b.length, 0);
    fs.closeSync(fd);
    fs.writeFileSync(path.join(dir, 'guest.ram'), b);
    list.push({ name: 'guest', path: path.join(dir, 'guest.ram') });
  } else {
    t.comment('real guest RAM: MFD_GUEST_RAM is not set; synthetic image only');
  }
  return list;
}

/** Every data packet of a run's dumps, with the source pages it carries. */
function packets(dump: string, image: Buffer): { payload: Buffer; normal: number; pages: Buffer }[] {
  const out = [];
  for (let id = 0; id < CHANNELS; id++) {
    for (const p of readChannelDump(path.join(dump, `channel-${id}.bin`)).packets) {
      if (p.header.normalPages === 0) continue;
      const pages = Buffer.concat(Array.from(p.header.offsets.subarray(0, p.header.normalPages), (o) => image.subarray(o, o + PS)));
      out.push({ payload: p.payload, normal: p.header.normalPages, pages });
    }
  }
  return out;
}

/** One migration of `img` with `method` and params, dumped; checks the received image and mfd inspect's extraction. */
async function run<N extends MethodName>(
  t: Test,
  img: { name: string; path: string },
  method: N,
  methodParams: Partial<ParamsOfMethod<N>>,
) {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  const dump = path.join(dir, 'dump');
  fs.mkdirSync(out);
  fs.mkdirSync(dump);
  const r = await migrate(
    {
      images: [{ name: 'ram', path: img.path }],
      channels: CHANNELS,
      pageSize: PS,
      compression: method,
      methodParams,
      zeroPageDetection: 'multifd',
    },
    { outputDir: out, dumpStreams: dump },
  );
  t.equal(sha256(path.join(out, 'ram')), sha256(img.path), `${img.name}: mfd's receiver wrote the image byte for byte`);
  const target = path.join(dir, 'extracted.ram');
  const x = extractSink('ram', target, PS);
  for (let id = 0; id < CHANNELS; id++)
    t.same((await inspectStream(path.join(dump, `channel-${id}.bin`), PS, x.sink)).errors, [], `channel ${id}: inspect finds no error`);
  x.close();
  t.equal(sha256(target), sha256(img.path), `${img.name}: mfd inspect --extract rebuilt the image byte for byte`);
  return { ...r, packets: packets(dump, fs.readFileSync(img.path)) };
}

t.test(
  "qpl: pages libqpl compressed are received and inspected byte for byte; they are the library's bytes",
  { skip: noQpl },
  async (t) => {
    for (const img of images(t, tmpdir(t))) {
      const { sent, received, packets: ps } = await run(t, img, 'qpl', { swEngine: 'qpl' });
      const c = sent.stats.paths.compression.pages;
      t.ok(c['qpl-software']! > 0, `${img.name}: ${c['qpl-software']} pages on libqpl's software path`);
      t.notOk(c.software, "none on mfd's deflate");
      t.match(sent.stats.compressionPath, /^libqpl [\d.]+ software path \(qpl_path_software\)/);
      t.equal(
        received.stats.paths.compression.pages.software! + (received.stats.paths.compression.pages.raw ?? 0),
        sent.stats.normalPages,
        "decoded by mfd's inflate",
      );
      // The wire carries libqpl's output: QEMU's job (no Huffman table) makes one fixed-Huffman block
      // per page, or a stored one (BTYPE 01 or 00 in the first byte), where mfd's zlib makes dynamic ones.
      let fixed = 0;
      let compressed = 0;
      for (const p of ps) {
        let at = 4 * p.normal;
        for (let j = 0; j < p.normal; j++) {
          const len = p.payload.readUInt32BE(4 * j);
          if (len < PS) {
            compressed++;
            if (((p.payload[at]! >> 1) & 3) <= 1) fixed++;
          }
          at += len;
        }
      }
      t.ok(compressed > 0);
      t.equal(
        fixed,
        compressed,
        `${img.name}: all ${compressed} compressed pages are fixed-Huffman or stored blocks, as libqpl's job makes them`,
      );
    }
  },
);

t.test("qpl: libqpl decodes every page each of mfd's engines writes", { skip: noQpl }, async (t) => {
  for (const img of images(t, tmpdir(t))) {
    for (const engine of ['mfd', 'fake-iaa']) {
      if (engine === 'fake-iaa') native._qplSetFakeEngine('busy=0,error_every=0');
      t.teardown(() => native._qplSetFakeEngine(null));
      const { packets: ps } = await run(t, img, 'qpl', { swEngine: 'mfd' });
      native._qplSetFakeEngine(null);
      let pages = 0;
      const counts = new Float64Array(7);
      for (const p of ps) {
        const out = Buffer.alloc(p.normal * PS);
        native.qplDecompressPages(p.payload, p.normal, PS, out, counts, 1);
        if (!out.equals(p.pages)) t.fail(`${img.name}, ${engine}: a packet decoded by libqpl differs`);
        t.equal(counts[0], 0, 'no engine took part in the decoding');
        pages += counts[1]! + counts[2]!;
      }
      t.equal(
        pages,
        ps.reduce((a, p) => a + p.normal, 0),
        `${img.name}, ${engine}: libqpl decoded (or copied raw) all ${pages} pages`,
      );
    }
  }
});

t.test('qpl jobs: incompressible pages go raw, output stays under the page, library errors are mfd errors', { skip: noQpl }, async (t) => {
  const counts = new Float64Array(7);
  // Passes the random-looking check (its first 512 bytes take under 200 values), so libqpl runs; 7
  // and then 8 random bits a byte do not fit in page size - 1 even as a stored block.
  const half = randomBytes(PS);
  for (let i = 0; i < 512; i++) half[i]! &= 0x7f;
  const text = Buffer.alloc(PS, 'abcdefgh');
  const out = Buffer.alloc(2 * (PS + 4));
  const n = native.qplCompressPages([half, text], PS, out, counts, 1);
  t.same([...counts], [0, 1, 1, 0, 0, 0, 0], 'one page on libqpl, one raw; no library error');
  t.equal(out.readUInt32BE(0), PS, 'the incompressible page: length = page size, sent raw');
  t.ok(out.subarray(8, 8 + PS).equals(half), 'raw bytes');
  const len = out.readUInt32BE(4);
  t.ok(len > 0 && len <= PS - 1, `the text page fits in page size - 1 (${len} bytes)`);
  t.equal(n, 8 + PS + len);
  // A page whose deflate decodes past the page, and bytes that are no deflate at all.
  const dec = Buffer.alloc(PS);
  const bad = (body: Buffer): Buffer => Buffer.concat([Buffer.from([0, 0, 0, body.length]), body]);
  const twice = Buffer.alloc(2 * (PS + 4));
  const tn = native.qplCompressPages([Buffer.alloc(2 * PS, 'abcdefgh')], 2 * PS, twice, counts, 1);
  t.throws(() => native.qplDecompressPages(bad(twice.subarray(4, tn)), 1, PS, dec, counts, 1), {
    code: 'ERR_PAYLOAD_CORRUPT',
    message: /refused by libqpl's software path \((QPL status \d+|not exactly one page)\), expected 4096 bytes/,
  });
  t.throws(() => native.qplDecompressPages(bad(Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff])), 1, PS, dec, counts, 1), {
    code: 'ERR_PAYLOAD_CORRUPT',
    message: /QPL status \d+/,
  });
});

t.test(
  "qatzip: packets QATzip compressed are received and inspected byte for byte; they are the library's bytes",
  { skip: noQz },
  async (t) => {
    for (const img of images(t, tmpdir(t))) {
      const { sent, received, packets: ps } = await run(t, img, 'qatzip', { swEngine: 'qatzip' });
      t.same(Object.keys(sent.stats.paths.compression.pages), ['qatzip-software'], `${img.name}: every page on QATzip's software session`);
      t.match(sent.stats.compressionPath, /^software QATzip [\d.]+ software session \(sw_backup, level 1/);
      t.same(Object.keys(received.stats.paths.compression.pages), ['software'], "decoded by mfd's inflate");
      let same = 0;
      for (const p of ps) {
        const again = Buffer.alloc(p.pages.length + 4096);
        if (again.subarray(0, native.qatzipCompress(p.pages, again, true)).equals(p.payload)) same++;
      }
      t.equal(same, ps.length, `${img.name}: all ${ps.length} payloads are QATzip's output`);
    }
  },
);

t.test("qatzip: QATzip decodes every packet mfd's engine writes", { skip: noQz }, async (t) => {
  native.qatzipSoftwareOpen(1);
  for (const img of images(t, tmpdir(t))) {
    const { packets: ps } = await run(t, img, 'qatzip', {});
    let pages = 0;
    for (const p of ps) {
      const out = Buffer.alloc(p.normal * PS);
      t.equal(native.qatzipDecompress(p.payload, out, true), out.length);
      if (!out.equals(p.pages)) t.fail(`${img.name}: a packet decoded by QATzip differs`);
      pages += p.normal;
    }
    t.equal(
      pages,
      ps.reduce((a, p) => a + p.normal, 0),
      `${img.name}: QATzip decoded all ${pages} pages of ${ps.length} packets`,
    );
  }
});

t.test('qatzip jobs: incompressible packets, output limits, QATzip errors as mfd errors', { skip: noQz }, async (t) => {
  native.qatzipSoftwareOpen(1);
  const rnd = randomBytes(128 * PS);
  const bound = getMethod('qatzip').maxPayload(128, PS);
  const out = Buffer.alloc(bound);
  const n = native.qatzipCompress(rnd, out, true);
  t.ok(n > rnd.length && n <= bound, `128 random pages: ${n} bytes, within the receiver's limit of ${bound}`);
  const back = Buffer.alloc(rnd.length);
  t.equal(native.qatzipDecompress(out.subarray(0, n), back, true), rnd.length);
  t.ok(back.equals(rnd));
  t.throws(
    () => native.qatzipCompress(rnd, Buffer.alloc(1000), true),
    { code: 'ERR_QATZIP', message: /qzCompress \(QATzip software\) failed with QATzip status -\d+/ },
    'output limit: QATzip refuses (QZ_FAIL)',
  );
  t.throws(
    () => native.qatzipDecompress(out.subarray(0, n), Buffer.alloc(rnd.length - PS), true),
    { code: 'ERR_PAYLOAD_SIZE' },
    'a packet decoding past its pages',
  );
  t.throws(() => native.qatzipDecompress(Buffer.from('not a gzip member at all, just text'), back, true), {
    code: 'ERR_PAYLOAD_CORRUPT',
    message: /qzDecompress \(QATzip software\) failed with QATzip status -?\d+/,
  });
  // A failure leaves QATzip's session mid-stream; the addon starts a fresh one, so the next packet decodes.
  back.fill(0);
  t.equal(native.qatzipDecompress(out.subarray(0, n), back, true), rnd.length, 'a good packet after the failures decodes');
  t.ok(back.equals(rnd));
});
