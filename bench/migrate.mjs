#!/usr/bin/env node
// npm run bench [-- --size 2G --channels 4 --runs 5 --dir /tmp/mfd-bench]
//
// Migrates a generated mixed image (about 50% zero, 30% text-like, 20% random pages, in runs)
// over loopback with `mfd recv` and `mfd send` as two processes, several times after a warm-up,
// and measures in the same session the peers it is compared with: the loopback limit from
// iperf3, raw `nc`, `zstd -1 -T0 | nc | zstd -d`, and QEMU's own multifd migration when
// qemu-system-x86_64 is installed (Debian: qemu-system-x86) and the method is one QEMU has. Reports medians and spreads (min..max) of the whole migration (start of
// send to verified receive), both sides' CPU seconds and peak RSS, and ratios against the peers.
// Results: a markdown table on stdout and JSON lines in bench/results/.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { qemuMigrate } from './qemu-peer.mjs';

const { values: opt } = parseArgs({
  options: {
    size: { type: 'string', default: '2G' },
    channels: { type: 'string', default: '4' },
    runs: { type: 'string', default: '5' },
    dir: { type: 'string', default: path.join(os.tmpdir(), 'mfd-bench') },
    compression: { type: 'string', default: 'none' },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin', 'mfd.js');
const runs = Number(opt.runs);
fs.mkdirSync(opt.dir, { recursive: true });
const image = path.join(opt.dir, `mixed-${opt.size}.ram`);
const out = path.join(opt.dir, 'out');

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const spread = (xs) => `${Math.min(...xs).toFixed(3)}..${Math.max(...xs).toFixed(3)}`;
const now = () => Number(process.hrtime.bigint()) / 1e9;

function proc(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => {
    stderr += d;
    opts.onStderr?.(stderr);
  });
  return { p, done: new Promise((r) => p.on('exit', (code) => r({ code, stdout, stderr }))) };
}

async function mfdOnce() {
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out);
  // Earlier runs' outputs are still being written back; let that finish outside the timing.
  spawnSync('sync');
  let resolvePort;
  const portP = new Promise((r) => (resolvePort = r));
  const recv = proc(process.execPath, [bin, 'recv', '--listen', '127.0.0.1:0', '--output', out, '--json'], {
    onStderr: (s) => {
      const m = /listening on \S+:(\d+)/.exec(s);
      if (m) resolvePort(Number(m[1]));
    },
  });
  const port = await portP;
  const t0 = now();
  const send = await proc(process.execPath, [bin, 'send', '--to', `127.0.0.1:${port}`, '--channels', opt.channels, '--compression', opt.compression, '--json', image]).done;
  const r = await recv.done;
  const wall = now() - t0;
  if (send.code !== 0 || r.code !== 0) throw new Error(`mfd failed: send ${send.code} ${send.stderr} recv ${r.code} ${r.stderr}`);
  const s = JSON.parse(send.stdout);
  const v = JSON.parse(r.stdout);
  return {
    wall,
    wireBytes: s.wireBytes,
    sendCpu: s.process.cpuUserSec + s.process.cpuSystemSec,
    recvCpu: v.process.cpuUserSec + v.process.cpuSystemSec,
    sendRssMiB: s.process.maxRssBytes / 2 ** 20,
    recvRssMiB: v.process.maxRssBytes / 2 ** 20,
  };
}

async function iperfOnce(bytes) {
  const port = 5201 + Math.floor(Math.random() * 1000);
  const srv = proc('iperf3', ['-s', '-1', '-p', String(port)]);
  await new Promise((r) => setTimeout(r, 300));
  const c = await proc('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-n', String(bytes), '-J']).done;
  await srv.done;
  const j = JSON.parse(c.stdout);
  return j.end.sum_received.bits_per_second / 8; // bytes/s
}

/** `zstd -1 -T0 | nc` into `nc -l | zstd -d`: the compressed peer, end to end. */
async function zstdNcOnce() {
  const port = 7201 + Math.floor(Math.random() * 1000);
  const dst = path.join(opt.dir, 'zstd-nc.out');
  const recv = proc('sh', ['-c', `nc -l 127.0.0.1 ${port} | zstd -d -q -o ${dst} -f`]);
  await new Promise((r) => setTimeout(r, 200));
  const t1 = now();
  await proc('sh', ['-c', `zstd -1 -T0 -q -c ${image} | nc -N 127.0.0.1 ${port}`]).done;
  await recv.done;
  const wall = now() - t1;
  fs.rmSync(dst, { force: true });
  return wall;
}

async function ncOnce() {
  const port = 6201 + Math.floor(Math.random() * 1000);
  const dst = path.join(opt.dir, 'nc.out');
  const t0 = now();
  const recv = proc('sh', ['-c', `nc -l 127.0.0.1 ${port} > ${dst}`]);
  await new Promise((r) => setTimeout(r, 200));
  const t1 = now();
  await proc('sh', ['-c', `nc -N 127.0.0.1 ${port} < ${image}`]).done;
  await recv.done;
  fs.rmSync(dst, { force: true });
  return now() - t1 + 0 * t0;
}

const sizeArg = opt.size;
if (!fs.existsSync(image)) {
  console.error(`generating ${image} (${sizeArg}, mixed, seed 1)`);
  const g = spawnSync(process.execPath, [bin, 'gen-image', '--size', sizeArg, '--seed', '1', image], { stdio: 'inherit' });
  if (g.status !== 0) process.exit(1);
}
const imageBytes = fs.statSync(image).size;
// Warm the page cache for every contender alike.
spawnSync('sh', ['-c', `cat ${image} > /dev/null`]);

console.error(`warm-up, then ${runs} runs of mfd (${opt.channels} channels, ${opt.compression})`);
await mfdOnce();
const rows = [];
const peers = { iperf3: [], nc: [], zstdNc: [], qemu: [], qemuWire: [] };
const QEMU_METHODS = ['none', 'zlib', 'zstd'];
const withQemu = has('qemu-system-x86_64') && QEMU_METHODS.includes(opt.compression);
const qemuOut = path.join(opt.dir, 'qemu-out.ram');
const loBytes = () => Number(fs.readFileSync('/sys/class/net/lo/statistics/rx_bytes', 'utf8'));
const mfdLoopback = [];
for (let i = 0; i < runs; i++) {
  // Interleave contenders so load on the shared machine hits them alike.
  const lo0 = loBytes();
  rows.push(await mfdOnce());
  mfdLoopback.push(loBytes() - lo0);
  if (withQemu) {
    spawnSync('sync');
    const q = await qemuMigrate({ image, out: qemuOut, dir: opt.dir, channels: Number(opt.channels), compression: opt.compression, port: 8301 + i });
    if (i === 0 && spawnSync('cmp', ['-s', image, qemuOut]).status !== 0) throw new Error('QEMU destination file differs from the image');
    peers.qemu.push(q.wall);
    peers.qemuWire.push(q.loopbackBytes);
    fs.rmSync(qemuOut, { force: true });
  }
  if (has('iperf3')) peers.iperf3.push(await iperfOnce(imageBytes));
  if (has('nc')) peers.nc.push(await ncOnce());
  if (has('nc') && has('zstd')) peers.zstdNc.push(await zstdNcOnce());
  console.error(`  run ${i + 1}: mfd ${rows.at(-1).wall.toFixed(3)} s`);
}

const wall = rows.map((r) => r.wall);
const result = {
  date: new Date().toISOString(),
  host: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
  imageBytes,
  channels: Number(opt.channels),
  compression: opt.compression,
  runs,
  mfd: {
    wallMedian: median(wall),
    wallSpread: spread(wall),
    imageGBps: imageBytes / median(wall) / 1e9,
    wireBytes: rows[0].wireBytes,
    sendCpuMedian: median(rows.map((r) => r.sendCpu)),
    recvCpuMedian: median(rows.map((r) => r.recvCpu)),
    sendRssMiBMax: Math.max(...rows.map((r) => r.sendRssMiB)),
    recvRssMiBMax: Math.max(...rows.map((r) => r.recvRssMiB)),
  },
  loopbackGBps: peers.iperf3.length ? median(peers.iperf3) / 1e9 : null,
  ncWallMedian: peers.nc.length ? median(peers.nc) : null,
  zstdNcWallMedian: peers.zstdNc.length ? median(peers.zstdNc) : null,
  qemuWallMedian: peers.qemu.length ? median(peers.qemu) : null,
  // Pair by pair: each mfd run against the QEMU run next to it.
  mfdOverQemu: peers.qemu.length ? median(rows.map((r, i) => r.wall / peers.qemu[i])) : null,
  mfdLoopbackBytes: median(mfdLoopback),
  qemuLoopbackBytes: peers.qemuWire.length ? median(peers.qemuWire) : null,
};
// Floors: the image's bytes at the loopback limit (raw transfer, no zero pages skipped),
// and the wire bytes mfd actually sent at that limit.
const floorImage = result.loopbackGBps ? imageBytes / (result.loopbackGBps * 1e9) : null;
const floorWire = result.loopbackGBps ? result.mfd.wireBytes / (result.loopbackGBps * 1e9) : null;
fs.mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
fs.appendFileSync(path.join(root, 'bench', 'results', 'migrate.jsonl'), JSON.stringify({ ...result, floorImage, floorWire }) + '\n');

const f = (x, d = 3) => (x == null ? 'n/a' : x.toFixed(d));
console.log(`\n### mfd ${opt.compression}, ${(imageBytes / 2 ** 30).toFixed(2)} GiB mixed image, ${opt.channels} channels, loopback, ${runs} runs (median, min..max)\n`);
console.log('| what | value |');
console.log('|---|---|');
console.log(`| mfd wall time (send start to verified receive) | ${f(result.mfd.wallMedian)} s (${result.mfd.wallSpread}) |`);
console.log(`| mfd image throughput | ${f(result.mfd.imageGBps, 2)} GB/s |`);
console.log(`| wire bytes / image bytes | ${f(result.mfd.wireBytes / imageBytes, 3)} |`);
console.log(`| CPU seconds, sender / receiver | ${f(result.mfd.sendCpuMedian, 2)} / ${f(result.mfd.recvCpuMedian, 2)} |`);
console.log(`| peak RSS MiB, sender / receiver | ${f(result.mfd.sendRssMiBMax, 0)} / ${f(result.mfd.recvRssMiBMax, 0)} |`);
console.log(`| loopback limit (iperf3, same run) | ${f(result.loopbackGBps, 2)} GB/s |`);
console.log(`| floor: image bytes at the loopback limit | ${f(floorImage)} s (mfd/floor ${floorImage ? f(result.mfd.wallMedian / floorImage, 2) : 'n/a'}) |`);
console.log(`| raw nc of the image (same run) | ${f(result.ncWallMedian)} s (mfd/nc ${result.ncWallMedian ? f(result.mfd.wallMedian / result.ncWallMedian, 2) : 'n/a'}) |`);
console.log(`| zstd -1 -T0 \\| nc \\| zstd -d (same run) | ${f(result.zstdNcWallMedian)} s (mfd/zstd-nc ${result.zstdNcWallMedian ? f(result.mfd.wallMedian / result.zstdNcWallMedian, 2) : 'n/a'}) |`);
console.log(`| QEMU ${spawnSync('qemu-system-x86_64', ['--version']).stdout?.toString().split('\n')[0].replace(/^QEMU emulator version /, '') ?? ''} multifd (same run) | ${result.qemuWallMedian == null ? 'n/a (not installed, or a method QEMU lacks)' : `${f(result.qemuWallMedian)} s (mfd/QEMU ${f(result.mfdOverQemu, 2)}, pair by pair)`} |`);
console.log(`| bytes on loopback, mfd / QEMU | ${result.mfdLoopbackBytes} / ${result.qemuLoopbackBytes ?? 'n/a'}${result.qemuLoopbackBytes ? ` (ratio ${f(result.mfdLoopbackBytes / result.qemuLoopbackBytes, 3)})` : ''} |`);
console.log(`\nmachine: ${result.host.cpus} x ${result.host.model}, ${result.host.memGiB} GiB, Linux ${result.host.kernel}, Node ${result.host.node}`);
if (!has('iperf3') || !has('nc') || !has('zstd')) console.log('(a peer is missing: apt-get install iperf3 netcat-openbsd zstd to measure them all)');
fs.rmSync(out, { recursive: true, force: true });
