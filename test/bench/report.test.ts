/** The report: markdown tables and targets, JSON lines, and SVG charts checked as XML. */
import t from 'tap';
import { charts, formatTargetLine, jsonLine, markdownReport, type BenchMeta } from '../../src/bench/report.js';
import { computeTargets, summarizeCell, type CellSummary } from '../../src/bench/summary.js';
import { lineChart, niceTicks } from '../../src/bench/svg.js';
import type { Cell } from '../../src/bench/matrix.js';
import type { MfdSample } from '../../src/bench/runner.js';
import { findAll, parseXml, type XmlElement } from '../helpers/xml.js';
import { JSON_SCHEMA_VERSION, MFD_VERSION } from '../../src/version.js';

const meta = (over: Partial<BenchMeta> = {}): BenchMeta => ({
  date: '2025-01-02T03:04:05.678Z',
  mfdVersion: '0.1.0',
  host: { cpus: 2, model: 'Test CPU', memGiB: 24, kernel: '6.1', node: 'v20.0.0' },
  network: { kind: 'loopback', description: 'loopback' },
  matrix: { compression: ['none', 'zstd'], channels: [1, 4], zeroPageDetection: ['multifd'], profiles: ['mixed'], sizes: [2 ** 30] },
  runs: 3,
  warmup: 1,
  seed: 1,
  peers: [
    { name: 'iperf3', label: 'iperf3 3.12' },
    { name: 'qemu', label: 'QEMU 7.2.22 multifd' },
  ],
  skippedPeers: [{ name: 'nc', reason: 'nc is not installed' }],
  ...over,
});

const run = (wallSec: number, size = 2 ** 30, rssMiB = 100): MfdSample => ({
  wallSec,
  senderSec: wallSec,
  receiverSec: wallSec,
  imageBytes: size,
  wireBytes: size / 2,
  wireRatio: 0.5,
  sendCpuSec: 1.25,
  recvCpuSec: 1.5,
  sendRssBytes: rssMiB * 2 ** 20,
  recvRssBytes: 97 * 2 ** 20,
  linkBytes: null,
  compressionPath: 'p',
  zeroPagePath: 'z',
});

/** GB/s per (method, channels) chosen so the chart's points are known. */
const GBPS: Record<string, number> = { 'none/1': 1, 'none/4': 2, 'zstd/1': 0.25, 'zstd/4': 0.5 };

function cells(): CellSummary[] {
  const out: CellSummary[] = [];
  for (const compression of ['none', 'zstd']) {
    for (const channels of [1, 4]) {
      const cell: Cell = { compression, zeroPageDetection: 'multifd', channels, profile: 'mixed', sizeBytes: 2 ** 30 };
      const wall = 2 ** 30 / 1e9 / GBPS[`${compression}/${channels}`]!;
      out.push(
        summarizeCell({
          cell,
          runs: [run(wall), run(wall), run(wall)],
          peers: {
            qemu: { label: 'QEMU', samples: [{ wallSec: wall * 2 }, { wallSec: wall * 2 }, { wallSec: wall * 2 }] },
            iperf3: { label: 'iperf3', samples: [{ bytesPerSec: 4e9 }, { bytesPerSec: 4e9 }, { bytesPerSec: 4e9 }] },
          },
        }),
      );
    }
  }
  return out;
}

/** The markdown table rows (cells split) of the table under `heading`. */
function tableUnder(md: string, heading: string): string[][] {
  const lines = md.split('\n');
  const at = lines.findIndex((l) => l.startsWith('### ') && l.includes(heading));
  if (at < 0) return [];
  const rows: string[][] = [];
  for (const l of lines.slice(at + 2)) {
    if (!l.startsWith('|')) break;
    rows.push(
      l
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map((c) => c.trim()),
    );
  }
  return rows;
}

t.test('markdown: a row per cell with medians, peers pair by pair, targets with verdicts', async (t) => {
  const cs = cells();
  const md = markdownReport(meta(), cs, computeTargets(cs));
  t.match(md, /^## mfd bench, 2025-01-02 03:04:05 UTC/);
  t.match(md, /Machine: 2 x Test CPU, 24 GiB, Linux 6\.1, Node v20\.0\.0/);
  t.match(md, /Skipped: nc \(nc is not installed\)/);
  const mfd = tableUnder(md, 'mfd: median');
  t.same(mfd[0], ['method', 'ch', 'wall s', 'image GB/s', 'wire / image', 'CPU s send / recv', 'peak RSS MiB send / recv']);
  t.equal(mfd.length, 2 + 4, 'header, rule, four cells');
  const none4 = mfd.find((r) => r[0] === 'none' && r[1] === '4')!;
  t.equal(none4[2], '0.537 (0.537..0.537)');
  t.equal(none4[3], '2.00 (2.00..2.00)');
  t.equal(none4[5], '1.25 / 1.50');
  t.equal(none4[6], '100 / 97');
  const spread = tableUnder(md, 'Spread of the runs');
  t.same(spread[0], ['method', 'ch', 'wall', 'image GB/s', 'wire bytes', 'CPU send', 'CPU recv', 'RSS send', 'RSS recv']);
  t.same(spread.find((r) => r[0] === 'none' && r[1] === '4')!.slice(2), ['0%', '0%', '0%', '0%', '0%', '0%', '0%']);
  const varied = summarizeCell({
    cell: { compression: 'none', zeroPageDetection: 'multifd', channels: 1, profile: 'mixed', sizeBytes: 2 ** 30 },
    runs: [run(1, 2 ** 30, 100), run(2, 2 ** 30, 110), run(1.5, 2 ** 30, 90)],
    peers: {},
  });
  const vrow = tableUnder(markdownReport(meta(), [varied], []), 'Spread of the runs')[2]!;
  t.same([vrow[2], vrow[7]], ['67%', '20%'], 'wall (2 - 1) / 1.5; sender RSS (110 - 90) / 100');
  const peers = tableUnder(md, 'Against the peers');
  t.same(peers[0]!.slice(0, 4), ['method', 'ch', 'mfd / QEMU', 'mfd / floor']);
  t.equal(peers.find((r) => r[0] === 'zstd' && r[1] === '1')![2], '0.50');
  const targets = tableUnder(md, 'Targets');
  t.equal(targets.length, 2 + 6, 'three targets with a peer in the run, for each of two channel counts');
  t.same(targets.find((r) => r[0] === 'mfd / QEMU wall time, none' && r[1]!.startsWith('4 ch'))!.slice(2), ['0.50', '≤ 0.5', 'pass']);
  t.same(targets.find((r) => r[0] === 'mfd / QEMU wall time, zstd' && r[1]!.startsWith('1 ch'))!.slice(2), ['0.50', '≤ 0.6', 'pass']);
  const floor = targets.find((r) => r[0]!.startsWith('mfd / floor') && r[1]!.startsWith('1 ch'))!;
  t.equal(floor[4], 'miss', 'floor 0.134 s against 1.07 s');
  t.match(md, /Not measured: .*mfd zstd \/ `zstd -1 -T0 \| nc` wall time \(zstd-nc not in this run\)/);
  t.match(md, /Not measured: .*mfd \/ QEMU 10 wall time, none \(qemu10 not in this run\)/);
  t.notMatch(md, /CPU seconds per GiB/, 'no peer with CPU counts: no CPU table');
  t.match(md, /### Scaling with channels/);
  t.notMatch(md, /### Scaling with image size/, 'one size: no size scaling');
  t.notMatch(md, /Delay line/, 'no delay line: no line about it');
  const dir = { packets: 1000, bytes: 2 ** 30, dropped: 1, maxQueuedBytes: 0 };
  t.match(
    markdownReport(meta(), cs, [], { cpuSec: 1.234, forward: dir, back: { ...dir, bytes: 2 ** 20, dropped: 0 } }),
    /^Delay line: 2000 packets \(1 GiB\), 1 dropped, 1\.23 CPU s in the bench process, on the same CPUs as the runs\.$/m,
    "a delayed link's forwarder: what it did and cost",
  );
  t.match(formatTargetLine(computeTargets(cs)[0]!), /^mfd \/ QEMU wall time, none \[1 ch, mixed 1 GiB\]: 0\.50, target ≤ 0\.5: pass$/);
  const line = JSON.parse(jsonLine({ type: 'cell', ...cs[0]! }));
  t.same(Object.keys(line).slice(0, 3), ['mfd-version', 'schema-version', 'type'], 'the version first, then the type');
  t.same(line, { 'mfd-version': MFD_VERSION, 'schema-version': JSON_SCHEMA_VERSION, type: 'cell', ...JSON.parse(JSON.stringify(cs[0])) });
});

t.test('markdown: scaling with size says whether memory stays flat', async (t) => {
  const mk = (size: number, rss: number) =>
    summarizeCell({
      cell: { compression: 'none', zeroPageDetection: 'multifd', channels: 4, profile: 'mixed', sizeBytes: size },
      runs: [run(size / 1e9, size, rss)],
      peers: {},
    });
  const cs = [mk(2 ** 29, 100), mk(2 ** 30, 101), mk(2 ** 32, 104)];
  const md = markdownReport(meta({ peers: [], skippedPeers: [], runs: 1 }), cs, computeTargets(cs));
  t.match(md, /### Scaling with image size/);
  t.notMatch(md, /### Spread/, 'one run: no spread');
  t.match(
    md,
    /Not measured: mfd \/ QEMU wall time, none \(qemu not in this run\); .*\(iperf3 not in this run\)/,
    'targets of absent peers: one line',
  );
  t.notMatch(md, /\| target \| cell \|/);
  t.match(
    md,
    /512 MiB → 4 GiB: peak RSS send 100 → 104 MiB \(x1\.04\), recv 97 → 97 MiB \(x1\.00\): \*\*memory flat\*\*; time per GiB x1\.00/,
  );
  const ch = charts(meta(), cs);
  t.same(
    ch.map((c) => c.file),
    ['scaling.svg', 'memory.svg'],
    'one channel count: charts against size only',
  );
  const mem = parseXml(ch[1]!.svg);
  t.same(
    findAll(mem, (e) => e.name === 'g' && /^series /.test(e.attrs.class ?? '')).map((g) => `${g.attrs.class} ${g.attrs['data-name']}`),
    ['series send none 4 ch, sender', 'series recv none 4 ch, receiver'],
  );
  const sendLine = findAll(mem, (e) => e.name === 'polyline')[0]!;
  t.equal(sendLine.attrs.points!.split(' ').length, 3, 'a point per size');
  const both = charts(meta(), [...cs, ...cells()]);
  t.same(both.map((c) => c.file).slice(-2), ['scaling.svg', 'memory.svg']);
  t.ok(
    both.some((c) => c.file === 'throughput-mixed-1GiB.svg'),
    'channels and sizes vary: a throughput chart per image too',
  );
});

/** Maps a point's y back to a value through the y axis's tick labels. */
function yScale(svg: XmlElement): (y: number) => number {
  const ticks = findAll(svg, (e) => e.name === 'text' && e.parent?.attrs.class === 'y-axis' && /^[\d.]+$/.test(e.text)).map((e) => ({
    v: Number(e.text),
    y: Number(e.attrs.y),
  }));
  const lo = ticks[0]!;
  const hi = ticks[ticks.length - 1]!;
  return (y) => lo.v + ((y - lo.y) / (hi.y - lo.y)) * (hi.v - lo.v);
}

t.test('SVG: well-formed, one polyline per method through the expected points, QEMU dashed', async (t) => {
  const cs = cells();
  const [chart, ...more] = charts(meta(), cs);
  t.equal(more.length, 0, 'one image: one chart');
  t.equal(chart!.file, 'throughput.svg');
  const svg = parseXml(chart!.svg);
  t.equal(svg.name, 'svg');
  t.equal(svg.attrs.xmlns, 'http://www.w3.org/2000/svg');
  const methods = findAll(svg, (e) => e.name === 'g' && e.attrs.class === 'series method');
  t.same(
    methods.map((g) => g.attrs['data-name']),
    ['mfd none', 'mfd zstd'],
  );
  const toValue = yScale(svg);
  const xTicks = findAll(svg, (e) => e.name === 'text' && e.parent?.attrs.class === 'x-axis' && /^\d+$/.test(e.text)).map((e) => ({
    ch: Number(e.text),
    x: Number(e.attrs.x),
  }));
  t.same(
    xTicks.map((x) => x.ch),
    [1, 4],
  );
  for (const g of methods) {
    const lines = g.children.filter((c) => c.name === 'polyline');
    t.equal(lines.length, 1, `${g.attrs['data-name']}: one polyline`);
    const pts = lines[0]!.attrs.points!.split(' ').map((p) => p.split(',').map(Number) as [number, number]);
    t.equal(pts.length, 2);
    const method = g.attrs['data-name']!.replace('mfd ', '');
    pts.forEach(([x, y], i) => {
      t.equal(x, xTicks[i]!.x, 'at its channel tick');
      t.ok(Math.abs(toValue(y) - GBPS[`${method}/${xTicks[i]!.ch}`]!) < 0.005, `${method} at ${xTicks[i]!.ch} ch: ${toValue(y)}`);
    });
  }
  const qemu = findAll(svg, (e) => e.name === 'g' && e.attrs.class === 'series peer');
  t.same(
    qemu.map((g) => g.attrs['data-name']),
    ['QEMU none', 'QEMU zstd'],
  );
  t.ok(
    qemu.every((g) => g.children[0]?.attrs['stroke-dasharray']),
    'QEMU lines are dashed',
  );
  t.equal(qemu[0]!.children[0]!.attrs.stroke, methods[0]!.children[0]!.attrs.stroke, "in their method's colour");
  const legend = findAll(svg, (e) => e.name === 'text' && e.parent?.attrs.class === 'legend-item').map((e) => e.text);
  t.same(legend, ['mfd none', 'mfd zstd', 'QEMU none', 'QEMU zstd']);
});

t.test('SVG: text is escaped, references drawn, ticks are round', async (t) => {
  const svg = lineChart({
    title: 'a < b & "c"',
    xLabel: 'x',
    yLabel: 'y',
    xTicks: [{ value: 1, label: '1' }],
    series: [{ name: "it's <s>", points: [{ x: 1, y: 3 }] }],
    references: [{ name: 'raw nc', y: 1 }],
  });
  const root = parseXml(svg);
  t.equal(findAll(root, (e) => e.name === 'title')[0]!.text, 'a < b & "c"');
  t.equal(findAll(root, (e) => e.attrs.class === 'reference').length, 1);
  t.same(niceTicks(2), [0, 0.5, 1, 1.5, 2]);
  t.same(niceTicks(7.3), [0, 2, 4, 6, 8]);
  t.same(niceTicks(0.37), [0, 0.1, 0.2, 0.3, 0.4]);
  t.same(niceTicks(0), [0, 1]);
  t.throws(() => parseXml('<svg><g></svg>'), /closes/, 'the checker itself catches bad XML');
  t.throws(() => parseXml('<svg a="1 & 2"/>'), /bare &/);
});

t.test('markdown: CPU seconds per GiB, mfd beside the peers that count theirs', async (t) => {
  const cell: Cell = { compression: 'zstd', zeroPageDetection: 'multifd', channels: 4, profile: 'mixed', sizeBytes: 2 * 2 ** 30 };
  const c = summarizeCell({
    cell,
    runs: [run(2, 2 * 2 ** 30), run(2, 2 * 2 ** 30)],
    peers: {
      qemu10: {
        label: 'QEMU 10.0.2 multifd',
        samples: [
          { wallSec: 4, sendCpuSec: 5, recvCpuSec: 4 },
          { wallSec: 4, sendCpuSec: 7, recvCpuSec: 4 },
        ],
      },
      'zstd-floor': { label: 'zstd floor', samples: [{ wallSec: 1.5, sendCpuSec: 2.4, recvCpuSec: 0.6 }, null] },
      nc: { label: 'nc', samples: [{ wallSec: 3 }, { wallSec: 3 }] },
    },
  });
  const md = markdownReport(
    meta({
      peers: [
        { name: 'zstd-floor', label: 'zstd floor' },
        { name: 'qemu10', label: 'QEMU 10.0.2 multifd' },
        { name: 'nc', label: 'nc' },
      ],
    }),
    [c],
    computeTargets([c]),
  );
  const cpu = tableUnder(md, 'CPU seconds per GiB');
  t.same(cpu[0], ['method', 'ch', 'mfd', 'codec floor', 'QEMU 10'], 'peers without CPU counts (nc) have no column');
  t.same(cpu[2]!.slice(2), ['0.63 / 0.75', '1.20 / 0.30', '3.00 / 2.00'], 'per GiB of the 2 GiB image: medians / 2');
  const peers = tableUnder(md, 'Against the peers');
  t.same(peers[0]!.slice(2, 5), ['mfd / codec floor', 'mfd / QEMU 10', 'mfd / nc']);
  t.same(peers[2]!.slice(2, 5), ['1.33', '0.50', '0.67']);
  t.match(md, /The codec floor is no transfer/);
});
