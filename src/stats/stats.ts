import { formatPathCounts, type PathCounts } from '../offload/paths.js';
import { printable } from '../text.js';
import { peakRssBytes } from '../proc/proc.js';

/** Pages by how they travelled, and what the references saved (`--json`'s `delta`). */
export interface DeltaCounts {
  /** Non-zero pages sent as data. */
  dataPages: number;
  /** Zero pages, in data packets or beside references. */
  zeroPages: number;
  /** Pages sent as references to a base the receiver holds. */
  basePages: number;
  /** Pages sent as references to an earlier page of this migration. */
  migrationPages: number;
  /** Reference packets, and their bytes on the wire (headers included). */
  refPackets: number;
  refBytes: number;
  /** Page bytes not sent (referenced pages x page size) less the reference packets' bytes. */
  bytesSaved: number;
}

/**
 * Run statistics shaped like QEMU's query-migrate `ram` block: total time,
 * throughput in Mbps on the wire, pages per second, normal and zero pages,
 * bytes on the wire, plus packets per channel and this process's CPU and RSS.
 */
export interface ChannelCounters {
  id: number;
  /** Packets written or read, SYNC packets included. */
  packets: number;
  syncPackets: number;
  normalPages: number;
  zeroPages: number;
  /** Init packet + headers + payloads. */
  wireBytes: number;
}

export function newChannelCounters(id: number): ChannelCounters {
  return { id, packets: 0, syncPackets: 0, normalPages: 0, zeroPages: 0, wireBytes: 0 };
}

export interface RunStats {
  side: 'send' | 'recv';
  status: 'completed';
  uuid: string;
  compression: string;
  /** Which compression implementation ran on this side. */
  compressionPath: string;
  zeroPageDetection: string;
  /** Which zero-page implementation ran on this side (e.g. cpu-avx2). */
  zeroPagePath: string;
  /**
   * The sender, for a method that sends pages as they are (none): how it got each image's pages, map or read,
   * and why (--image-access; `auto` says what it measured). Absent where a compute worker reads them.
   */
  imageAccess?: string;
  /** Packets and pages per path (hardware, software, raw) and fallbacks by reason, all channels. */
  paths: { compression: PathCounts; zeroPage: PathCounts };
  channels: number;
  pageSize: number;
  ramblocks: { name: string; size: number; path: string; digest: string }[];
  /** Milliseconds from start to verified completion. */
  totalTimeMs: number;
  imageBytes: number;
  wireBytes: number;
  /** Megabits per second on the wire (decimal), as QEMU's mbps. */
  mbps: number;
  /** Image bytes per second. */
  imageBytesPerSec: number;
  pagesPerSecond: number;
  normalPages: number;
  zeroPages: number;
  normalBytes: number;
  /** Wire bytes / image bytes. */
  wireRatio: number;
  perChannel: ChannelCounters[];
  /** A resume: pages the receiver already held, not sent again (counted in neither normal nor zero pages). */
  resumedPages?: number;
  /** A delta transfer: pages by how they travelled, and the bytes the references saved (src/delta/). */
  delta?: DeltaCounts;
  process: { cpuUserSec: number; cpuSystemSec: number; maxRssBytes: number };
}

export function buildStats(
  base: Pick<
    RunStats,
    | 'side'
    | 'uuid'
    | 'compression'
    | 'compressionPath'
    | 'zeroPageDetection'
    | 'zeroPagePath'
    | 'imageAccess'
    | 'paths'
    | 'pageSize'
    | 'ramblocks'
  >,
  counters: ChannelCounters[],
  startNs: bigint,
): RunStats {
  const totalTimeMs = Number(process.hrtime.bigint() - startNs) / 1e6;
  const sec = Math.max(totalTimeMs / 1000, 1e-9);
  const sum = (k: 'normalPages' | 'zeroPages' | 'wireBytes'): number => counters.reduce((a, c) => a + c[k], 0);
  const imageBytes = base.ramblocks.reduce((a, b) => a + b.size, 0);
  const wireBytes = sum('wireBytes');
  const normalPages = sum('normalPages');
  const zeroPages = sum('zeroPages');
  const ru = process.resourceUsage();
  return {
    ...base,
    status: 'completed',
    channels: counters.length,
    totalTimeMs: round(totalTimeMs, 1),
    imageBytes,
    wireBytes,
    mbps: round((wireBytes * 8) / sec / 1e6, 2),
    imageBytesPerSec: Math.round(imageBytes / sec),
    pagesPerSecond: Math.round((normalPages + zeroPages) / sec),
    normalPages,
    zeroPages,
    normalBytes: normalPages * base.pageSize,
    wireRatio: imageBytes === 0 ? 0 : round(wireBytes / imageBytes, 4),
    perChannel: counters,
    process: {
      cpuUserSec: round(ru.userCPUTime / 1e6, 3),
      cpuSystemSec: round(ru.systemCPUTime / 1e6, 3),
      maxRssBytes: peakRssBytes(),
    },
  };
}

/** QEMU's query-migrate `ram` block, by QEMU's names, for what mfd measures the same way. */
export interface QemuRamInfo {
  /** Bytes on the wire (QEMU: all bytes transferred). */
  transferred: number;
  /** Image bytes. */
  total: number;
  /** Always 0 in a completed migration. */
  remaining: number;
  /** Pages sent as data. */
  normal: number;
  'normal-bytes': number;
  /** Zero pages (QEMU: pages found to be zero). */
  duplicate: number;
  mbps: number;
  'pages-per-second': number;
  /** Bytes through the multifd channels: every wire byte of mfd's. */
  'multifd-bytes': number;
  'page-size': number;
}

/** QEMU's query-migrate fields of a completed migration: status, total-time (ms) and ram. */
export interface QemuMigrateInfo {
  status: 'completed';
  'total-time': number;
  ram: QemuRamInfo;
}

export function migrateInfo(s: RunStats): QemuMigrateInfo {
  return {
    status: s.status,
    'total-time': Math.round(s.totalTimeMs),
    ram: {
      transferred: s.wireBytes,
      total: s.imageBytes,
      remaining: 0,
      normal: s.normalPages,
      'normal-bytes': s.normalBytes,
      duplicate: s.zeroPages,
      mbps: s.mbps,
      'pages-per-second': s.pagesPerSecond,
      'multifd-bytes': s.wireBytes,
      'page-size': s.pageSize,
    },
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** `n` bytes in the largest binary unit that keeps the value at 1 or more. */
function scaleBytes(n: number): { v: number; unit: string } {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = n;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return { v, unit: units[u]! };
}

/** A measured amount, two decimals: "1.50 GiB", "812 B". */
export function formatBytes(n: number): string {
  const { v, unit } = scaleBytes(n);
  return `${v.toFixed(unit === 'B' ? 0 : 2)} ${unit}`;
}

/** A chosen size, no trailing zeros: "1 GiB", "512 MiB", "1.5 GiB". */
export function formatSize(n: number): string {
  const { v, unit } = scaleBytes(n);
  return `${Number.isInteger(v) ? v : Number(v.toFixed(2))} ${unit}`;
}

/** Human summary for stdout, one fact per line (QEMU's `info migrate` flavour). */
export function formatStats(s: RunStats): string {
  const lines = [
    `${s.side === 'send' ? 'sent' : 'received'}: ${s.ramblocks.length} ramblock(s), ${formatBytes(s.imageBytes)} in ${(s.totalTimeMs / 1000).toFixed(3)} s, status ${s.status}`,
    `  method: compression=${s.compression} (${s.compressionPath}) zero-page-detection=${s.zeroPageDetection} (${s.zeroPagePath}), channels=${s.channels}, page size=${s.pageSize}`,
    `  compression paths: ${formatPathCounts(s.paths.compression)}`,
    ...(s.side === 'send' ? [`  zero-page paths: ${formatPathCounts(s.paths.zeroPage)}`] : []),
    ...(s.imageAccess !== undefined ? [`  image access: ${printable(s.imageAccess)}`] : []),
    `  throughput: ${s.mbps.toFixed(2)} Mbps on the wire, ${formatBytes(s.imageBytesPerSec)}/s of image, ${s.pagesPerSecond} pages/s`,
    `  pages: normal=${s.normalPages} zero=${s.zeroPages} normal bytes=${s.normalBytes}`,
    `  wire: ${s.wireBytes} bytes (ratio ${s.wireRatio})`,
    ...(s.resumedPages !== undefined ? [`  resumed: ${s.resumedPages} pages already held by the receiver, not sent again`] : []),
    ...(s.delta
      ? [
          `  delta: pages as data=${s.delta.dataPages} base references=${s.delta.basePages} in-migration references=${s.delta.migrationPages} zero=${s.delta.zeroPages}; ` +
            `${s.delta.refPackets} reference packets (${s.delta.refBytes} bytes), ${formatBytes(Math.max(0, s.delta.bytesSaved))} saved`,
        ]
      : []),
    `  packets per channel: ${s.perChannel.map((c) => `${c.id}:${c.packets}`).join(' ')}`,
    `  process: cpu user ${s.process.cpuUserSec} s, system ${s.process.cpuSystemSec} s, peak rss ${formatBytes(s.process.maxRssBytes)}`,
  ];
  for (const b of s.ramblocks) lines.push(`  ramblock ${printable(b.name)}: ${b.size} bytes, digest ${b.digest} -> ${printable(b.path)}`);
  return lines.join('\n');
}
