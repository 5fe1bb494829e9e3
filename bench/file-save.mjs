#!/usr/bin/env node
// npm run bench:file [-- --size 2G --runs 3 --channels 4 --dir /tmp/mfd-file-bench]
//
// Saves a generated mixed image (about 50% zero, 30% text-like, 20% random pages, in runs; zero
// runs are holes in the image) to a file on this machine's disk, and measures in the same run,
// interleaved round by round (the order rotates each round):
//
//   cp                  cp of the raw image, then fsync of the copy (sync FILE)
//   write per packet    a plain loop: read 512 KiB of the image, fs.writeSync it, fsync at the end
//   mfd per-packet      mfd's stream layout through the same pipeline, but one synchronous write per
//                       packet (--file-writer per-packet): what mfd would be without its ring
//   mfd stream          the stream layout through the ring of aligned buffers (buffered)
//   mfd stream direct   the same with --direct-io (O_DIRECT)
//   mfd mapped-ram      --mapped-ram, buffered
//   mfd mapped-ram dir  --mapped-ram --direct-io
//
// Every contender ends with its file synced to disk, inside its timing (mfd: fdatasync before the
// trailer, fsync after). Between runs the output is deleted and `sync` runs, outside the timing.
//
// Page-cache conditioning (on by default; --no-condition turns it off): on this VM (free page
// reporting to the hypervisor), a page the guest freed a few seconds ago has been handed back to
// the host, and touching it again costs about 1 s per GiB of new page cache; recently freed pages
// cost nothing. Which one a buffered writer gets depends on what ran before it (an O_DIRECT run
// frees none), which decided the order of the buffered contenders from one run to the next. So
// before each timed run a 1.2 GiB scratch file is written and deleted (outside the timing): every
// contender starts with recently freed pages, as on a machine without free page reporting.
// A warm-up round (not counted) brings the image into the page cache for everyone. Reports
// medians and spreads (min..max) of wall time from process start to exit, throughput of image
// bytes and of bytes written, as a markdown table on stdout; JSON lines in bench/results/.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    size: { type: 'string', default: '2G' },
    runs: { type: 'string', default: '3' },
    channels: { type: 'string', default: '4' },
    dir: { type: 'string', default: path.join(os.tmpdir(), 'mfd-file-bench') },
    only: { type: 'string' },
    'no-condition': { type: 'boolean', default: false },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin', 'mfd.js');
const runs = Number(opt.runs);
fs.mkdirSync(opt.dir, { recursive: true });
const image = path.join(opt.dir, `mixed-${opt.size}.ram`);
const out = path.join(opt.dir, 'out.bin');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const now = () => Number(process.hrtime.bigint()) / 1e9;

function run(cmd, args) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

// The plain baseline, as its own process like the others: 512 KiB read, one writeSync, repeat; fsync.
const PER_PACKET = `
  const fs = require('node:fs');
  const [src, dst] = process.argv.slice(1);
  const i = fs.openSync(src, 'r'), o = fs.openSync(dst, 'w', 0o600);
  const buf = Buffer.allocUnsafe(512 * 1024);
  let n, written = 0;
  while ((n = fs.readSync(i, buf, 0, buf.length, null)) > 0) written += fs.writeSync(o, buf, 0, n);
  fs.fsyncSync(o);
  console.log(JSON.stringify({ written }));
`;

const mfdArgs = (extra) => [bin, 'send', '--to', `file:${out}`, '--channels', opt.channels, '--json', '--no-progress', ...extra, image];

const contenders = [
  { name: 'cp', what: 'raw image copy (sparse-aware), fsync', cmd: 'sh', args: ['-c', `cp "${image}" "${out}" && sync "${out}"`] },
  {
    name: 'write per packet',
    what: 'plain loop: 512 KiB read + fs.writeSync, fsync',
    cmd: process.execPath,
    args: ['-e', PER_PACKET, image, out],
  },
  {
    name: 'mfd per-packet',
    what: 'stream layout, one synchronous write per packet (no ring)',
    cmd: process.execPath,
    args: mfdArgs(['--file-writer', 'per-packet']),
  },
  { name: 'mfd stream', what: 'stream layout, ring of 4 x 4 MiB aligned buffers', cmd: process.execPath, args: mfdArgs([]) },
  { name: 'mfd stream direct', what: 'stream layout, ring of 8 x 4 MiB, O_DIRECT', cmd: process.execPath, args: mfdArgs(['--direct-io']) },
  { name: 'mfd mapped-ram', what: 'mapped-ram, positional page writes', cmd: process.execPath, args: mfdArgs(['--mapped-ram']) },
  { name: 'mfd mapped-ram direct', what: 'mapped-ram, O_DIRECT', cmd: process.execPath, args: mfdArgs(['--mapped-ram', '--direct-io']) },
].filter((c) => !opt.only || opt.only.split(',').includes(c.name));

const scratch = path.join(opt.dir, 'condition.tmp');
async function once(c) {
  fs.rmSync(out, { force: true });
  if (!opt['no-condition']) {
    spawnSync('dd', ['if=/dev/zero', `of=${scratch}`, 'bs=4M', 'count=300', 'status=none']);
    fs.rmSync(scratch, { force: true });
  }
  spawnSync('sync'); // earlier runs' writeback stays out of this run's time
  const t0 = now();
  const r = await run(c.cmd, c.args);
  const wall = now() - t0;
  if (r.code !== 0) throw new Error(`${c.name} failed (${r.code}): ${r.stderr}`);
  const st = fs.statSync(out);
  let extra = {};
  if (c.name.startsWith('mfd')) {
    const s = JSON.parse(r.stdout);
    extra = {
      mfdMs: s.totalTimeMs,
      cpu: s.process.cpuUserSec + s.process.cpuSystemSec,
      rssMiB: s.process.maxRssBytes / 2 ** 20,
      waits: s.file.writer?.waits,
    };
  }
  return { wall, fileBytes: st.size, diskBytes: st.blocks * 512, ...extra };
}

async function main() {
  if (!fs.existsSync(image)) {
    console.error(`generating ${image}`);
    const g = spawnSync(process.execPath, [bin, 'gen-image', image, '--size', opt.size, '--profile', 'mixed', '--seed', '1'], {
      stdio: 'inherit',
    });
    if (g.status !== 0) process.exit(1);
  }
  const imageBytes = fs.statSync(image).size;
  const results = new Map(contenders.map((c) => [c.name, []]));
  for (let round = -1; round < runs; round++) {
    // Rotate the order so no contender always follows the same one.
    const order = contenders.map((_, i) => contenders[(i + Math.max(round, 0)) % contenders.length]);
    for (const c of order) {
      const r = await once(c);
      if (round >= 0) results.get(c.name).push(r);
      console.error(
        `${round < 0 ? 'warm-up' : `round ${round + 1}`}: ${c.name.padEnd(22)} ${r.wall.toFixed(3)} s  ${(r.fileBytes / 2 ** 20).toFixed(0)} MiB file, ${(r.diskBytes / 2 ** 20).toFixed(0)} MiB on disk${r.waits !== undefined ? `, ring waits ${r.waits}` : ''}`,
      );
    }
  }
  fs.rmSync(out, { force: true });

  const med = (name, k) => median(results.get(name).map((r) => r[k]));
  const cpWall = results.has('cp') ? med('cp', 'wall') : NaN;
  const baseWall = results.has('mfd per-packet') ? med('mfd per-packet', 'wall') : NaN;
  const lines = [
    `${runs} runs per contender (median, min..max), ${(imageBytes / 2 ** 30).toFixed(2)} GiB mixed image, ${opt.channels} channels, output on ${opt.dir}, page cache ${opt['no-condition'] ? 'not conditioned' : 'conditioned before each run'}`,
    '',
    '| contender | what | wall time | image GiB/s | written MB/s | file MiB (on disk) | vs cp | vs mfd per-packet | CPU s | peak RSS MiB |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  const record = { date: new Date().toISOString(), size: opt.size, runs, channels: Number(opt.channels), host: os.hostname(), results: {} };
  for (const c of contenders) {
    const rs = results.get(c.name);
    const walls = rs.map((r) => r.wall);
    const w = median(walls);
    const file = median(rs.map((r) => r.fileBytes));
    const disk = median(rs.map((r) => r.diskBytes));
    const cpu = rs[0].cpu !== undefined ? median(rs.map((r) => r.cpu)).toFixed(2) : '';
    const rss = rs[0].rssMiB !== undefined ? median(rs.map((r) => r.rssMiB)).toFixed(0) : '';
    lines.push(
      `| ${c.name} | ${c.what} | ${w.toFixed(3)} s (${Math.min(...walls).toFixed(3)}..${Math.max(...walls).toFixed(3)}) | ${(imageBytes / 2 ** 30 / w).toFixed(2)} | ${(disk / 1e6 / w).toFixed(0)} | ${(file / 2 ** 20).toFixed(0)} (${(disk / 2 ** 20).toFixed(0)}) | ${(w / cpWall).toFixed(2)} | ${(w / baseWall).toFixed(2)} | ${cpu} | ${rss} |`,
    );
    record.results[c.name] = rs;
  }
  console.log(lines.join('\n'));
  fs.mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
  fs.appendFileSync(path.join(root, 'bench', 'results', 'file-save.jsonl'), JSON.stringify(record) + '\n');
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
