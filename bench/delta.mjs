#!/usr/bin/env node
// node bench/delta.mjs [--mib 256] [--changed 1,10,50] [--channels 4] [--compression none] [--no-rsync]
//
// Delta transfer (src/delta/) against a plain migration and rsync, on synthetic images over
// loopback, pairwise in one run. For each fraction of changed pages, the destination holds the old
// image (the output's earlier version) and the source the new one: 1/8 of pages zero, the rest
// random-looking (incompressible) pages, the changed ones chosen at random. Rows:
//
//   mfd delta   mfd send --delta to mfd recv --delta (in process, over 127.0.0.1)
//   mfd plain   the same without --delta
//   rsync       rsync --no-whole-file --inplace to its daemon on 127.0.0.1 (the old image at the
//               destination); bytes are its "Total bytes sent" plus "received"
//
// It also times the fingerprinting alone (the addon, all cores) on the image held in memory.
// Each row prints wire bytes, wall seconds, and bytes as a multiple of the changed pages' bytes.
import { parseArgs } from 'node:util';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { send } from '../dist/sender/sender.js';
import { receive } from '../dist/receiver/receiver.js';
import { silentLogger } from '../dist/log.js';
import { fingerprintPages, ENTRY_SIZE, FINGERPRINT_BATCH } from '../dist/delta/fingerprint.js';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    changed: { type: 'string', default: '1,10,50' },
    channels: { type: 'string', default: '4' },
    compression: { type: 'string', default: 'none' },
    'no-rsync': { type: 'boolean', default: false },
  },
});
const PAGE = 4096;
const bytes = Number(opt.mib) << 20;
const pages = bytes / PAGE;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-bench-delta-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

function image() {
  const b = randomBytes(bytes);
  for (let p = 0; p < pages; p += 8) b.fill(0, p * PAGE, (p + 1) * PAGE);
  return b;
}

async function fingerprintSpeed(b) {
  const out = Buffer.alloc(FINGERPRINT_BATCH * ENTRY_SIZE);
  const t0 = process.hrtime.bigint();
  for (let p = 0; p < pages; p += FINGERPRINT_BATCH) {
    const n = Math.min(FINGERPRINT_BATCH, pages - p);
    await fingerprintPages(b.subarray(p * PAGE, (p + n) * PAGE), PAGE, n, p, out);
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { s, gbps: bytes / s / 1e9 };
}

async function mfd(src, outDir, delta) {
  let port;
  const listening = new Promise((r) => (port = r));
  const result = receive({
    host: '127.0.0.1',
    port: 0,
    logger: silentLogger,
    outputDir: outDir,
    ...(delta ? { delta: { bases: [], dirs: [] } } : {}),
    onListening: (a) => port(a.port),
  });
  const p = await listening;
  const t0 = process.hrtime.bigint();
  const sent = await send({
    host: '127.0.0.1',
    port: p,
    logger: silentLogger,
    images: [{ name: 'vm.ram', path: src }],
    channels: Number(opt.channels),
    pageSize: PAGE,
    compression: opt.compression,
    methodParams: {},
    zeroPageDetection: 'multifd',
    delta,
  });
  await result;
  return { wire: sent.stats.wireBytes, s: Number(process.hrtime.bigint() - t0) / 1e9, delta: sent.stats.delta };
}

async function rsyncRun(src, destDir) {
  const port = await new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => r(p));
    });
  });
  const conf = path.join(dir, 'rsyncd.conf');
  fs.writeFileSync(
    conf,
    `use chroot = no\nuid = ${process.getuid()}\ngid = ${process.getgid()}\n[dst]\npath = ${destDir}\nread only = no\n`,
  );
  const d = spawn('rsync', ['--daemon', '--no-detach', '--address=127.0.0.1', `--port=${port}`, `--config=${conf}`], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  const t0 = process.hrtime.bigint();
  const r = spawnSync('rsync', ['--no-whole-file', '--inplace', '--stats', src, `rsync://127.0.0.1:${port}/dst/vm.ram`], {
    encoding: 'utf8',
  });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  d.kill();
  if (r.status !== 0) throw new Error(`rsync failed: ${r.stderr}`);
  const num = (re) => Number((r.stdout.match(re)?.[1] ?? '0').replace(/,/g, ''));
  return { wire: num(/Total bytes sent: ([\d,]+)/) + num(/Total bytes received: ([\d,]+)/), s };
}

const old = image();
const fp = await fingerprintSpeed(old);
console.log(
  `fingerprinting ${opt.mib} MiB in memory: ${fp.s.toFixed(3)} s, ${fp.gbps.toFixed(2)} GB/s on ${os.availableParallelism()} cores (XXH3-128, zero pages skipped)`,
);
console.log('| changed | row | wire bytes | x changed bytes | wall s | pages: data / base refs / in-migration refs / zero |');
console.log('|---|---|---|---|---|---|');
for (const pct of opt.changed.split(',').map(Number)) {
  const now = Buffer.from(old);
  let changed = 0;
  for (let p = 0; p < pages; p++) {
    if (Math.random() * 100 < pct) {
      randomBytes(PAGE).copy(now, p * PAGE);
      changed++;
    }
  }
  const src = path.join(dir, 'vm.ram');
  fs.writeFileSync(src, now);
  const changedBytes = changed * PAGE;
  const rows = [];
  for (const [name, delta] of [
    ['mfd delta', true],
    ['mfd plain', false],
  ]) {
    const out = fs.mkdtempSync(path.join(dir, 'out-'));
    fs.writeFileSync(path.join(out, 'vm.ram'), old);
    const r = await mfd(src, out, delta);
    if (!fs.readFileSync(path.join(out, 'vm.ram')).equals(now)) throw new Error(`${name}: output differs`);
    rows.push([name, r]);
    fs.rmSync(out, { recursive: true });
  }
  if (!opt['no-rsync']) {
    const out = fs.mkdtempSync(path.join(dir, 'out-'));
    fs.writeFileSync(path.join(out, 'vm.ram'), old);
    rows.push(['rsync', await rsyncRun(src, out)]);
    if (!fs.readFileSync(path.join(out, 'vm.ram')).equals(now)) throw new Error('rsync: output differs');
    fs.rmSync(out, { recursive: true });
  }
  for (const [name, r] of rows) {
    const d = r.delta ? `${r.delta.dataPages} / ${r.delta.basePages} / ${r.delta.migrationPages} / ${r.delta.zeroPages}` : '';
    console.log(`| ${pct}% (${changed} pages) | ${name} | ${r.wire} | ${(r.wire / changedBytes).toFixed(2)} | ${r.s.toFixed(2)} | ${d} |`);
  }
}
