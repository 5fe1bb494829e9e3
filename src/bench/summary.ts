/**
 * From a cell's raw runs to what the report prints: medians and spreads of mfd's measures, the
 * peers' medians, mfd/peer ratios taken pair by pair, the floor set by the link's limit, and the
 * targets with pass/miss. Pure: the tests feed it made-up runs.
 */
import { cellKey, type Cell, type PeerName } from './matrix.js';
import type { PeerSample } from './peers/peer.js';
import type { MfdSample } from './runner.js';
import { pairRatios, summarize, type Summary } from './stats.js';

export interface PeerRecord {
  label: string;
  /** Indexed by run: null where that run of the peer failed. */
  samples: (PeerSample | null)[];
  /** The peer has nothing to compare in this cell (and why). */
  skipped?: string;
  /** The first failure, when a run of the peer failed. */
  failed?: string;
  note?: string;
}

export interface CellRecord {
  cell: Cell;
  /** mfd's measured runs (warm-ups excluded), in order. */
  runs: MfdSample[];
  peers: Partial<Record<PeerName, PeerRecord>>;
  /** A delta cell: the image's pages that differ from its earlier version (what really has to travel). */
  changedPages?: number;
}

export interface PeerSummary {
  label: string;
  wallSec: Summary | null;
  /** iperf3: GB/s (decimal) the link carried. */
  gbps: Summary | null;
  linkBytes: Summary | null;
  /** Bytes the peer says it moved (rsync, plain mfd). */
  wireBytes: Summary | null;
  /** CPU seconds of its sending and receiving side, where it has them (QEMU). */
  sendCpuSec: Summary | null;
  recvCpuSec: Summary | null;
  skipped?: string;
  failed?: string;
  note?: string;
}

export interface CellSummary {
  key: string;
  cell: Cell;
  runs: number;
  wallSec: Summary;
  /** Image bytes per wall second, in GB/s (decimal). */
  imageGBps: Summary;
  wireBytes: Summary;
  wireRatio: Summary;
  sendCpuSec: Summary;
  recvCpuSec: Summary;
  sendRssMiB: Summary;
  recvRssMiB: Summary;
  linkBytes: Summary | null;
  compressionPath: string;
  zeroPagePath: string;
  /** How the sender got the pages, over the runs: "map", "read", or "map in 2 of 3 runs, read in 1"; '' when no run says. */
  imageAccess: string;
  peers: Partial<Record<PeerName, PeerSummary>>;
  /** mfd wall / peer wall, pair by pair. `floor`: mfd wall / (mfd wire bytes / iperf3 rate). */
  ratios: {
    qemu: Summary | null;
    qemu10: Summary | null;
    'zstd-floor': Summary | null;
    nc: Summary | null;
    'zstd-nc': Summary | null;
    rsync: Summary | null;
    'mfd-plain': Summary | null;
    floor: Summary | null;
  };
  /** The floor itself: the bytes mfd put on the wire at the link's measured rate, in seconds. */
  floorSec: Summary | null;
  /** Bytes the receiving interface saw, mfd / QEMU, pair by pair. */
  linkBytesVsQemu: Summary | null;
  /** A delta cell: what changed, and how the pages travelled (medians of the runs). */
  delta?: {
    changedPages: number;
    /** mfd's wire bytes / the changed pages' bytes (null when nothing changed). */
    wireVsChanged: Summary | null;
    dataPages: Summary | null;
    basePages: Summary | null;
    migrationPages: Summary | null;
    /** mfd's wire bytes / the peer's own count, pair by pair. */
    bytesVsRsync: Summary | null;
    bytesVsPlain: Summary | null;
  };
}

const MiB = 2 ** 20;
/** The bench's images are in 4 KiB pages. */
const PAGE = 4096;

function must(s: Summary | null, what: string): Summary {
  if (!s) throw new RangeError(`no runs to summarize (${what})`);
  return s;
}

export function summarizeCell(r: CellRecord): CellSummary {
  const runs = r.runs;
  const col = (f: (s: MfdSample) => number | null): (number | null)[] => runs.map(f);
  const wall = col((s) => s.wallSec);
  const peers: Partial<Record<PeerName, PeerSummary>> = {};
  for (const [name, p] of Object.entries(r.peers) as [PeerName, PeerRecord][]) {
    peers[name] = {
      label: p.label,
      wallSec: summarize(p.samples.map((s) => s?.wallSec)),
      gbps: summarize(p.samples.map((s) => (s?.bytesPerSec === undefined ? null : s.bytesPerSec / 1e9))),
      linkBytes: summarize(p.samples.map((s) => s?.linkBytes)),
      wireBytes: summarize(p.samples.map((s) => s?.wireBytes)),
      sendCpuSec: summarize(p.samples.map((s) => s?.sendCpuSec)),
      recvCpuSec: summarize(p.samples.map((s) => s?.recvCpuSec)),
      ...(p.skipped !== undefined ? { skipped: p.skipped } : {}),
      ...(p.failed !== undefined ? { failed: p.failed } : {}),
      ...(p.note !== undefined ? { note: p.note } : {}),
    };
  }
  const peerWall = (n: PeerName): (number | null | undefined)[] => r.peers[n]?.samples.map((s) => s?.wallSec) ?? [];
  const floors = runs.map((s, i) => {
    const rate = r.peers.iperf3?.samples[i]?.bytesPerSec;
    return rate ? s.wireBytes / rate : null;
  });
  return {
    key: cellKey(r.cell),
    cell: r.cell,
    runs: runs.length,
    wallSec: must(summarize(wall), 'wall'),
    imageGBps: must(summarize(runs.map((s) => s.imageBytes / s.wallSec / 1e9)), 'GB/s'),
    wireBytes: must(summarize(col((s) => s.wireBytes)), 'wire'),
    wireRatio: must(summarize(col((s) => s.wireRatio)), 'wire ratio'),
    sendCpuSec: must(summarize(col((s) => s.sendCpuSec)), 'cpu'),
    recvCpuSec: must(summarize(col((s) => s.recvCpuSec)), 'cpu'),
    sendRssMiB: must(summarize(col((s) => s.sendRssBytes / MiB)), 'rss'),
    recvRssMiB: must(summarize(col((s) => s.recvRssBytes / MiB)), 'rss'),
    linkBytes: summarize(col((s) => s.linkBytes)),
    compressionPath: runs[0]?.compressionPath ?? '',
    zeroPagePath: runs[0]?.zeroPagePath ?? '',
    imageAccess: accessOver(runs.map((r) => r.imageAccess)),
    peers,
    ratios: {
      qemu: pairRatios(wall, peerWall('qemu')),
      qemu10: pairRatios(wall, peerWall('qemu10')),
      'zstd-floor': pairRatios(wall, peerWall('zstd-floor')),
      nc: pairRatios(wall, peerWall('nc')),
      'zstd-nc': pairRatios(wall, peerWall('zstd-nc')),
      rsync: pairRatios(wall, peerWall('rsync')),
      'mfd-plain': pairRatios(wall, peerWall('mfd-plain')),
      floor: pairRatios(wall, floors),
    },
    floorSec: summarize(floors),
    linkBytesVsQemu: pairRatios(
      col((s) => s.linkBytes),
      r.peers.qemu?.samples.map((s) => s?.linkBytes) ?? [],
    ),
    ...(r.changedPages !== undefined ? { delta: deltaSummary(r, r.changedPages) } : {}),
  };
}

function deltaSummary(r: CellRecord, changedPages: number): NonNullable<CellSummary['delta']> {
  const wire = r.runs.map((s) => s.wireBytes);
  const peerWire = (n: PeerName): (number | null | undefined)[] => r.peers[n]?.samples.map((s) => s?.wireBytes) ?? [];
  const d = (f: (x: NonNullable<MfdSample['delta']>) => number): Summary | null =>
    summarize(r.runs.map((s) => (s.delta ? f(s.delta) : null)));
  return {
    changedPages,
    wireVsChanged: summarize(wire.map((w) => (changedPages === 0 ? null : w / (changedPages * PAGE)))),
    dataPages: d((x) => x.dataPages),
    basePages: d((x) => x.basePages),
    migrationPages: d((x) => x.migrationPages),
    bytesVsRsync: pairRatios(wire, peerWire('rsync')),
    bytesVsPlain: pairRatios(wire, peerWire('mfd-plain')),
  };
}

export interface Target {
  id:
    | 'qemu-none'
    | 'qemu-zstd'
    | 'qemu10-none'
    | 'qemu10-zstd'
    | 'qemu10-zlib'
    | 'zstd-floor'
    | 'lz4-vs-zstd'
    | 'none-vs-nc'
    | 'floor-none'
    | 'zstd-vs-zstd-nc'
    | 'delta-bytes'
    | 'delta-vs-plain'
    | 'delta-vs-rsync-bytes'
    | 'delta-vs-rsync-wall';
  /** What is compared, in words. */
  label: string;
  cellKey: string;
  cell: Cell;
  value: number | null;
  op: '<=' | '<';
  limit: number;
  /** null: not measured (`why` says why). */
  pass: boolean | null;
  why?: string;
}

interface TargetDef {
  id: Target['id'];
  /** The cells it is computed for: a method's, or those `applies` picks. */
  method?: string;
  applies?: (c: Cell, s: CellSummary) => boolean;
  label: string;
  op: Target['op'];
  limit: number;
  /** The measure; `all` holds every cell of the run, for targets that compare two of them. */
  value: (c: CellSummary, all: readonly CellSummary[]) => number | undefined;
  /** The peer it needs (none: it compares mfd with itself). */
  peer?: PeerName;
  /** Why there is no value, for a target without a peer. */
  missing?: string;
}

/** The cell like `c` (channels, zero-page detection, image) but for `method`, whole-image. */
function sibling(c: CellSummary, all: readonly CellSummary[], method: string): CellSummary | undefined {
  const k = (x: Cell): string => `${x.channels}/${x.zeroPageDetection}/${x.profile}/${x.sizeBytes}/${x.image ?? ''}`;
  return all.find((o) => o.cell.compression === method && o.delta === undefined && k(o.cell) === k(c.cell));
}

/** The lead's targets (issue 7), each computed for every cell of its method. */
export const TARGETS: readonly TargetDef[] = [
  {
    id: 'qemu-none',
    method: 'none',
    label: 'mfd / QEMU wall time, none',
    op: '<=',
    limit: 0.5,
    value: (c) => c.ratios.qemu?.median,
    peer: 'qemu',
  },
  {
    id: 'qemu-zstd',
    method: 'zstd',
    label: 'mfd / QEMU wall time, zstd',
    op: '<=',
    limit: 0.6,
    value: (c) => c.ratios.qemu?.median,
    peer: 'qemu',
  },
  // Issue 15: against QEMU 10.0, the codec floor, lz4 against zstd, and what an operator would use instead.
  {
    id: 'qemu10-none',
    method: 'none',
    label: 'mfd / QEMU 10 wall time, none',
    op: '<=',
    limit: 0.5,
    value: (c) => c.ratios.qemu10?.median,
    peer: 'qemu10',
  },
  {
    id: 'qemu10-zstd',
    method: 'zstd',
    label: 'mfd / QEMU 10 wall time, zstd',
    op: '<=',
    limit: 0.6,
    value: (c) => c.ratios.qemu10?.median,
    peer: 'qemu10',
  },
  {
    id: 'qemu10-zlib',
    method: 'zlib',
    label: 'mfd / QEMU 10 wall time, zlib',
    op: '<=',
    limit: 0.6,
    value: (c) => c.ratios.qemu10?.median,
    peer: 'qemu10',
  },
  {
    id: 'zstd-floor',
    method: 'zstd',
    label: "mfd zstd / codec floor (the zstd command's compress + decompress CPU seconds / cores)",
    op: '<=',
    limit: 1.5,
    value: (c) => c.ratios['zstd-floor']?.median,
    peer: 'zstd-floor',
  },
  {
    id: 'lz4-vs-zstd',
    method: 'lz4',
    label: 'mfd lz4 / mfd zstd wall time (medians, same channels and image)',
    op: '<',
    limit: 1,
    value: (c, all) => {
      const z = sibling(c, all, 'zstd');
      return z ? c.wallSec.median / z.wallSec.median : undefined;
    },
    missing: 'no zstd cell with the same channels, zero-page detection and image in this run',
  },
  {
    id: 'none-vs-nc',
    method: 'none',
    label: 'mfd none / raw `nc` wall time',
    op: '<',
    limit: 1,
    value: (c) => c.ratios.nc?.median,
    peer: 'nc',
  },
  {
    id: 'floor-none',
    method: 'none',
    label: "mfd / floor, none (floor = mfd's wire bytes / iperf3 rate)",
    op: '<=',
    limit: 1.3,
    value: (c) => c.ratios.floor?.median,
    peer: 'iperf3',
  },
  {
    id: 'zstd-vs-zstd-nc',
    method: 'zstd',
    label: 'mfd zstd / `zstd -1 -T0 | nc` wall time',
    op: '<',
    limit: 1,
    value: (c) => c.ratios['zstd-nc']?.median,
    peer: 'zstd-nc',
  },
  // Delta transfer (issue 16), on every delta cell.
  {
    id: 'delta-bytes',
    applies: (_c, s) => s.delta !== undefined && s.delta.changedPages > 0,
    label: "mfd delta's wire bytes / the changed pages' bytes",
    op: '<=',
    limit: 1.1,
    value: (c) => c.delta?.wireVsChanged?.median,
    peer: 'mfd-plain',
  },
  {
    id: 'delta-vs-plain',
    applies: (c, s) => s.delta !== undefined && s.delta.changedPages * PAGE <= 0.1 * c.sizeBytes,
    label: "mfd delta's wire bytes / plain mfd's, at most 10% of pages changed",
    op: '<=',
    limit: 0.2,
    value: (c) => c.delta?.bytesVsPlain?.median,
    peer: 'mfd-plain',
  },
  {
    id: 'delta-vs-rsync-bytes',
    applies: (_c, s) => s.delta !== undefined,
    label: "mfd delta's wire bytes / rsync's",
    op: '<',
    limit: 1,
    value: (c) => c.delta?.bytesVsRsync?.median,
    peer: 'rsync',
  },
  {
    id: 'delta-vs-rsync-wall',
    applies: (_c, s) => s.delta !== undefined,
    label: 'mfd delta / rsync wall time',
    op: '<=',
    limit: 1 / 3,
    value: (c) => c.ratios.rsync?.median,
    peer: 'rsync',
  },
];

export function computeTargets(cells: readonly CellSummary[]): Target[] {
  const out: Target[] = [];
  for (const def of TARGETS) {
    for (const c of cells) {
      // The method targets compare whole-image migrations: not delta cells.
      if (def.method !== undefined && (c.cell.compression !== def.method || c.delta !== undefined)) continue;
      if (def.applies && !def.applies(c.cell, c)) continue;
      const value = def.value(c, cells) ?? null;
      const p = def.peer === undefined ? undefined : c.peers[def.peer];
      const why =
        value !== null
          ? undefined
          : def.peer === undefined
            ? (def.missing ?? 'not measured')
            : p === undefined
              ? `${def.peer} not run`
              : (p.skipped ?? p.failed ?? `${def.peer} gave no measurement`);
      out.push({
        id: def.id,
        label: def.label,
        cellKey: c.key,
        cell: c.cell,
        value,
        op: def.op,
        limit: def.limit,
        pass: value === null ? null : def.op === '<=' ? value <= def.limit : value < def.limit,
        ...(why !== undefined ? { why } : {}),
      });
    }
  }
  return out;
}

export interface Growth {
  /** The cells compared, smallest image first. */
  from: CellSummary;
  to: CellSummary;
  /** Largest image's peak RSS over the smallest's (max of sender and receiver each). */
  sendRss: number;
  recvRss: number;
  /** Seconds per GiB at the largest size over at the smallest (1 = time grows linearly with size). */
  timePerGiB: number;
  /** Memory counts as flat when neither side's peak RSS grew by more than 25%. */
  flat: boolean;
}

/** For each cell group that differs only in size: how time and memory grow from the smallest to the largest image. */
export function sizeGrowth(cells: readonly CellSummary[]): Growth[] {
  const groups = new Map<string, CellSummary[]>();
  for (const c of cells) {
    const k = `${c.cell.compression}/${c.cell.zeroPageDetection}/${c.cell.channels}/${c.cell.profile}/${c.cell.changed ?? c.cell.base ?? ''}`;
    groups.set(k, [...(groups.get(k) ?? []), c]);
  }
  const out: Growth[] = [];
  for (const g of groups.values()) {
    if (g.length < 2) continue;
    const sorted = [...g].sort((a, b) => a.cell.sizeBytes - b.cell.sizeBytes);
    const from = sorted[0]!;
    const to = sorted[sorted.length - 1]!;
    const sendRss = to.sendRssMiB.median / from.sendRssMiB.median;
    const recvRss = to.recvRssMiB.median / from.recvRssMiB.median;
    const perGiB = (c: CellSummary): number => c.wallSec.median / (c.cell.sizeBytes / 2 ** 30);
    out.push({ from, to, sendRss, recvRss, timePerGiB: perGiB(to) / perGiB(from), flat: sendRss <= 1.25 && recvRss <= 1.25 });
  }
  return out;
}

/** The runs' image access (map or read, the first word of each sender's `imageAccess`): one word when all agree. */
export function accessOver(each: (string | undefined)[]): string {
  const hows = each.flatMap((a) => (a ? [a.split(' ')[0]!] : []));
  const counts = new Map<string, number>();
  for (const h of hows) counts.set(h, (counts.get(h) ?? 0) + 1);
  if (counts.size <= 1) return hows[0] ?? '';
  return [...counts].map(([h, n], i) => (i === 0 ? `${h} in ${n} of ${each.length} runs` : `${h} in ${n}`)).join(', ');
}
