#!/usr/bin/env node
// node bench/zero-scan.mjs [--mib 256] [--passes 1] [--rounds 7] [--offset 0]
//
// The zero-page scan's accelerators (avx512, avx2, sse2, scalar: whichever this CPU runs), one
// addon call per 128-page packet as the send pipeline makes it, on three page mixes held in
// memory (no I/O):
//
//   zero     every page zero: every page is scanned to its end (the scan's worst case)
//   data     random pages: the three-byte sample rejects almost all of them unscanned
//   late     pages zero but for their last 64 bytes, past the sample's spots: a full scan that
//            finds data at the end (a page of a mostly empty data structure)
//
// --mib sets the working set: 256 MiB is out of cache, as an image is (the scan then runs at
// memory speed); a small one (--mib 1 --passes 256) keeps it in cache and shows the instructions'
// own cost. Rounds are interleaved (each round times every accelerator, in a rotating order) and the
// report gives the median GB/s of page bytes and each accelerator's ratio to the best.
//
// --offset puts the pages that many bytes past a page boundary: 0 is a mapped image's alignment,
// 16 is what malloc'd memory and a SharedArrayBuffer get (the receiver's decode buffers, the
// sender's read slabs). The buffers come from the addon's aligned allocator, so the offset is exact.
import { parseArgs } from 'node:util';
import { randomFillSync } from 'node:crypto';
import { native } from '../dist/native/load.js';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    passes: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '7' },
    offset: { type: 'string', default: '0' },
  },
});
const PAGE = 4096;
const PACKET = 128;
const bytes = Number(opt.mib) * 1024 * 1024;
const pages = bytes / PAGE;
const rounds = Number(opt.rounds);
const passes = Number(opt.passes);
const offset = Number(opt.offset);
/** `bytes` of zeros, `offset` bytes past a page boundary. */
const pagesAt = () => new Uint8Array(native.alignedBuffer(bytes + PAGE), offset, bytes);

const mixes = {
  zero: pagesAt(),
  data: randomFillSync(pagesAt()),
  late: (() => {
    const b = pagesAt();
    for (let p = 0; p < pages; p++) b.fill(0x5a, (p + 1) * PAGE - 64, (p + 1) * PAGE - 1);
    return b;
  })(),
};

const out = new Uint8Array(PACKET);
function scan(buf) {
  let zeros = 0;
  for (let n = 0; n < passes; n++) {
    zeros = 0;
    for (let p = 0; p < pages; p += PACKET) {
      zeros += native.scanZeroPages(buf.subarray(p * PAGE, (p + PACKET) * PAGE), PAGE, PACKET, out);
    }
  }
  return zeros;
}

const accels = native.zeroPageAccels();
const before = native.zeroPageAccel();
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const rows = [];
for (const [mix, buf] of Object.entries(mixes)) {
  const times = Object.fromEntries(accels.map((a) => [a, []]));
  for (const a of accels) {
    native._setZeroPageAccel(a);
    scan(buf); // warm-up: faults the pages in, warms the caches
  }
  for (let r = 0; r < rounds; r++) {
    const order = accels.map((_, i) => accels[(i + r) % accels.length]);
    for (const a of order) {
      native._setZeroPageAccel(a);
      const t0 = process.hrtime.bigint();
      const zeros = scan(buf);
      times[a].push(Number(process.hrtime.bigint() - t0) / 1e9);
      const want = mix === 'zero' ? pages : 0;
      if (zeros !== want) throw new Error(`${a} on ${mix}: ${zeros} zero pages, expected ${want}`);
    }
  }
  const rate = (s) => (bytes * passes) / s / 1e9;
  const top = Object.fromEntries(accels.map((a) => [a, rate(Math.min(...times[a]))]));
  const best = Math.max(...Object.values(top));
  for (const a of accels) rows.push({ mix, accel: a, med: rate(median(times[a])), top: top[a], ratio: top[a] / best });
}
native._setZeroPageAccel(before);

console.log(
  `zero-page scan, ${opt.mib} MiB per mix x ${passes} passes, ${PACKET}-page calls, pages ${offset} bytes past a page boundary, median of ${rounds} interleaved rounds`,
);
console.log(`default: ${before}\n`);
console.log('| mix | accelerator | GB/s median | GB/s fastest | of best |');
console.log('|---|---|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.mix} | ${r.accel} | ${r.med.toFixed(1)} | ${r.top.toFixed(1)} | ${r.ratio.toFixed(2)} |`);
}
