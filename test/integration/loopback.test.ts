/** Whole migrations over loopback, in process; every case ends byte-identical. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, migrate, sha256, tmpdir, type Kind } from '../helpers/index.js';
import { Output } from '../../src/receiver/output.js';
import { native } from '../../src/native/load.js';

const MiB = 1 << 20;

interface Case {
  name: string;
  images: { name: string; size: number; kind: Kind }[];
  channels: number;
  detection?: string;
  pageSize?: number;
  /** The sender's image access (default: auto, which reads on every file system but hugetlbfs). */
  access?: 'map' | 'read';
}

const cases: Case[] = [
  { name: '1 channel, mixed', images: [{ name: 'a.ram', size: 3 * MiB, kind: 'mixed' }], channels: 1 },
  { name: '2 channels, mixed', images: [{ name: 'a.ram', size: 5 * MiB, kind: 'mixed' }], channels: 2 },
  { name: '4 channels, mixed', images: [{ name: 'a.ram', size: 9 * MiB, kind: 'mixed' }], channels: 4 },
  { name: '4 channels, mixed, from mappings', images: [{ name: 'a.ram', size: 41 * MiB, kind: 'mixed' }], channels: 4, access: 'map' },
  { name: '4 channels, mixed, read', images: [{ name: 'a.ram', size: 41 * MiB, kind: 'mixed' }], channels: 4, access: 'read' },
  { name: '8 channels, mixed', images: [{ name: 'a.ram', size: 9 * MiB, kind: 'mixed' }], channels: 8 },
  // More channels than the sender's shared packet buffers give each a full pipeline, and more than the
  // receiver's buffer budget gives each its full read-ahead: every channel still gets through.
  { name: '72 channels, several packets each', images: [{ name: 'a.ram', size: 80 * MiB, kind: 'mixed' }], channels: 72 },
  {
    name: 'several ramblocks at once, sizes off the packet and page size, empty and one-page blocks',
    images: [
      { name: 'pc.ram', size: 3 * MiB + 12345, kind: 'mixed' },
      { name: 'vga.vram', size: 512 * 1024 - 4096, kind: 'text' },
      { name: 'empty', size: 0, kind: 'zero' },
      { name: 'one-page', size: 4096, kind: 'random' },
      { name: 'tiny', size: 7, kind: 'random' },
    ],
    channels: 3,
  },
  {
    name: 'several ramblocks, sizes off the packet and page size, from mappings',
    images: [
      { name: 'pc.ram', size: 17 * MiB + 12345, kind: 'mixed' },
      { name: 'one-page', size: 4096, kind: 'random' },
      { name: 'tiny', size: 7, kind: 'random' },
    ],
    channels: 3,
    access: 'map',
  },
  { name: 'all zero', images: [{ name: 'z', size: 4 * MiB, kind: 'zero' }], channels: 4 },
  { name: 'all random', images: [{ name: 'r', size: 4 * MiB, kind: 'random' }], channels: 4 },
  { name: 'zero-page detection none', images: [{ name: 'm', size: 3 * MiB + 4096, kind: 'mixed' }], channels: 2, detection: 'none' },
  { name: '16 KiB pages', images: [{ name: 'm', size: 3 * MiB + 100, kind: 'mixed' }], channels: 2, pageSize: 16384 },
  { name: '64 KiB pages', images: [{ name: 'm', size: 3 * MiB + 100, kind: 'mixed' }], channels: 2, pageSize: 65536 },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const dir = tmpdir(t);
    const src = path.join(dir, 'src');
    const out = path.join(dir, 'out');
    fs.mkdirSync(src);
    fs.mkdirSync(out);
    const images = c.images.map((im, i) => ({ name: im.name, path: makeImage(path.join(src, im.name), im.size, im.kind, i + 1) }));
    const { sent, received } = await migrate(
      {
        images,
        channels: c.channels,
        pageSize: c.pageSize ?? 4096,
        compression: 'none',
        methodParams: {},
        zeroPageDetection: c.detection ?? 'multifd',
        ...(c.access ? { imageAccess: c.access } : {}),
      },
      { outputDir: out },
    );
    for (const im of images) t.equal(sha256(path.join(out, im.name)), sha256(im.path), `${im.name} byte-identical`);
    t.same(fs.readdirSync(out).sort(), images.map((i) => i.name).sort(), 'no temporary files left');
    const s = sent.stats;
    const r = received.stats;
    t.equal(s.channels, c.channels);
    t.same(
      r.perChannel.map((x) => x.packets),
      s.perChannel.map((x) => x.packets),
      'packets per channel agree',
    );
    t.equal(r.wireBytes, s.wireBytes, 'wire bytes agree');
    t.same(
      r.ramblocks.map((b) => b.digest),
      s.ramblocks.map((b) => b.digest),
      'digests agree',
    );
    const pages = c.images.reduce((a, im) => a + Math.ceil(im.size / (c.pageSize ?? 4096)), 0);
    t.equal(s.normalPages + s.zeroPages, pages, 'every page counted once');
    if (c.detection === 'none') t.equal(s.zeroPages, 0, 'no zero pages without detection');
    if (c.images.every((i) => i.kind === 'zero')) t.equal(s.normalPages, 0, 'an all-zero image sends no page data');
    if (c.images.every((i) => i.kind === 'random')) t.equal(s.zeroPages, 0);
    for (const ch of s.perChannel) t.ok(ch.syncPackets === 1, `channel ${ch.id} ends its pass with one SYNC`);
  });
}

t.test('zero pages stay holes in a fresh output', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'z.ram'), 8 * MiB, 'zero');
  const out = path.join(dir, 'out.ram');
  await migrate(
    {
      images: [{ name: 'z', path: img }],
      channels: 2,
      pageSize: 4096,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
    },
    { outputMap: new Map([['z', out]]) },
  );
  const st = fs.statSync(out);
  t.equal(st.size, 8 * MiB);
  t.ok(st.blocks * 512 < MiB, `allocated ${st.blocks * 512} bytes for an 8 MiB all-zero image`);
});

for (const inPlace of [false, true]) {
  t.test(`overwrite of an existing output (${inPlace ? 'in place: zero pages zeroed' : 'temporary file renamed over it'})`, async (t) => {
    const dir = tmpdir(t);
    const img = makeImage(path.join(dir, 'm.ram'), 3 * MiB, 'mixed', 7);
    const out = path.join(dir, 'existing.ram');
    makeImage(out, 5 * MiB, 'random'); // larger and full of data where the image has zero pages
    const { sent } = await migrate(
      {
        images: [{ name: 'm', path: img }],
        channels: 3,
        pageSize: 4096,
        compression: 'none',
        methodParams: {},
        zeroPageDetection: 'multifd',
      },
      { outputMap: new Map([['m', out]]), inPlace },
    );
    t.ok(sent.stats.zeroPages > 0, 'the image has zero pages');
    t.equal(sha256(out), sha256(img), 'byte-identical, shrunk to the image size');
    t.notOk(fs.existsSync(`${out}.mfd-partial`), 'no partial marker left');
    t.notOk(fs.existsSync(Output.tempPathFor(out)), 'no temporary file left');
  });
}

/**
 * A sparse image: 1 MiB holes, data pages of which some are written zeros (zero but
 * allocated), 64 KiB blocks that straddle packet boundaries, and a hole at the end.
 */
function sparseImage(file: string): { holes: number; zeroData: number; pages: number } {
  const size = 12 * MiB + 3 * 4096;
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, size);
  let dataPages = 0;
  let zeroData = 0;
  for (let off = 0; off + 64 * 1024 <= 11 * MiB; off += 640 * 1024) {
    const block = Buffer.alloc(64 * 1024, (off / 4096) % 251 || 1);
    block.fill(0, 8192, 12288); // one written page of zeros: data, not a hole
    fs.writeSync(fd, block, 0, block.length, off);
    dataPages += 16;
    zeroData += 1;
  }
  fs.closeSync(fd);
  const pages = size / 4096;
  return { holes: pages - dataPages, zeroData, pages };
}

t.test('a sparse image: holes are zero pages without being read, identical either way', async (t) => {
  const dir = tmpdir(t);
  const img = path.join(dir, 'sparse.ram');
  const shape = sparseImage(img);
  const probe = fs.openSync(img, 'r');
  const holesHere = native.dataExtents(probe, 0, shape.pages * 4096).length > 2;
  fs.closeSync(probe);
  if (!holesHere) return void t.skip('this file system reports no holes (no SEEK_HOLE)', () => {});
  // zlib: the channel's compute worker reads the pages (only the data's, where the scan skips holes).
  for (const [detection, imageAccess, compression] of [
    ['multifd', 'read', 'none'],
    ['multifd', 'map', 'none'],
    ['multifd', 'auto', 'none'],
    ['none', 'read', 'none'],
    ['multifd', 'read', 'zlib'],
    ['none', 'read', 'zlib'],
  ] as const) {
    const out = path.join(dir, `out-${detection}-${imageAccess}-${compression}`);
    fs.mkdirSync(out);
    const { sent, received } = await migrate(
      {
        images: [{ name: 'sparse.ram', path: img }],
        channels: 3,
        pageSize: 4096,
        compression,
        methodParams: {},
        zeroPageDetection: detection,
        imageAccess,
      },
      { outputDir: out },
    );
    t.equal(sha256(path.join(out, 'sparse.ram')), sha256(img), `${detection}, ${imageAccess}, ${compression}: byte-identical`);
    t.same(received.stats.ramblocks[0]!.digest, sent.stats.ramblocks[0]!.digest, `${detection}: digests agree`);
    if (compression === 'none')
      t.match(
        sent.stats.imageAccess,
        imageAccess === 'auto' ? /^(map|read) \(auto: / : `${imageAccess} (--image-access ${imageAccess})`,
        `${imageAccess}: the summary says how the pages were got, and why`,
      );
    else t.equal(sent.stats.imageAccess, undefined, `${compression}: the compute workers read the pages; nothing chosen to report`);
    t.equal(received.stats.imageAccess, undefined, 'the receiver has none to report');
    const zp = sent.stats.paths.zeroPage.pages;
    if (detection === 'multifd') {
      t.equal(zp['file-hole'], shape.holes, 'every page of a hole taken as zero from the file map');
      t.equal(sent.stats.zeroPages, shape.holes + shape.zeroData, 'plus the written zero pages the scan found');
      t.equal(zp[`cpu-${native.zeroPageAccel()}`], shape.pages - shape.holes, 'the scan read only the data pages');
    } else {
      t.equal(sent.stats.zeroPages, 0, 'without detection every page, holes too, is sent as a normal page');
      t.notOk('file-hole' in zp, 'and no page is reported as a hole');
    }
  }
});

t.test('a ramblock name of 255 bytes, the longest file name: the output, its temporary file and journal all fit', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const name = 'r'.repeat(250) + '.vram';
  const img = makeImage(path.join(dir, 'long.ram'), 2 * MiB, 'mixed');
  t.ok(Output.tempPathFor(path.join(out, name)).length < out.length + 1 + 255, 'the temporary name is shortened (a hash of the name)');
  const { sent } = await migrate(
    { images: [{ name, path: img }], channels: 2, pageSize: 4096, compression: 'none', methodParams: {}, zeroPageDetection: 'multifd' },
    { outputDir: out },
  );
  t.equal(sent.stats.status, 'completed');
  t.same(fs.readdirSync(out), [name], 'only the output is left, under its full name');
  t.equal(sha256(path.join(out, name)), sha256(img));
});
