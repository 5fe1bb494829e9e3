/**
 * `mfd bench` end to end with the real binary: a tiny matrix over loopback (and, when this machine
 * lets the test make network namespaces, over a shaped link), checking the files it writes.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from '../helpers/index.js';
import { findAll, parseXml } from '../helpers/xml.js';
import { ncUnavailable } from '../../src/bench/peers/nc.js';
import { leftoverLinks, netnsUnavailable } from '../helpers/netns.js';
import { QEMU10, QEMU72, QEMU_BUILDS } from '../helpers/qemu.js';
import { deltaUnavailable } from '../helpers/delta.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');

interface Ran {
  /** The child's pid: the bench names its namespaces and devices after it. */
  pid: number;
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI without blocking the event loop (tap's timeout keeps working). */
function mfd(args: string[], opts: { cmd?: string[] } = {}): Promise<Ran> {
  const [cmd, ...pre] = opts.cmd ?? [process.execPath];
  return new Promise((resolve) => {
    const p = spawn(cmd!, [...pre, bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ pid: p.pid!, status, stdout, stderr }));
  });
}

const stdoutLines = (text: string) =>
  text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown> & { type: string });
const lines = (file: string) => stdoutLines(fs.readFileSync(file, 'utf8'));

t.test('a tiny matrix over loopback: JSON lines, report and chart for every cell', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'results');
  const withNc = ncUnavailable() === null;
  const r = await mfd([
    'bench',
    '--size',
    '8M',
    '--compression',
    'none,zstd',
    '--channels',
    '1,2',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    withNc ? 'nc' : 'none',
    '--dir',
    dir,
    '--out',
    out,
  ]);
  t.equal(r.status, 0, r.stderr);
  t.same(fs.readdirSync(out).sort(), ['report.md', 'results.jsonl', 'throughput.svg']);
  t.same(fs.readdirSync(dir).sort(), ['results'], 'the work directory (image, outputs) is gone');

  const recs = lines(path.join(out, 'results.jsonl'));
  t.equal(recs[0]!.type, 'meta');
  t.match(recs[0], {
    network: { kind: 'loopback' },
    runs: 1,
    warmup: 0,
    matrix: { compression: ['none', 'zstd'], channels: [1, 2], sizes: [8 << 20] },
  });
  const keys = ['none/multifd/1ch/mixed/8MiB', 'none/multifd/2ch/mixed/8MiB', 'zstd/multifd/1ch/mixed/8MiB', 'zstd/multifd/2ch/mixed/8MiB'];
  const cells = recs.filter((l) => l.type === 'cell');
  t.same(
    cells.map((c) => c.key),
    keys,
  );
  const runs = recs.filter((l) => l.type === 'run');
  t.same(
    runs.map((x) => x.cell),
    keys,
    'one run line per cell',
  );
  for (const x of runs) {
    const m = x.mfd as Record<string, number>;
    t.equal(m.imageBytes, 8 << 20);
    t.ok(m.wallSec! > 0 && m.sendCpuSec! > 0 && m.recvRssBytes! > 0, `${String(x.cell)}: times, CPU and RSS recorded`);
    if (withNc) t.ok((x.peers as Record<string, { wallSec: number }>).nc!.wallSec > 0, 'nc measured');
    const access = (x.mfd as { imageAccess?: string }).imageAccess;
    if (String(x.cell).startsWith('none/'))
      t.match(access, /^(map|read) \(auto: /, `${String(x.cell)}: how the sender got the pages, and why`);
    else t.equal(access, undefined, `${String(x.cell)}: a compressing method's workers read; no image access to report`);
  }
  t.ok(
    recs.some((l) => l.type === 'target' && l.id === 'qemu-none'),
    'targets recorded (QEMU not run here: not measured)',
  );

  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  t.equal(r.stdout.trim(), md.trim(), 'the report is also on stdout');
  for (const [m, ch] of [
    ['none', 1],
    ['none', 2],
    ['zstd', 1],
    ['zstd', 2],
  ])
    t.match(md, new RegExp(`^\\| ${m} \\| ${ch} \\| `, 'm'), `a row for ${m} ${ch} ch`);
  t.match(md, /### Targets/);
  t.match(
    md,
    /^- paths that ran: none: no compression; zero pages: [^\n]*; image access: (map|read)$/m,
    "the notes say none's image access",
  );
  if (withNc) t.match(md, /mfd \/ nc/);

  const svg = parseXml(fs.readFileSync(path.join(out, 'throughput.svg'), 'utf8'));
  const series = findAll(svg, (e) => e.name === 'g' && e.attrs.class === 'series method');
  t.same(
    series.map((g) => g.attrs['data-name']),
    ['mfd none', 'mfd zstd'],
  );
  for (const g of series)
    t.equal(g.children.find((c) => c.name === 'polyline')?.attrs.points?.split(' ').length, 2, 'a point per channel count');

  t.match(r.stderr, /\[1\/4 none 1ch mixed 8 MiB\] run 1\/1: mfd [\d.]+ s/, 'progress on stderr');
  t.match(r.stderr, /target: mfd \/ QEMU wall time, none \[1 ch, mixed 8 MiB\]: not measured/);
});

/** One run of one 4 MiB cell on 2 channels, no warm-up, results in `out`: the QEMU peers' tests. */
const quickBench = (dir: string, out: string, args: string[]): Promise<Ran> =>
  mfd(['bench', '--size', '4M', '--channels', '2', '--runs', '1', '--warmup', '0', '--dir', dir, '--out', out, '--no-progress', ...args]);

for (const b of QEMU_BUILDS) {
  t.test(`--peers qemu --qemu-binary: QEMU ${b.series} measured, its version in the report`, { skip: b.missing }, async (t) => {
    const dir = tmpdir(t);
    const out = path.join(dir, 'o');
    const r = await quickBench(dir, out, ['--compression', 'zstd', '--peers', 'qemu', '--qemu-binary', b.binary]);
    t.equal(r.status, 0, r.stderr);
    const recs = lines(path.join(out, 'results.jsonl'));
    const label = `QEMU ${b.version} multifd`;
    t.match(
      (recs[0]!.peers as { name: string; label: string }[]).find((p) => p.name === 'qemu')?.label,
      label,
      'the meta line names the version run',
    );
    const run = recs.find((l) => l.type === 'run')!;
    t.ok((run.peers as Record<string, { wallSec: number }>).qemu!.wallSec > 0, 'QEMU measured');
    t.ok(fs.readFileSync(path.join(out, 'report.md'), 'utf8').includes(label), 'the report names it');
  });
}

t.test(
  "QEMU 7.2 and 10.0 in one run (--peers qemu,qemu10): each pair by pair with mfd, their CPU seconds per GiB beside mfd's",
  { skip: QEMU72.missing || QEMU10.missing },
  async (t) => {
    const dir = tmpdir(t);
    const out = path.join(dir, 'o');
    const r = await quickBench(dir, out, ['--compression', 'none', '--peers', 'qemu,qemu10', '--qemu10-binary', QEMU10.binary]);
    t.equal(r.status, 0, r.stderr);
    const recs = lines(path.join(out, 'results.jsonl'));
    const labels = Object.fromEntries((recs[0]!.peers as { name: string; label: string }[]).map((p) => [p.name, p.label]));
    t.match(labels, {
      qemu: `QEMU ${QEMU72.version} multifd`,
      qemu10: new RegExp(`^QEMU ${QEMU10.version!.replace(/\./g, '\\.')} multifd`),
    });
    const run = recs.find((l) => l.type === 'run')!.peers as Record<string, { wallSec: number; sendCpuSec: number; recvCpuSec: number }>;
    for (const n of ['qemu', 'qemu10']) {
      t.ok(run[n]!.wallSec > 0, `${n} measured`);
      t.ok(run[n]!.sendCpuSec > 0 && run[n]!.recvCpuSec > 0, `${n}: both QEMUs' CPU seconds`);
    }
    const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
    t.match(md, /\| mfd \/ QEMU \| mfd \/ QEMU 10 \|/, 'a ratio column for each');
    t.match(md, /### CPU seconds per GiB of image, send \/ recv/);
    t.match(md, /mfd \/ QEMU 10 wall time, none/, "issue 15's target against QEMU 10");
  },
);

t.test('--qemu-binary that does not run: the qemu peer is unavailable, saying why', async (t) => {
  const dir = tmpdir(t);
  const r = await mfd([
    'bench',
    '--size',
    '4M',
    '--compression',
    'none',
    '--channels',
    '1',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    'qemu',
    '--qemu-binary',
    path.join(dir, 'no-qemu'),
    '--dir',
    dir,
    '--out',
    path.join(dir, 'o'),
  ]);
  t.equal(r.status, 2);
  t.match(r.stderr, /--peers qemu: --qemu-binary .*no-qemu does not run or prints no version/);
});

t.test('--json: the JSON lines on stdout', async (t) => {
  const dir = tmpdir(t);
  const r = await mfd([
    'bench',
    '--size',
    '4M',
    '--compression',
    'none',
    '--channels',
    '1',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    'none',
    '--dir',
    dir,
    '--out',
    path.join(dir, 'o'),
    '--json',
    '--no-progress',
  ]);
  t.equal(r.status, 0, r.stderr);
  const recs = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string });
  t.same([...new Set(recs.map((x) => x.type))], ['meta', 'run', 'cell', 'target']);
  t.notMatch(r.stderr, /run 1\/1/, '--no-progress');
});

t.test("--image: a user's image file is migrated as it is, a row of its own, and left untouched", async (t) => {
  const dir = tmpdir(t);
  const img = path.join(dir, 'guest.img');
  // Not a generated profile: bytes of its own, half of them zero pages.
  const bytes = Buffer.alloc(2 << 20);
  for (let i = 0; i < bytes.length / 2; i++) bytes[i] = (i * 131 + (i >> 12)) & 0xff;
  fs.writeFileSync(img, bytes);
  const before = fs.statSync(img);
  const out = path.join(dir, 'o');
  const r = await mfd([
    'bench',
    '--image',
    img,
    '--compression',
    'none,zstd',
    '--channels',
    '2',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    'none',
    '--dir',
    dir,
    '--out',
    out,
    '--json',
    '--no-progress',
  ]);
  t.equal(r.status, 0, r.stderr);
  const recs = stdoutLines(r.stdout);
  t.match(recs[0], { type: 'meta', matrix: { profiles: [], images: [img] } }, 'only the image, no generated one without --profile');
  const cells = recs.filter((x) => x.type === 'cell') as unknown as { cell: { profile: string; sizeBytes: number; image: string } }[];
  t.same(
    cells.map((c) => [c.cell.profile, c.cell.sizeBytes, c.cell.image]),
    [
      ['image:guest', 2 << 20, img],
      ['image:guest', 2 << 20, img],
    ],
    'a row per method, named after the file',
  );
  t.ok(fs.readFileSync(img).equals(bytes) && fs.statSync(img).mtimeMs === before.mtimeMs, 'the image is unchanged');
  const both = await mfd([
    'bench',
    '--image',
    img,
    '--profile',
    'zero',
    '--size',
    '1M',
    '--compression',
    'none',
    '--channels',
    '1',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    'none',
    '--dir',
    dir,
    '--out',
    path.join(dir, 'o2'),
    '--json',
    '--no-progress',
  ]);
  t.equal(both.status, 0, both.stderr);
  t.same(
    stdoutLines(both.stdout)
      .filter((x) => x.type === 'cell')
      .map((x) => (x as unknown as { cell: { profile: string } }).cell.profile),
    ['zero', 'image:guest'],
    'with --profile, generated images too',
  );
  t.ok(fs.existsSync(img), 'still there after the bench cleaned up');
});

t.test("help: bench is listed, with its flags in QEMU's vocabulary", async (t) => {
  t.match((await mfd(['--help'])).stdout, /bench \[options\] +measure migrations/);
  const h = await mfd(['bench', '--help']);
  t.equal(h.status, 0);
  for (const flag of [
    '--compression <list>',
    '--channels <list>',
    '--zero-page-detection <list>',
    '--link <rate[,delay]>',
    '--peers <list>',
  ])
    t.ok(h.stdout.includes(flag), flag);
});

t.test(
  '--changed and --base: delta cells against plain mfd and rsync, with the bytes that really changed',
  { skip: deltaUnavailable },
  async (t) => {
    const dir = tmpdir(t);
    // A user's pair: B is A with 5 pages changed (A: 1 MiB of distinct pages, every 4th zero).
    const a = path.join(dir, 'A.img');
    const b = path.join(dir, 'B.img');
    const bytes = Buffer.alloc(1 << 20);
    for (let p = 0; p < 256; p++) if (p % 4) bytes.fill((p * 7 + 1) & 0xff, p * 4096, p * 4096 + 4096).writeUInt32LE(p, p * 4096);
    fs.writeFileSync(a, bytes);
    for (const p of [3, 50, 51, 120, 255]) bytes.writeUInt32LE(0xdeadbeef, p * 4096 + 8);
    fs.writeFileSync(b, bytes);
    // And C: B with 2 more pages changed, a second pair (C against A, 7 pages: a base serves two pairs) after the first.
    const c = path.join(dir, 'C.img');
    for (const p of [7, 200]) bytes.writeUInt32LE(0xfeedface, p * 4096 + 16);
    fs.writeFileSync(c, bytes);
    const rsync = spawnSync('rsync', ['--version']).status === 0;
    const out = path.join(dir, 'o');
    const r = await mfd([
      'bench',
      '--profile',
      'mixed',
      '--size',
      '4M',
      '--changed',
      '10',
      '--image',
      `${b},${c}`,
      '--base',
      `${a},${a}`,
      '--compression',
      'none',
      '--channels',
      '2',
      '--runs',
      '1',
      '--warmup',
      '0',
      '--peers',
      rsync ? 'mfd-plain,rsync' : 'mfd-plain',
      '--dir',
      dir,
      '--out',
      out,
      '--json',
      '--no-progress',
    ]);
    t.equal(r.status, 0, r.stderr);
    const recs = stdoutLines(r.stdout);
    type DeltaCell = {
      key: string;
      cell: { changed?: number; base?: string };
      wireBytes: { median: number };
      delta: { changedPages: number; wireVsChanged: { median: number } | null; basePages: { median: number } };
      peers: Record<string, { wireBytes: { median: number } | null }>;
    };
    const cells = recs.filter((x) => x.type === 'cell') as unknown as DeltaCell[];
    t.same(
      cells.map((c) => [c.cell.changed, c.cell.base]),
      [
        [10, undefined],
        [undefined, a],
        [undefined, a],
      ],
      'a delta cell for the generated image, 10% changed, and one for each pair',
    );
    t.match(cells[0]!.key, /delta-10%$/);
    const [gen, pair, second] = cells as [DeltaCell, DeltaCell, DeltaCell];
    t.ok(gen.delta.changedPages > 0 && gen.delta.changedPages < 1024 * 0.2, `about 10% of 1024 pages changed: ${gen.delta.changedPages}`);
    t.equal(pair.delta.changedPages, 5, "the pair's changed pages, counted by comparing the files");
    t.equal(second.delta.changedPages, 7, `the second pair's, against the same base: ${second.delta.changedPages}`);
    for (const c of cells) {
      t.ok(c.delta.basePages.median > 0, `${c.key}: pages went as references`);
      t.ok(c.peers['mfd-plain']!.wireBytes!.median > 4 * c.wireBytes.median, `${c.key}: plain mfd sent more than 4x the bytes`);
      if (rsync) t.ok(c.peers.rsync!.wireBytes!.median > 0, `${c.key}: rsync's own byte count`);
    }
    const ids = recs.filter((x) => x.type === 'target').map((x) => x.id);
    t.ok(ids.includes('delta-bytes') && ids.includes('delta-vs-plain'), 'the delta targets are computed');
    t.notOk(ids.includes('qemu-none'), 'whole-image targets are not computed on delta cells');
    const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
    t.match(md, /### Delta transfer: bytes and time against plain mfd and rsync/);
    t.match(md, /\| none \| 2 \| mixed 4 MiB \| 10% changed \| \d+ \|/);
    t.match(md, /mfd runs recv --delta --in-place, plain mfd recv --in-place/, 'the report says how each wrote the earlier version');
    // A user's images are only read: B, the first pair's image, once removed itself when the next pair began.
    for (const f of [a, b, c]) t.equal(fs.statSync(f, { throwIfNoEntry: false })?.size, 1 << 20, `${path.basename(f)} is left as it was`);
  },
);

t.test('bad options exit 2 and say what is expected', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--compression', 'gzip'], /Expected --compression values from none, .* but received "gzip"/],
    [['--link', '1gbps'], /Expected a rate like 100mbit, 1gbit or 2\.5gbit for --link but received "1gbps"/],
    [['--size', '1000'], /whole 4 KiB pages/],
    [['--peers', 'scp'], /Expected --peers values from iperf3, nc, zstd-nc, zstd-floor, qemu, qemu10/],
    [['--channels', '1,1'], /--channels lists "1" twice/],
    [['--peers', 'nc', '--qemu-binary', '/usr/bin/true'], /--qemu-binary is for the qemu peer, which --peers nc leaves out/],
    [['--peers', 'qemu', '--qemu10-binary', '/usr/bin/true'], /--qemu10-binary is for the qemu10 peer, which --peers qemu leaves out/],
    [['--image', '/nonexistent/guest.img'], /--image "\/nonexistent\/guest\.img" does not exist/],
    [['--image', '/tmp'], /--image "\/tmp" is not a regular file/],
    [['--image', '/etc/hostname'], /--image "\/etc\/hostname" is \d+ bytes: expected a whole number of 4 KiB pages/],
    [['--base', '/etc/hostname'], /--base names the earlier versions of --image files: give --image too/],
    [['--image', '/etc/hostname,/etc/passwd', '--base', '/etc/hostname'], /--base lists 1 file\(s\), --image 2/],
    [['--changed', '101'], /Expected integers in 0\.\.100 for --changed but received "101"/],
  ];
  for (const [args, msg] of cases) {
    const r = await mfd(['bench', ...args]);
    t.equal(r.status, 2, args.join(' '));
    t.match(r.stderr, msg);
  }
});

t.test('--link without root says it needs root', async (t) => {
  const setpriv = spawnSync('sh', ['-c', 'command -v setpriv']).status === 0;
  const asRoot = process.getuid?.() === 0;
  if (asRoot && !setpriv) return void t.skip('root, and no setpriv to drop it', () => {});
  const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath];
  if (asRoot && (await mfd(['--version'], { cmd: nobody })).status !== 0)
    return void t.skip('user nobody cannot run this checkout (its directory is private)', () => {});
  const r = await mfd(['bench', '--link', '1gbit,1ms', '--size', '4M'], asRoot ? { cmd: nobody } : {});
  t.equal(r.status, 2);
  t.match(r.stderr, /--link needs root: it creates two network namespaces, a veth pair or TUN devices, and tc qdiscs/);
});

t.test('a shaped link between two network namespaces', async (t) => {
  const why = netnsUnavailable();
  if (why) return void t.skip(`network namespaces unavailable here: ${why}`, () => {});
  const dir = tmpdir(t);
  const out = path.join(dir, 'o');
  const r = await mfd([
    'bench',
    '--link',
    '400mbit',
    '--size',
    '8M',
    '--compression',
    'none',
    '--channels',
    '2',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    'none',
    '--dir',
    dir,
    '--out',
    out,
    '--json',
  ]);
  if (r.status === 2 && /no tbf qdisc/.test(r.stderr)) return void t.skip(`this kernel cannot shape: ${r.stderr.trim()}`, () => {});
  t.equal(r.status, 0, r.stderr);
  const recs = stdoutLines(r.stdout);
  t.match(recs[0], {
    type: 'meta',
    network: { kind: 'link', rateBitsPerSec: 4e8, delayMs: 0, description: /400 mbit\/s, no added delay \(tc tbf\)/ },
  });
  const run = recs.find((l) => l.type === 'run') as unknown as { mfd: { linkBytes: number; wireBytes: number } };
  t.ok(run.mfd.linkBytes >= run.mfd.wireBytes, "the veth's own counter saw at least mfd's wire bytes");
  t.ok(run.mfd.linkBytes < run.mfd.wireBytes * 1.2, 'and only this run (a private link): headers and ACKs add a little');
  t.equal(leftoverLinks(r.pid), '', 'namespaces removed');

  // With a delay: TUN devices and the delay line (no netem needed), the output verified all the same.
  if (!fs.existsSync('/dev/net/tun')) return void t.skip('no /dev/net/tun here: the delay line needs TUN devices', () => {});
  const d = await mfd([
    'bench',
    '--link',
    '400mbit,2ms',
    '--size',
    '8M',
    '--compression',
    'none',
    '--channels',
    '2',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    'none',
    '--dir',
    dir,
    '--out',
    path.join(dir, 'd'),
    '--json',
  ]);
  t.equal(d.status, 0, d.stderr);
  const drecs = stdoutLines(d.stdout);
  t.match(drecs[0], {
    type: 'meta',
    network: {
      kind: 'link',
      rateBitsPerSec: 4e8,
      delayMs: 2,
      description: /TUN pair .*400 mbit\/s, 2 ms delay each way .*tc tbf for the rate \+ mfd delay line for the delay, no netem/,
    },
  });
  const drun = drecs.find((l) => l.type === 'run') as unknown as { mfd: { linkBytes: number; wireBytes: number; imageBytes: number } };
  t.equal(drun.mfd.imageBytes, 8 << 20, 'the run completed (and the bench compared its output with the image)');
  t.ok(drun.mfd.linkBytes >= drun.mfd.wireBytes, "the receiving TUN device saw at least mfd's wire bytes");
  const dl = drecs.find((l) => l.type === 'link') as unknown as {
    delayLine: { cpuSec: number; forward: { bytes: number; dropped: number } };
  };
  t.ok(dl.delayLine.forward.bytes >= drun.mfd.wireBytes, 'the delay line forwarded them');
  t.equal(dl.delayLine.forward.dropped, 0, 'and dropped none');
  t.match(d.stderr, /Delay line: \d+ packets .*, 0 dropped, [\d.]+ CPU s in the bench process/);
  t.equal(leftoverLinks(d.pid), '', 'namespaces and TUN devices removed');
});
