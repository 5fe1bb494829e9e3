/**
 * The bench's report: a markdown document (tables, scaling, targets), the SVG charts, and the
 * JSON lines every run and cell summary is recorded as. Pure functions of the summaries.
 */
import { formatSize } from '../stats/stats.js';
import { deltaLabel, type Cell, type PeerName } from './matrix.js';
import { median, type Summary } from './stats.js';
import { sizeGrowth, TARGETS, type CellSummary, type Target } from './summary.js';
import { lineChart, type Reference, type Series } from './svg.js';
import type { DelayLineStats } from '../native/binding.js';
import type { MfdSample } from './runner.js';
import type { PeerSample } from './peers/index.js';
import { versioned } from '../version.js';

export interface BenchMeta {
  date: string;
  mfdVersion: string;
  host: { cpus: number; model: string; memGiB: number; kernel: string; node: string };
  network: { kind: 'loopback' | 'link'; description: string; rateBitsPerSec?: number; delayMs?: number };
  matrix: {
    compression: string[];
    channels: number[];
    zeroPageDetection: string[];
    profiles: string[];
    sizes: number[];
    images?: string[];
  };
  runs: number;
  warmup: number;
  seed: number;
  peers: { name: PeerName; label: string }[];
  skippedPeers: { name: PeerName; reason: string }[];
}

const TARGET_PEER = Object.fromEntries(TARGETS.map((d) => [d.id, d.peer])) as Record<Target['id'], PeerName | undefined>;

const PEER_TITLES: Record<PeerName, string> = {
  qemu: 'QEMU',
  qemu10: 'QEMU 10',
  'zstd-floor': 'codec floor',
  nc: 'nc',
  'zstd-nc': 'zstd-nc',
  iperf3: 'iperf3',
  rsync: 'rsync',
  'mfd-plain': 'plain mfd',
};

const f = (x: number | null | undefined, d = 3): string => (x === null || x === undefined || !Number.isFinite(x) ? '' : x.toFixed(d));
const med = (s: Summary | null | undefined, d = 3): string => f(s?.median, d);
const withSpread = (s: Summary, d = 3): string => (s.n > 1 ? `${f(s.median, d)} (${f(s.min, d)}..${f(s.max, d)})` : f(s.median, d));

function imageLabel(c: Cell): string {
  return `${c.profile} ${formatSize(c.sizeBytes)}`;
}

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** Which of a cell's dimensions vary across the matrix (constant ones go in the header, not the table). */
function varying(cells: readonly CellSummary[]): { zpd: boolean; image: boolean; delta: boolean } {
  const distinct = (f: (c: Cell) => string): number => new Set(cells.map((c) => f(c.cell))).size;
  return {
    zpd: distinct((c) => c.zeroPageDetection) > 1,
    image: distinct(imageLabel) > 1,
    delta: cells.some((c) => c.delta !== undefined),
  };
}

/** ", delta 10% changed" for a delta cell, "" for a whole-image cell. */
function deltaSuffix(c: Cell): string {
  const d = deltaLabel(c);
  return d === null ? '' : `, delta ${d}`;
}

function cellColumns(cells: readonly CellSummary[]): { head: string[]; row: (c: CellSummary) => string[] } {
  const v = varying(cells);
  const head = ['method', ...(v.zpd ? ['zero pages'] : []), 'ch', ...(v.image ? ['image'] : []), ...(v.delta ? ['delta'] : [])];
  const row = (c: CellSummary): string[] => [
    c.cell.compression,
    ...(v.zpd ? [c.cell.zeroPageDetection] : []),
    String(c.cell.channels),
    ...(v.image ? [imageLabel(c.cell)] : []),
    ...(v.delta ? [deltaLabel(c.cell) ?? '–'] : []),
  ];
  return { head, row };
}

function verdict(t: Target): string {
  return t.pass === null ? 'not measured' : t.pass ? 'pass' : 'miss';
}

export function formatTargetLine(t: Target): string {
  const c = t.cell;
  const where = `${c.channels} ch, ${c.zeroPageDetection === 'multifd' ? '' : `zero-page-detection ${c.zeroPageDetection}, `}${imageLabel(c)}${deltaSuffix(c)}`;
  const value = t.value === null ? `not measured (${t.why ?? 'no data'})` : t.value.toFixed(2);
  return `${t.label} [${where}]: ${value}, target ${t.op === '<=' ? '≤' : '<'} ${limitText(t.limit)}: ${verdict(t)}`;
}

/** 0.5, 1.1, 0.33 (a third). */
function limitText(limit: number): string {
  return String(Number(limit.toFixed(2)));
}

export function markdownReport(
  meta: BenchMeta,
  cells: readonly CellSummary[],
  targets: readonly Target[],
  delayLine?: DelayLineStats,
): string {
  const o: string[] = [];
  const runsNote = `${meta.runs} run${meta.runs === 1 ? '' : 's'} per cell after ${meta.warmup} warm-up${meta.warmup === 1 ? '' : 's'}`;
  o.push(`## mfd bench, ${meta.date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}`);
  o.push('');
  o.push(
    `Machine: ${meta.host.cpus} x ${meta.host.model}, ${meta.host.memGiB} GiB, Linux ${meta.host.kernel}, Node ${meta.host.node}, mfd ${meta.mfdVersion}. ` +
      `Network: ${meta.network.description}.`,
  );
  const m = meta.matrix;
  o.push(
    `Matrix: compression ${m.compression.join(',')} x channels ${m.channels.join(',')} x zero-page-detection ${m.zeroPageDetection.join(',')} x ` +
      [
        ...(m.profiles.length ? [`${m.profiles.join(',')} images of ${m.sizes.map(formatSize).join(', ')} (seed ${meta.seed})`] : []),
        ...(m.images?.length ? [`image files ${m.images.join(', ')}`] : []),
      ].join(' and ') +
      `; ${runsNote}.`,
  );
  o.push(
    `Peers: ${meta.peers.length ? meta.peers.map((p) => p.label).join('; ') : 'none'}` +
      (meta.skippedPeers.length ? `. Skipped: ${meta.skippedPeers.map((p) => `${p.name} (${p.reason})`).join('; ')}` : '') +
      '.',
  );
  o.push("Every output, mfd's and the peers' (iperf3 and the codec floor write none), was compared with its image byte for byte.");
  if (delayLine) o.push(delayLineLine(delayLine));
  o.push('');

  const cc = cellColumns(cells);
  o.push(`### mfd: median (min..max) of ${meta.runs} run${meta.runs === 1 ? '' : 's'}`);
  o.push('');
  o.push(
    table(
      [...cc.head, 'wall s', 'image GB/s', 'wire / image', 'CPU s send / recv', 'peak RSS MiB send / recv'],
      cells.map((c) => [
        ...cc.row(c),
        withSpread(c.wallSec),
        withSpread(c.imageGBps, 2),
        f(c.wireRatio.median, 3),
        `${med(c.sendCpuSec, 2)} / ${med(c.recvCpuSec, 2)}`,
        `${med(c.sendRssMiB, 0)} / ${med(c.recvRssMiB, 0)}`,
      ]),
    ),
  );
  o.push('');
  o.push("Wall time: from starting `mfd send` (the receiver already listening) to both processes' exit, verification included.");
  o.push('');
  if (meta.runs > 1) {
    const pct = (x: Summary): string => `${(x.relSpread * 100).toFixed(0)}%`;
    o.push('### Spread of the runs: (max − min) / median');
    o.push('');
    o.push(
      table(
        [...cc.head, 'wall', 'image GB/s', 'wire bytes', 'CPU send', 'CPU recv', 'RSS send', 'RSS recv'],
        cells.map((c) => [
          ...cc.row(c),
          pct(c.wallSec),
          pct(c.imageGBps),
          pct(c.wireBytes),
          pct(c.sendCpuSec),
          pct(c.recvCpuSec),
          pct(c.sendRssMiB),
          pct(c.recvRssMiB),
        ]),
      ),
    );
    o.push('');
  }

  const peerNames = meta.peers.map((p) => p.name);
  const wallPeers = peerNames.filter((n) => n !== 'iperf3');
  if (peerNames.length) {
    o.push('### Against the peers, pair by pair (median of mfd/peer over the runs; below 1 = mfd faster)');
    o.push('');
    const head = [
      ...cc.head,
      ...wallPeers.map((n) => `mfd / ${PEER_TITLES[n]}`),
      ...(peerNames.includes('iperf3') ? ['mfd / floor'] : []),
      ...wallPeers.map((n) => `${PEER_TITLES[n]} s`),
      ...(peerNames.includes('iperf3') ? ['iperf3 GB/s', 'floor s'] : []),
      ...(peerNames.includes('qemu') ? ['link bytes mfd / QEMU'] : []),
    ];
    const ratioCell = (c: CellSummary, n: PeerName): string => {
      const p = c.peers[n];
      if (p?.skipped) return '–';
      if (p?.failed && !c.ratios[n as 'qemu']) return 'failed';
      return med(c.ratios[n as Exclude<PeerName, 'iperf3'>], 2);
    };
    o.push(
      table(
        head,
        cells.map((c) => [
          ...cc.row(c),
          ...wallPeers.map((n) => ratioCell(c, n)),
          ...(peerNames.includes('iperf3') ? [med(c.ratios.floor, 2)] : []),
          ...wallPeers.map((n) => (c.peers[n]?.skipped ? '–' : med(c.peers[n]?.wallSec))),
          ...(peerNames.includes('iperf3') ? [med(c.peers.iperf3?.gbps, 2), med(c.floorSec)] : []),
          ...(peerNames.includes('qemu') ? [c.peers.qemu?.skipped ? '–' : med(c.linkBytesVsQemu, 3)] : []),
        ]),
      ),
    );
    o.push('');
    o.push(
      'Floor: the bytes mfd put on the wire at the rate iperf3 measured on the same link in the same run. ' +
        "QEMU is timed from `migrate` to both sides reporting completed (its start-up is outside its time, mfd's is inside). " +
        (peerNames.includes('zstd-floor')
          ? "The codec floor is no transfer: the `zstd` command's compress plus decompress CPU seconds over the cores. "
          : '') +
        (meta.network.kind === 'loopback' ? "Link bytes count the host's whole loopback traffic (other programs' too). " : '') +
        '–: the peer has nothing to compare in that cell (see the notes).',
    );
    o.push('');
  }

  // CPU seconds per GiB of image, each side: mfd's (its --json process counts) beside the peers that have them.
  const cpuPeers = wallPeers.filter((n) => cells.some((c) => c.peers[n]?.sendCpuSec || c.peers[n]?.recvCpuSec));
  if (cpuPeers.length) {
    o.push('### CPU seconds per GiB of image, send / recv (medians)');
    o.push('');
    const perGiB = (c: CellSummary, send: Summary | null | undefined, recv: Summary | null | undefined): string =>
      send && recv ? `${f(send.median / (c.cell.sizeBytes / 2 ** 30), 2)} / ${f(recv.median / (c.cell.sizeBytes / 2 ** 30), 2)}` : '–';
    o.push(
      table(
        [...cc.head, 'mfd', ...cpuPeers.map((n) => PEER_TITLES[n])],
        cells.map((c) => [
          ...cc.row(c),
          perGiB(c, c.sendCpuSec, c.recvCpuSec),
          ...cpuPeers.map((n) => perGiB(c, c.peers[n]?.sendCpuSec, c.peers[n]?.recvCpuSec)),
        ]),
      ),
    );
    o.push('');
    o.push(
      "QEMU's from /proc when both sides had completed (its start-up included); the codec floor's are the `zstd` command's " +
        'compression and decompression, one thread each.',
    );
    o.push('');
  }

  const deltaCells = cells.filter((c) => c.delta !== undefined);
  if (deltaCells.length) {
    o.push('### Delta transfer: bytes and time against plain mfd and rsync (medians; ratios pair by pair)');
    o.push('');
    const bytes = (s: Summary | null | undefined): string => (s ? String(Math.round(s.median)) : '');
    const peer = (c: CellSummary, n: PeerName, f: (p: NonNullable<CellSummary['peers'][PeerName]>) => string): string => {
      const p = c.peers[n];
      return !p ? 'not run' : p.skipped ? '–' : p.failed && !p.wallSec ? 'failed' : f(p);
    };
    o.push(
      table(
        [
          ...cc.head,
          'changed pages',
          'mfd wire bytes',
          'x changed',
          'plain bytes',
          'rsync bytes',
          'bytes mfd / plain',
          'bytes mfd / rsync',
          'mfd s',
          'plain s',
          'rsync s',
          'mfd / rsync',
          'pages: data / base / in-migration',
        ],
        deltaCells.map((c) => {
          const d = c.delta!;
          return [
            ...cc.row(c),
            String(d.changedPages),
            bytes(c.wireBytes),
            med(d.wireVsChanged, 2),
            peer(c, 'mfd-plain', (p) => bytes(p.wireBytes)),
            peer(c, 'rsync', (p) => bytes(p.wireBytes)),
            med(d.bytesVsPlain, 3),
            med(d.bytesVsRsync, 3),
            med(c.wallSec),
            peer(c, 'mfd-plain', (p) => med(p.wallSec)),
            peer(c, 'rsync', (p) => med(p.wallSec)),
            med(c.ratios.rsync, 2),
            [d.dataPages, d.basePages, d.migrationPages].map((x) => (x ? String(Math.round(x.median)) : '0')).join(' / '),
          ];
        }),
      ),
    );
    o.push('');
    o.push(
      "x changed: mfd's wire bytes over the changed pages' bytes (the pages that really had to travel). " +
        'rsync bytes: its own --stats (sent plus received); plain: mfd without --delta into the same earlier version. ' +
        'mfd runs recv --delta --in-place, plain mfd recv --in-place (both write the earlier version where it is, as rsync --inplace). ' +
        'Changed pages of a generated image are random bytes (incompressible).',
    );
    o.push('');
  }

  // What compression and zero-page detection buy: each cell against the plain cell (none, no detection) next to it.
  const plain = (c: Cell): CellSummary | undefined =>
    cells.find(
      (b) =>
        b.cell.compression === 'none' &&
        b.cell.zeroPageDetection === 'none' &&
        b.cell.channels === c.channels &&
        b.cell.profile === c.profile &&
        b.cell.sizeBytes === c.sizeBytes,
    );
  const bought = cells.filter((c) => plain(c.cell) && plain(c.cell) !== c);
  if (bought.length) {
    o.push('### What compression and zero-page detection buy (wall time of plain `none` without zero-page detection / this cell)');
    o.push('');
    const v = varying(cells);
    o.push(
      table(
        ['method', 'zero pages', 'ch', ...(v.image ? ['image'] : []), 'speed-up', 'wire / image'],
        bought.map((c) => [
          c.cell.compression,
          c.cell.zeroPageDetection,
          String(c.cell.channels),
          ...(v.image ? [imageLabel(c.cell)] : []),
          `${(plain(c.cell)!.wallSec.median / c.wallSec.median).toFixed(2)}x`,
          f(c.wireRatio.median, 3),
        ]),
      ),
    );
    o.push('');
  }

  const growth = sizeGrowth(cells);
  if (growth.length) {
    o.push('### Scaling with image size');
    o.push('');
    const bySize = [...cells].sort(
      (a, b) =>
        a.cell.compression.localeCompare(b.cell.compression) || a.cell.channels - b.cell.channels || a.cell.sizeBytes - b.cell.sizeBytes,
    );
    o.push(
      table(
        ['method', 'zero pages', 'ch', 'image', 'wall s', 's per GiB', 'image GB/s', 'peak RSS MiB send / recv'],
        bySize.map((c) => [
          c.cell.compression,
          c.cell.zeroPageDetection,
          String(c.cell.channels),
          imageLabel(c.cell),
          med(c.wallSec),
          f(c.wallSec.median / (c.cell.sizeBytes / 2 ** 30)),
          med(c.imageGBps, 2),
          `${med(c.sendRssMiB, 0)} / ${med(c.recvRssMiB, 0)}`,
        ]),
      ),
    );
    o.push('');
    for (const g of growth) {
      const c = g.from.cell;
      o.push(
        `- ${c.compression}, ${c.channels} ch, ${c.zeroPageDetection}: ${formatSize(c.sizeBytes)} → ${formatSize(g.to.cell.sizeBytes)}: ` +
          `peak RSS send ${med(g.from.sendRssMiB, 0)} → ${med(g.to.sendRssMiB, 0)} MiB (x${g.sendRss.toFixed(2)}), ` +
          `recv ${med(g.from.recvRssMiB, 0)} → ${med(g.to.recvRssMiB, 0)} MiB (x${g.recvRss.toFixed(2)}): **memory ${g.flat ? 'flat' : 'grows'}**; ` +
          `time per GiB x${g.timePerGiB.toFixed(2)}`,
      );
    }
    o.push('');
  }

  const channelCounts = [...new Set(cells.map((c) => c.cell.channels))].sort((a, b) => a - b);
  if (channelCounts.length > 1) {
    o.push('### Scaling with channels (image GB/s; peak RSS MiB send / recv)');
    o.push('');
    const groups = new Map<string, CellSummary[]>();
    for (const c of cells) {
      const k = `${c.cell.compression}|${c.cell.zeroPageDetection}|${imageLabel(c.cell)}`;
      groups.set(k, [...(groups.get(k) ?? []), c]);
    }
    const v = varying(cells);
    o.push(
      table(
        ['method', ...(v.zpd ? ['zero pages'] : []), ...(v.image ? ['image'] : []), ...channelCounts.map((n) => `${n} ch`)],
        [...groups.values()].map((g) => [
          g[0]!.cell.compression,
          ...(v.zpd ? [g[0]!.cell.zeroPageDetection] : []),
          ...(v.image ? [imageLabel(g[0]!.cell)] : []),
          ...channelCounts.map((n) => {
            const c = g.find((x) => x.cell.channels === n);
            return c ? `${med(c.imageGBps, 2)}; ${med(c.sendRssMiB, 0)} / ${med(c.recvRssMiB, 0)}` : '';
          }),
        ]),
      ),
    );
    o.push('');
  }

  // Targets whose peer took no part in the run say so once, not once per cell.
  const ran = new Set(meta.peers.map((p) => p.name));
  const peerRan = (t: Target): boolean => TARGET_PEER[t.id] === undefined || ran.has(TARGET_PEER[t.id]!);
  const shown = targets.filter(peerRan);
  const absent = [...new Set(targets.filter((t) => !peerRan(t)).map((t) => `${t.label} (${TARGET_PEER[t.id]} not in this run)`))];
  if (targets.length) {
    o.push('### Targets');
    o.push('');
    if (shown.length) {
      o.push(
        table(
          ['target', 'cell', 'measured', 'goal', 'verdict'],
          shown.map((t) => [
            t.label.replace(/\|/g, '\\|'),
            `${t.cell.channels} ch, ${t.cell.zeroPageDetection}, ${imageLabel(t.cell)}${deltaSuffix(t.cell)}`,
            t.value === null ? `(${(t.why ?? '').replace(/\|/g, '\\|')})` : t.value.toFixed(2),
            `${t.op === '<=' ? '≤' : '<'} ${limitText(t.limit)}`,
            verdict(t),
          ]),
        ),
      );
      o.push('');
    }
    if (absent.length) {
      o.push(`Not measured: ${absent.join('; ')}.`);
      o.push('');
    }
  }

  const notes: string[] = [];
  for (const c of cells) {
    for (const [n, p] of Object.entries(c.peers) as [PeerName, NonNullable<CellSummary['peers'][PeerName]>][]) {
      if (p.skipped) notes.push(`${c.key}: ${n} skipped: ${p.skipped}`);
      if (p.failed) notes.push(`${c.key}: ${n} failed: ${p.failed}`);
    }
  }
  const peerNotes = new Set(cells.flatMap((c) => Object.values(c.peers).flatMap((p) => (p?.note ? [p.note] : []))));
  for (const n of peerNotes) notes.push(n);
  const paths = new Set(
    cells.map(
      (c) =>
        `${c.cell.compression}: ${c.compressionPath}; zero pages: ${c.zeroPagePath}${c.imageAccess ? `; image access: ${c.imageAccess}` : ''}`,
    ),
  );
  if (notes.length || paths.size) {
    o.push('### Notes');
    o.push('');
    for (const n of notes) o.push(`- ${n}`);
    for (const p of paths) o.push(`- paths that ran: ${p}`);
    o.push('');
  }
  return o.join('\n');
}

export interface Chart {
  /** File name within the results directory. */
  file: string;
  svg: string;
}

/**
 * Image GB/s against channels, one line per method (per method and zero-page mode when several
 * modes ran), one chart per image; plus peak RSS against image size when several sizes ran.
 */
export function charts(meta: BenchMeta, cells: readonly CellSummary[]): Chart[] {
  const out: Chart[] = [];
  const zpds = new Set(cells.map((c) => c.cell.zeroPageDetection));
  const profiles = new Set(cells.map((c) => c.cell.profile));
  const channelSet = new Set(cells.map((c) => c.cell.channels));
  const sizes = [...new Set(cells.map((c) => c.cell.sizeBytes))].sort((a, b) => a - b);
  const net =
    meta.network.kind === 'loopback'
      ? 'loopback'
      : `shaped link ${meta.network.description.replace(/^\S+( pair)? between two network namespaces, /, '').replace(/ \(.*\)$/, '')}`;
  const runs = `median of ${meta.runs} run${meta.runs === 1 ? '' : 's'}`;
  const methodName = (c: Cell): string =>
    zpds.size > 1 && c.zeroPageDetection === 'none' ? `${c.compression}, no zero-page scan` : c.compression;
  const collect = (): {
    series: Map<string, Series>;
    add: (name: string, colorKey: string, style: Pick<Series, 'dashed' | 'kind'>, x: number, y: number | undefined) => void;
  } => {
    const series = new Map<string, Series>();
    return {
      series,
      add(name, colorKey, style, x, y) {
        if (y === undefined || !Number.isFinite(y)) return;
        const s = series.get(name) ?? { name, colorKey, points: [], ...style };
        s.points.push({ x, y });
        series.set(name, s);
      },
    };
  };

  // Throughput against channels, one chart per image (also when nothing varies: a point per method).
  if (channelSet.size > 1 || sizes.length === 1) {
    const images = [...new Set(cells.map((c) => imageLabel(c.cell)))];
    for (const img of images) {
      const group = cells.filter((c) => imageLabel(c.cell) === img);
      const imageBytes = group[0]!.cell.sizeBytes;
      const channels = [...new Set(group.map((c) => c.cell.channels))].sort((a, b) => a - b);
      const { series, add } = collect();
      for (const c of group) add(`mfd ${methodName(c.cell)}`, methodName(c.cell), {}, c.cell.channels, c.imageGBps.median);
      // QEMU's own multifd, same method and channels: dashed, in its method's colour.
      for (const c of group) {
        const q = c.peers.qemu?.wallSec?.median;
        add(
          `QEMU ${methodName(c.cell)}`,
          methodName(c.cell),
          { dashed: true, kind: 'peer' },
          c.cell.channels,
          q ? imageBytes / q / 1e9 : undefined,
        );
      }
      // Peers that do not depend on channels: one line each, at their median over the image's cells.
      const references: Reference[] = [];
      for (const [n, label] of [
        ['nc', 'raw nc'],
        ['zstd-nc', 'zstd -1 -T0 | nc'],
      ] as const) {
        const walls = group.map((c) => c.peers[n]?.wallSec?.median).filter((x): x is number => x !== undefined);
        if (walls.length) references.push({ name: label, y: imageBytes / median(walls) / 1e9 });
      }
      out.push({
        file:
          images.length > 1
            ? `throughput-${group[0]!.cell.profile.replace(':', '-')}-${formatSize(imageBytes).replace(' ', '')}.svg`
            : 'throughput.svg',
        svg: lineChart({
          title: `mfd throughput, ${img} image`,
          subtitle: `${net}; ${runs}; ${meta.date.slice(0, 10)}, ${meta.host.cpus} x ${meta.host.model}`,
          xLabel: 'channels',
          yLabel: 'image GB/s (wall time of the whole migration)',
          xTicks: channels.map((n) => ({ value: n, label: String(n) })),
          series: [...series.values()],
          references,
        }),
      });
    }
  }

  // Against image size: throughput, and peak memory (sender solid, receiver dashed), one line per method and channel count.
  if (sizes.length > 1) {
    const label = (c: Cell): string => `${methodName(c)} ${c.channels} ch${profiles.size > 1 ? ` ${c.profile}` : ''}`;
    const xTicks = sizes.map((s) => ({ value: s, label: formatSize(s) }));
    const speed = collect();
    const mem = collect();
    for (const c of cells) {
      speed.add(label(c.cell), label(c.cell), {}, c.cell.sizeBytes, c.imageGBps.median);
      mem.add(`${label(c.cell)}, sender`, label(c.cell), { kind: 'send' }, c.cell.sizeBytes, c.sendRssMiB.median);
      mem.add(`${label(c.cell)}, receiver`, label(c.cell), { dashed: true, kind: 'recv' }, c.cell.sizeBytes, c.recvRssMiB.median);
    }
    out.push({
      file: 'scaling.svg',
      svg: lineChart({
        title: 'mfd throughput against image size',
        subtitle: `${net}; ${runs}`,
        xLabel: 'image size',
        yLabel: 'image GB/s',
        xTicks,
        series: [...speed.series.values()],
      }),
    });
    out.push({
      file: 'memory.svg',
      svg: lineChart({
        title: 'mfd peak RSS against image size',
        subtitle: `${net}; ${runs}`,
        xLabel: 'image size',
        yLabel: 'peak RSS MiB',
        xTicks,
        series: [...mem.series.values()],
        width: 780,
      }),
    });
  }
  return out;
}

/** What the delay line did and cost, for the report and the progress lines. */
export function delayLineLine(d: DelayLineStats): string {
  const packets = d.forward.packets + d.back.packets;
  return (
    `Delay line: ${packets} packets (${formatSize(d.forward.bytes + d.back.bytes)}), ${d.forward.dropped + d.back.dropped} dropped, ` +
    `${d.cpuSec.toFixed(2)} CPU s in the bench process, on the same CPUs as the runs.`
  );
}

/** A line of results.jsonl (and of `mfd bench --json`), told apart by `type`. */
export type BenchLine =
  | ({ type: 'meta' } & BenchMeta)
  | { type: 'run'; cell: string; run: number; mfd: MfdSample; peers: Partial<Record<PeerName, PeerSample | null>> }
  | ({ type: 'cell' } & CellSummary)
  | { type: 'link'; delayLine: DelayLineStats }
  | ({ type: 'target' } & Target);

/** JSON lines: one object per line, mfd-version and schema-version first, then `type`. */
export function jsonLine(line: BenchLine): string {
  return JSON.stringify(versioned(line));
}
