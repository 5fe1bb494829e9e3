#!/usr/bin/env node
// node bench/delta.mjs [--mib 512] [--file IMAGE] [--dir DIR] [--access read,map,auto]
//
// How fast delta transfer fingerprints pages (src/delta/fingerprint.ts, addon/delta.cc: XXH3-128 of
// every non-zero page, on all cores): on pages in memory, and from a file through the page cache
// (what mfd recv does to its bases and mfd send to its images), with the CPU seconds it took and the
// page faults (first touches of fresh buffers: costly in a VM). From a file, each image access of
// --access in turn (read: pread into buffers; map: hashed from a mapping; auto: what mfd picks),
// alternating; the generated file goes into --dir (the system's temporary folder by default).
// Set UV_THREADPOOL_SIZE alike when comparing builds.
// Delta migrations themselves, against plain mfd and rsync: `mfd bench --changed 1,10,50` (generated
// images) or `mfd bench --image NEW.img --base OLD.img` (a real guest's two checkpoints).
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fingerprintFile, fingerprintPages, ENTRY_SIZE, FINGERPRINT_BATCH } from '../dist/delta/fingerprint.js';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '512' },
    file: { type: 'string' },
    dir: { type: 'string', default: os.tmpdir() },
    access: { type: 'string', default: 'read,map' },
  },
});
const PAGE = 4096;

function cpu(f) {
  return async () => {
    const f0 = process.resourceUsage().minorPageFault;
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const n = await f();
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    return { s, cpu: (c.user + c.system) / 1e6, faults: process.resourceUsage().minorPageFault - f0, n };
  };
}

const line = (what, bytes, r) =>
  console.log(
    `${what}: ${(bytes / 2 ** 20).toFixed(0)} MiB in ${r.s.toFixed(3)} s, ${(bytes / r.s / 1e9).toFixed(2)} GB/s, ` +
      `${r.cpu.toFixed(2)} CPU-s (${(bytes / r.cpu / 1e9).toFixed(2)} GB per CPU-s) on ${os.availableParallelism()} cores, ` +
      `${r.faults} page faults`,
  );

let file = opt.file;
let bytes;
if (!file) {
  bytes = Number(opt.mib) << 20;
  const b = randomBytes(bytes);
  for (let p = 0; p < bytes / PAGE; p += 8) b.fill(0, p * PAGE, (p + 1) * PAGE);
  const out = Buffer.alloc(FINGERPRINT_BATCH * ENTRY_SIZE);
  const mem = await cpu(async () => {
    for (let p = 0; p < bytes / PAGE; p += FINGERPRINT_BATCH) {
      const n = Math.min(FINGERPRINT_BATCH, bytes / PAGE - p);
      await fingerprintPages(b.subarray(p * PAGE, (p + n) * PAGE), PAGE, n, p, out);
    }
  })();
  line('in memory (random pages, 1 in 8 zero)', bytes, mem);
  const dir = fs.mkdtempSync(path.join(opt.dir, 'mfd-bench-fp-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  file = path.join(dir, 'image.ram');
  fs.writeFileSync(file, b);
}
bytes = fs.statSync(file).size;
const fd = fs.openSync(file, 'r');
const crc = new Uint32Array(Math.ceil(bytes / PAGE));
for (let r = 0; r < 3; r++) {
  for (const access of opt.access.split(',')) {
    let got = { how: 'read', why: 'an earlier build: it only reads' };
    const res = await cpu(async () => {
      got = (await fingerprintFile(fd, bytes, PAGE, 0, file, () => {}, crc, null, null, { access, pages: false })) ?? got;
    })();
    line(`from ${opt.file ? file : 'a file in the page cache'}, with CRC-32C, ${access}: ${got.how} (run ${r + 1})`, bytes, res);
    if (r === 0 && access === 'auto') console.log(`  auto: ${got.why}`);
  }
}
fs.closeSync(fd);
