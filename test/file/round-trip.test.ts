/** Save to a file and restore, for every method in the stream layout and for mapped-ram; both byte-identical. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, sha256, tmpdir } from '../helpers/index.js';
import { packetHeaderSize } from '../../src/wire/constants.js';
import { inspectFile } from '../../src/inspect/file.js';
import { REGION_ALIGN } from '../../src/file/format.js';
import { restore, save } from '../helpers/files.js';

const PS = 4096;
const METHODS = ['none', 'zlib', 'zstd', 'lz4', 'qpl', 'qatzip'] as const;

/** Two ramblocks: a mixed one (zero, text, random pages) and one that ends inside a page. */
function images(dir: string, seed: number) {
  return [
    { name: 'pc.ram', path: makeImage(path.join(dir, 'pc.ram'), (3 << 20) + 8192, 'mixed', seed) },
    { name: 'vga.vram', path: makeImage(path.join(dir, 'vga'), (1 << 20) + 100, 'mixed', seed + 7) },
  ];
}

for (const [i, method] of METHODS.entries()) {
  t.test(`stream layout, ${method}: restored byte-identical, zero pages recorded but not stored`, async (t) => {
    const dir = tmpdir(t);
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    const imgs = images(dir, i + 1);
    const file = path.join(dir, 'vm.mfd');
    const saved = await save(imgs, file, { compression: method });
    t.equal(saved.file.layout, 'stream');
    t.equal(fs.statSync(file).size, saved.file.bytes, 'the file ends with the trailer');
    const s = saved.stats;
    t.ok(s.zeroPages > 0 && s.normalPages > 0, `pages: ${s.normalPages} normal, ${s.zeroPages} zero`);
    const packets = s.perChannel.reduce((a, c) => a + c.packets, 0);
    // Header, then records of (16 bytes + packet header + payload), then the trailer: zero pages take no payload.
    const bound = 8192 + packets * (16 + packetHeaderSize(PS)) + s.normalPages * PS + 8192;
    if (method === 'none') t.ok(saved.file.bytes <= bound, `${saved.file.bytes} bytes, at most ${bound}: only normal pages stored`);
    else t.ok(saved.file.bytes < s.normalPages * PS, `${saved.file.bytes} bytes: compressed below the normal pages' ${s.normalPages * PS}`);

    const r = await restore(file, out);
    for (const img of imgs) t.equal(sha256(path.join(out, img.name)), sha256(img.path), `${img.name} identical`);
    t.same(fs.readdirSync(out).sort(), ['pc.ram', 'vga.vram'], 'no temporary files left');
    t.equal(r.stats.normalPages, s.normalPages);
    t.equal(r.stats.zeroPages, s.zeroPages);
    t.same(
      r.stats.ramblocks.map((b) => b.digest),
      s.ramblocks.map((b) => b.digest),
      'digests agree',
    );
    t.equal(r.file.records, packets, 'every packet was a record');
    t.same(
      r.stats.perChannel.map((c) => c.packets),
      s.perChannel.map((c) => c.packets),
      'packets per channel as saved',
    );
  });
}

t.test('mapped-ram: pages at their places, zero pages holes, file bounded by the image sizes plus metadata', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const imgs = images(dir, 11);
  const file = path.join(dir, 'vm.mfd');
  const saved = await save(imgs, file, { mappedRam: true, channels: 4 });
  t.equal(saved.file.layout, 'mapped-ram');
  const sizes = imgs.map((i) => fs.statSync(i.path).size);
  const pagesBytes = sizes.reduce((a, n) => a + Math.ceil(n / PS) * PS, 0);
  // Header + bitmaps, then each region at the next 1 MiB boundary, then the trailer.
  const bound = pagesBytes + imgs.length * REGION_ALIGN + 4096;
  const st = fs.statSync(file);
  t.ok(st.size <= bound, `apparent size ${st.size} at most ${bound}`);
  t.ok(st.blocks * 512 < pagesBytes, `disk use ${st.blocks * 512} below the pages' ${pagesBytes}: zero pages are holes`);

  // Every present page is at region + index x page size, byte for byte.
  const report = await inspectFile({ path: file, offset: 0 });
  t.same(report.errors, []);
  t.equal(
    report.bitmaps.reduce((a, b) => a + b.present, 0),
    saved.stats.normalPages,
    'one bit per normal page',
  );
  const fd = fs.openSync(file, 'r');
  for (const [k, b] of report.ramblocks.entries()) {
    t.equal(b.regionOffset % REGION_ALIGN, 0, `${b.name}: region aligned to 1 MiB`);
    const img = fs.readFileSync(imgs[k]!.path);
    const page = Buffer.alloc(PS);
    for (const p of [0, 1, 5, 200, 767]) {
      const src = img.subarray(p * PS, (p + 1) * PS);
      if (src.length === 0) continue;
      fs.readSync(fd, page, 0, PS, b.regionOffset + p * PS);
      t.same(page.subarray(0, src.length), src, `${b.name} page ${p} in place`);
    }
  }
  fs.closeSync(fd);

  const r = await restore(file, out);
  for (const img of imgs) t.equal(sha256(path.join(out, img.name)), sha256(img.path), `${img.name} identical`);
  t.ok(fs.statSync(path.join(out, 'pc.ram')).blocks * 512 < sizes[0]!, 'holes stay holes in a fresh output');
  t.same(
    r.stats.ramblocks.map((b) => b.digest),
    saved.stats.ramblocks.map((b) => b.digest),
  );
});

t.test('mapped-ram restore in place: absent pages are zeroed over old contents', async (t) => {
  const dir = tmpdir(t);
  const imgs = images(dir, 21);
  const file = path.join(dir, 'vm.mfd');
  await save(imgs, file, { mappedRam: true });
  const target = path.join(dir, 'target');
  fs.writeFileSync(target, Buffer.alloc(fs.statSync(imgs[0]!.path).size, 0xaa));
  await restore(file, dir, {
    inPlace: true,
    outputMap: new Map([
      ['pc.ram', target],
      ['vga.vram', path.join(dir, 'vga.out')],
    ]),
  });
  t.equal(sha256(target), sha256(imgs[0]!.path));
});

t.test('stream layout: 64 KiB pages, one channel, and the per-packet baseline writer make valid files too', async (t) => {
  const dir = tmpdir(t);
  const imgs = images(dir, 31);
  for (const [name, o] of [
    ['64k', { pageSize: 65536, channels: 1, compression: 'zstd' }],
    ['per-packet', { writer: 'per-packet' as const }],
    ['small ring', { writer: { bufferSize: 1 << 20, buffers: 2 } }],
  ] as const) {
    const out = path.join(dir, `out-${name}`);
    fs.mkdirSync(out);
    const file = path.join(dir, `${name}.mfd`);
    const saved = await save(imgs, file, o);
    await restore(file, out);
    for (const img of imgs) t.equal(sha256(path.join(out, img.name)), sha256(img.path), `${name}: ${img.name} identical`);
    if (name === 'small ring') {
      const w = saved.file.writer;
      t.ok(typeof w === 'object' && w.writes >= 2, 'both 1 MiB buffers were written');
      t.equal(typeof w === 'object' && w.bytes, saved.file.trailerOffset, 'every byte before the trailer went through the ring');
    }
  }
});
