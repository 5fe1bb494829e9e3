#!/usr/bin/env node
// npm run bench:qemu-peer [-- --size 2G --channels 4 --compression none,zstd --runs 3 --qemu-binary PATH --image GUEST.img]
//
// mfd standing in for a QEMU, against QEMU itself, pairwise in one run (issue 14, "Speed"):
//
//   qemu->qemu   QEMU -> QEMU                       (the reference: QEMU's own multifd migration)
//   qemu->mfd    QEMU -> mfd recv --qemu            (mfd as the destination: ramblock files, manifest)
//   mfd->qemu    mfd send --qemu -> QEMU            (mfd as the source: replays what qemu->mfd captured)
//
// Both QEMUs are one binary (default: the QEMU 10.0 that .ci/fetch-qemu10 fetches), `-M none`, their
// RAM a memory-backend-file (the image on the source, the output on the destination), multifd with
// the same channels and method on both sides, max-bandwidth lifted. Each is timed from the start of
// the migration (QMP `migrate`, or mfd send's start) to the destination holding everything (QEMU's
// query-migrate completed on both sides; mfd recv's exit). Every output is compared with the image.
// Rounds interleave the three, their order rotating; medians and per-round ratios to qemu->qemu are
// reported, with mfd's peak RSS and the CPU seconds per GiB of every process (sampled from /proc). Markdown on stdout; JSON lines in
// bench/results/qemu-peer.jsonl. Images and outputs go to --dir (default /tmp; tmpfs keeps the disk
// out of the figures).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opt } = parseArgs({
  options: {
    size: { type: 'string', default: '2G' },
    channels: { type: 'string', default: '4' },
    compression: { type: 'string', default: 'none,zstd' },
    runs: { type: 'string', default: '3' },
    profile: { type: 'string', default: 'mixed' },
    image: { type: 'string' },
    'qemu-binary': { type: 'string' },
    dir: { type: 'string', default: '/tmp' },
  },
});

const { start, sleep, waitFor, freePort, waitListening, cpuSec } = await import('../dist/proc/proc.js');
const { compareFiles } = await import('../dist/bench/files.js');
const { median, pairRatios } = await import('../dist/bench/stats.js');
const { enableMultifd, fileBackedRam, Qmp, qemu10Binary, qemuVersion, quitQemus, unthrottle } = await import('../dist/qemu/qmp.js');
const { parseSize } = await import('../dist/image/generate.js');

// Default: the QEMU 10.0 that .ci/fetch-qemu10 fetches ($MFD_QEMU10, or its cache folder).
const qemu = opt['qemu-binary'] ?? qemu10Binary();
const version = qemuVersion(qemu);
if (!version) {
  console.error(`qemu-peer: ${qemu} does not run (run .ci/fetch-qemu10, or name one with --qemu-binary)`);
  process.exit(2);
}
const size = opt.image ? fs.statSync(opt.image).size : parseSize(opt.size);
const channels = Number(opt.channels);
const methods = opt.compression.split(',');
const runs = Number(opt.runs);
const mfd = path.join(root, 'bin', 'mfd.js');
const work = fs.mkdtempSync(path.join(opt.dir, 'mfd-qemu-peer-'));
const signal = new AbortController().signal;
const GiB = 1024 ** 3;

/**
 * Samples a process's peak RSS (VmHWM) and CPU seconds from /proc every 50 ms until it exits: the
 * last sample before the exit (mfd's QEMU-mode summaries carry neither).
 */
function watch(pid) {
  const last = { rss: NaN, cpu: NaN };
  const take = () => {
    try {
      const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (hwm) last.rss = Number(hwm[1]) * 1024;
      const c = cpuSec(pid);
      if (Number.isFinite(c)) last.cpu = c;
    } catch {
      clearInterval(timer);
    }
  };
  const timer = setInterval(take, 50);
  return { stop: () => (take(), clearInterval(timer), last) };
}

/** A paused QEMU, `-M none`, RAM on `mem`, QMP on a socket in the work folder. */
async function qemuVm(name, mem, extra = []) {
  const sock = path.join(work, `${name}.qmp`);
  fs.rmSync(sock, { force: true });
  const proc = start(qemu, [
    '-display',
    'none',
    '-S',
    ...fileBackedRam('none', mem, size),
    ...extra,
    '-qmp',
    `unix:${sock},server=on,wait=off`,
  ]);
  const qmp = await Qmp.connect(sock, name, proc, signal);
  return { proc, qmp };
}

async function setUp(vm, method) {
  await enableMultifd(vm.qmp, { 'multifd-channels': channels, 'multifd-compression': method });
}

async function waitCompleted(qmp, what) {
  for (;;) {
    const s = await qmp.cmd('query-migrate');
    if (s.status === 'completed') return;
    if (s.status === 'failed') throw new Error(`${what}: migration failed: ${s['error-desc'] ?? ''}`);
    await sleep(5);
  }
}

/** A QEMU destination listening on a free port. */
async function qemuDestination(method, out) {
  const dst = await qemuVm('dst', out, ['-incoming', 'defer']);
  await setUp(dst, method);
  await dst.qmp.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
  const port = Number((await dst.qmp.cmd('query-migrate'))['socket-address']?.[0]?.port);
  return { dst, port };
}

/** The mfd process's peak RSS and CPU seconds once it exits 0 (its --json summary checked for "completed"). */
async function mfdRun(p, what) {
  const w = watch(p.pid);
  const ex = await waitFor(p, signal);
  const last = w.stop();
  if (ex.code !== 0) throw new Error(`${what} exited ${ex.code}: ${ex.stderr.slice(-600)}`);
  if (JSON.parse(ex.stdout).status !== 'completed') throw new Error(`${what}: ${ex.stdout.slice(0, 300)}`);
  return last;
}

async function qemuToQemu(method, image) {
  const out = path.join(work, 'qq.ram');
  fs.rmSync(out, { force: true });
  const { dst, port } = await qemuDestination(method, out);
  const src = await qemuVm('src', image);
  try {
    await setUp(src, method);
    await unthrottle(src.qmp);
    const t0 = performance.now();
    await src.qmp.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    await Promise.all([waitCompleted(src.qmp, 'source'), waitCompleted(dst.qmp, 'destination')]);
    const wall = (performance.now() - t0) / 1000;
    const cpu = { send: cpuSec(src.proc.pid), recv: cpuSec(dst.proc.pid) };
    await quitQemus([src.qmp, dst.qmp], [src.proc, dst.proc]);
    await compareFiles(image, out, `QEMU -> QEMU (${method})`);
    return { wall, cpu };
  } finally {
    await quitQemus([src.qmp, dst.qmp], [src.proc, dst.proc]);
    fs.rmSync(out, { force: true });
  }
}

async function qemuToMfd(method, image, capture) {
  fs.rmSync(capture, { recursive: true, force: true });
  fs.mkdirSync(capture);
  const port = await freePort();
  const recv = start('node', [mfd, 'recv', '--qemu', '--listen', `127.0.0.1:${port}`, '--output', capture, '--json', '--no-progress']);
  await waitListening(recv, port, 'mfd recv --qemu', signal);
  const src = await qemuVm('src', image);
  try {
    await setUp(src, method);
    await unthrottle(src.qmp);
    const t0 = performance.now();
    await src.qmp.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const [m] = await Promise.all([mfdRun(recv, 'mfd recv --qemu'), waitCompleted(src.qmp, 'source')]);
    const wall = (performance.now() - t0) / 1000;
    const cpu = { send: cpuSec(src.proc.pid), recv: m.cpu };
    await quitQemus([src.qmp], [src.proc]);
    const ram = JSON.parse(fs.readFileSync(path.join(capture, 'manifest.json'), 'utf8')).ramblocks[0];
    await compareFiles(image, path.join(capture, ram.file), `QEMU -> mfd recv --qemu (${method})`);
    return { wall, cpu, recvRss: m.rss };
  } finally {
    await quitQemus([src.qmp], [src.proc]);
  }
}

async function mfdToQemu(method, image, capture) {
  const out = path.join(work, 'mq.ram');
  fs.rmSync(out, { force: true });
  const { dst, port } = await qemuDestination(method, out);
  try {
    const t0 = performance.now();
    const send = start('node', [
      mfd,
      'send',
      '--qemu',
      '--to',
      `127.0.0.1:${port}`,
      capture,
      '--channels',
      String(channels),
      '--compression',
      method,
      '--json',
      '--no-progress',
    ]);
    const [m] = await Promise.all([mfdRun(send, 'mfd send --qemu'), waitCompleted(dst.qmp, 'destination')]);
    const wall = (performance.now() - t0) / 1000;
    const cpu = { send: m.cpu, recv: cpuSec(dst.proc.pid) };
    await quitQemus([dst.qmp], [dst.proc]);
    await compareFiles(image, out, `mfd send --qemu -> QEMU (${method})`);
    return { wall, cpu, sendRss: m.rss };
  } finally {
    await quitQemus([dst.qmp], [dst.proc]);
    fs.rmSync(out, { force: true });
  }
}

const image = opt.image ? path.resolve(opt.image) : path.join(work, 'image.ram');
if (!opt.image) {
  const gen = start('node', [mfd, 'gen-image', '--size', String(size), '--profile', opt.profile, image]);
  if ((await waitFor(gen, signal)).code !== 0) throw new Error('gen-image failed');
}
const capture = path.join(work, 'capture');
const rows = [];
const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '-');
try {
  for (const method of methods) {
    const r = { 'qemu->qemu': [], 'qemu->mfd': [], 'mfd->qemu': [] };
    // mfd->qemu replays qemu->mfd's capture, so within a round that pair keeps its order.
    const order = [
      ['qemu->qemu', () => qemuToQemu(method, image)],
      ['qemu->mfd', () => qemuToMfd(method, image, capture)],
      ['mfd->qemu', () => mfdToQemu(method, image, capture)],
    ];
    // A warm-up of mfd's pair (and the capture mfd->qemu replays), not measured.
    await qemuToMfd(method, image, capture);
    for (let i = 0; i < runs; i++) {
      const rot = i % 2 === 0 ? order : [order[1], order[2], order[0]];
      for (const [name, fn] of rot) {
        const s = await fn();
        r[name].push(s);
        process.stderr.write(`${method} round ${i + 1} ${name}: ${s.wall.toFixed(2)} s\n`);
      }
    }
    const walls = (k) => r[k].map((s) => s.wall);
    const row = {
      method,
      sizeBytes: size,
      channels,
      qemu: version,
      wallSec: Object.fromEntries(Object.keys(r).map((k) => [k, median(walls(k))])),
      ratioToQemu: {
        'qemu->mfd': pairRatios(walls('qemu->mfd'), walls('qemu->qemu')),
        'mfd->qemu': pairRatios(walls('mfd->qemu'), walls('qemu->qemu')),
      },
      cpuSecPerGiB: Object.fromEntries(
        Object.keys(r).map((k) => [
          k,
          { send: median(r[k].map((s) => s.cpu.send)) / (size / GiB), recv: median(r[k].map((s) => s.cpu.recv)) / (size / GiB) },
        ]),
      ),
      mfdPeakRssBytes: { recv: Math.max(...r['qemu->mfd'].map((s) => s.recvRss)), send: Math.max(...r['mfd->qemu'].map((s) => s.sendRss)) },
      runs,
    };
    rows.push(row);
    fs.mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
    fs.appendFileSync(
      path.join(root, 'bench', 'results', 'qemu-peer.jsonl'),
      JSON.stringify({ at: new Date().toISOString(), ...row }) + '\n',
    );
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}

console.log(
  `## mfd as a QEMU peer, against QEMU ${version} (${opt.image ?? `${opt.size}, ${opt.profile}`}, ${channels} channels, ${runs} rounds, medians)\n`,
);
console.log(
  '| method | QEMU -> QEMU | QEMU -> mfd recv --qemu | ratio | mfd send --qemu -> QEMU | ratio | mfd peak RSS recv / send | CPU-s/GiB send+recv: qemu->qemu, qemu->mfd, mfd->qemu |',
);
console.log('|---|---|---|---|---|---|---|---|');
for (const w of rows) {
  const c = (k) => `${fmt(w.cpuSecPerGiB[k].send)}+${fmt(w.cpuSecPerGiB[k].recv)}`;
  const ratio = (k) =>
    w.ratioToQemu[k] ? `${fmt(w.ratioToQemu[k].median)} (${fmt(w.ratioToQemu[k].min)}-${fmt(w.ratioToQemu[k].max)})` : '-';
  console.log(
    `| ${w.method} | ${fmt(w.wallSec['qemu->qemu'])} s | ${fmt(w.wallSec['qemu->mfd'])} s | ${ratio('qemu->mfd')} | ${fmt(w.wallSec['mfd->qemu'])} s | ${ratio('mfd->qemu')} | ` +
      `${fmt(w.mfdPeakRssBytes.recv / 2 ** 20, 0)} / ${fmt(w.mfdPeakRssBytes.send / 2 ** 20, 0)} MiB | ${c('qemu->qemu')}, ${c('qemu->mfd')}, ${c('mfd->qemu')} |`,
  );
}
console.log('\nratio: mfd pair / QEMU pair, per round (median, min-max); at most 1 means mfd is no slower than QEMU.');
