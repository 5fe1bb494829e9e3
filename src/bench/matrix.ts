/**
 * The benchmark's matrix and its option values: comma lists in QEMU's vocabulary
 * (`--compression none,zstd`, `--channels 1,4`), size lists (`--size 512M,1G`) and a
 * shaped link (`--link 1gbit,1ms`). Pure: no I/O, so every parser is unit-tested.
 */
import path from 'node:path';
import { UsageError } from '../errors.js';
import { parseSize, PROFILES, type Profile } from '../image/generate.js';
import { formatSize } from '../stats/stats.js';

export const PEER_NAMES = ['iperf3', 'nc', 'zstd-nc', 'zstd-floor', 'qemu', 'qemu10', 'rsync', 'mfd-plain'] as const;
export type PeerName = (typeof PEER_NAMES)[number];

/** One cell of the matrix: what one series of mfd runs (and its peers) measures. */
export interface Cell {
  compression: string;
  zeroPageDetection: string;
  channels: number;
  /** A generated image's profile, or `image:NAME` for a user's image file (`image` then names it). */
  profile: Profile | `image:${string}`;
  sizeBytes: number;
  /** The user's image file (`--image`), used as it is; absent for generated images. */
  image?: string;
  /**
   * Delta transfer: the destination holds an earlier version of the image, and mfd runs with
   * `--delta`. For a generated image, the percentage of its pages changed since that version
   * (`--changed`); for a user's image, the earlier version's file (`--base`).
   */
  changed?: number;
  base?: string;
}

/** A user's image file for the bench (`--image`): real guest RAM, say. */
export interface BenchImage {
  path: string;
  sizeBytes: number;
  /** Its earlier version, which the destination holds (`--base`): the image then runs with delta transfer. */
  base?: string;
}

/** A shaped link between two network namespaces. */
export interface LinkSpec {
  /** Bits per second, as tc's `rate`. */
  rateBitsPerSec: number;
  /** Added one-way delay in milliseconds, each direction (so the round trip gains twice this). */
  delayMs: number;
  /** As given, for the report. */
  text: string;
}

export interface BenchConfig {
  compression: string[];
  channels: number[];
  zeroPageDetection: string[];
  profiles: Profile[];
  sizes: number[];
  /** The user's image files, each a cell row of its own beside (or, without --profile, instead of) the generated ones. */
  images: BenchImage[];
  /** `--changed`: percentages of changed pages; each generated image also runs as a delta cell for each. */
  changed: number[];
  runs: number;
  warmup: number;
  seed: number;
  /** Peers asked for by name, or undefined for "every available one". */
  peers: PeerName[] | undefined;
  link: LinkSpec | undefined;
  /** The QEMU binary of the qemu peer (default: qemu-system-x86_64 on PATH). */
  qemuBinary?: string;
  /** The QEMU binary of the qemu10 peer (default: where .ci/fetch-qemu10 puts QEMU 10.0). */
  qemu10Binary?: string;
}

/** "a, b,,c" -> ['a', 'b', 'c']; duplicates refused (they would only repeat a cell) unless `repeats`. */
export function parseList(flag: string, v: string, repeats = false): string[] {
  const items = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (items.length === 0) throw new UsageError(`Expected a comma-separated list for ${flag} but received "${v}"`);
  if (repeats) return items;
  const seen = new Set<string>();
  for (const i of items) {
    if (seen.has(i)) throw new UsageError(`${flag} lists "${i}" twice`);
    seen.add(i);
  }
  return items;
}

/** A list whose every item is one of `choices`. */
export function parseChoiceList(flag: string, v: string, choices: readonly string[]): string[] {
  const items = parseList(flag, v);
  for (const i of items) {
    if (!choices.includes(i)) throw new UsageError(`Expected ${flag} values from ${choices.join(', ')} but received "${i}"`);
  }
  return items;
}

export function parseIntList(flag: string, v: string, min: number, max: number): number[] {
  return parseList(flag, v).map((s) => {
    const n = Number(s);
    if (!/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new UsageError(`Expected integers in ${min}..${max} for ${flag} but received "${s}"`);
    }
    return n;
  });
}

/** "512M,1G,2G" -> bytes each; every size a whole number of 4 KiB pages, at least one page. */
export function parseSizeList(flag: string, v: string): number[] {
  return parseList(flag, v).map((s) => {
    const n = parseSize(s);
    if (n < 4096 || n % 4096 !== 0)
      throw new UsageError(`Expected ${flag} sizes that are whole 4 KiB pages (like 64M or 1G) but received "${s}"`);
    return n;
  });
}

export function parseProfiles(flag: string, v: string): Profile[] {
  return parseChoiceList(flag, v, Object.keys(PROFILES)) as Profile[];
}

/** `--peers iperf3,nc`, `--peers none` (no peers) or `--peers all` (every one; an unavailable one is then an error). */
export function parsePeers(v: string): PeerName[] {
  const t = v.trim();
  if (t === 'none') return [];
  if (t === 'all') return [...PEER_NAMES];
  return parseChoiceList('--peers', v, PEER_NAMES) as PeerName[];
}

const RATE_UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9, tbit: 1e12 };

/**
 * A tc-style rate in bits per second: "1gbit", "100mbit", "2.5gbit", "800kbit".
 * Only bit units: tc's "mbps" means megabytes per second, a classic trap, so it is refused.
 */
export function parseRate(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?bit)$/i.exec(s.trim());
  if (!m) throw new UsageError(`Expected a rate like 100mbit, 1gbit or 2.5gbit for --link but received "${s}"`);
  const v = Math.round(Number(m[1]) * RATE_UNITS[m[2]!.toLowerCase()]!);
  if (!(v >= 8000) || !Number.isSafeInteger(v)) throw new UsageError(`--link rate "${s}" is out of range (8kbit or more)`);
  return v;
}

/** "1ms", "500us", "0.2ms", "1s", "0" -> milliseconds. */
export function parseDelay(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(us|ms|s)?$/i.exec(s.trim());
  if (!m || (m[2] === undefined && Number(m[1]) !== 0)) {
    throw new UsageError(`Expected a delay like 1ms, 500us or 0 for --link but received "${s}"`);
  }
  const unit = (m[2] ?? 'ms').toLowerCase();
  const ms = Number(m[1]) * (unit === 'us' ? 1e-3 : unit === 's' ? 1e3 : 1);
  if (ms > 10_000) throw new UsageError(`--link delay "${s}" is out of range (at most 10s)`);
  return ms;
}

/** `--link RATE[,DELAY]`: "1gbit,1ms", "100mbit" (no delay). */
export function parseLink(v: string): LinkSpec {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.length > 2 || parts[0] === undefined || parts[0] === '') {
    throw new UsageError(`Expected --link RATE[,DELAY] (like 1gbit,1ms) but received "${v}"`);
  }
  return { rateBitsPerSec: parseRate(parts[0]), delayMs: parts[1] === undefined ? 0 : parseDelay(parts[1]), text: v.trim() };
}

/** Every combination, images outermost (one image per profile and size), channels innermost. */
export function buildCells(
  c: Pick<BenchConfig, 'compression' | 'channels' | 'zeroPageDetection' | 'profiles' | 'sizes'> & {
    images?: BenchImage[];
    changed?: number[];
  },
): Cell[] {
  const cells: Cell[] = [];
  const each = (profile: Cell['profile'], sizeBytes: number, extra: Partial<Cell> = {}): void => {
    for (const compression of c.compression) {
      for (const zeroPageDetection of c.zeroPageDetection) {
        for (const channels of c.channels) cells.push({ compression, zeroPageDetection, channels, profile, sizeBytes, ...extra });
      }
    }
  };
  for (const profile of c.profiles) {
    for (const sizeBytes of c.sizes) {
      // Without --changed, the image as it is; with it, only as changed since an earlier version.
      if (!c.changed?.length) each(profile, sizeBytes);
      for (const changed of c.changed ?? []) each(profile, sizeBytes, { changed });
    }
  }
  for (const im of c.images ?? []) each(imageProfile(im.path), im.sizeBytes, { image: im.path, ...(im.base ? { base: im.base } : {}) });
  return cells;
}

/** `image:NAME` for an image file: its base name without the extension, as the report's rows say it. */
export function imageProfile(file: string): `image:${string}` {
  return `image:${path.parse(file).name}`;
}

/** A stable, readable identifier of a cell: "zstd/multifd/4ch/mixed/1GiB". */
export function cellKey(c: Cell): string {
  const delta = c.changed !== undefined ? `/delta-${c.changed}%` : c.base !== undefined ? `/delta-${path.parse(c.base).name}` : '';
  return `${c.compression}/${c.zeroPageDetection}/${c.channels}ch/${c.profile}/${formatSize(c.sizeBytes).replace(' ', '')}${delta}`;
}

/** True when the cell runs with delta transfer (the destination holds an earlier version). */
export function isDeltaCell(c: Cell): boolean {
  return c.changed !== undefined || c.base !== undefined;
}

/** A delta cell's earlier version, as the report and progress lines say it: "10% changed", "vs A.img"; null for a whole-image cell. */
export function deltaLabel(c: Cell): string | null {
  return c.changed !== undefined ? `${c.changed}% changed` : c.base !== undefined ? `vs ${path.basename(c.base)}` : null;
}

export function formatRate(bitsPerSec: number): string {
  for (const [unit, f] of [
    ['tbit', 1e12],
    ['gbit', 1e9],
    ['mbit', 1e6],
    ['kbit', 1e3],
  ] as const) {
    if (bitsPerSec >= f) return `${Number((bitsPerSec / f).toFixed(3))} ${unit}/s`;
  }
  return `${bitsPerSec} bit/s`;
}

/** Image files must hold whole 4 KiB pages (as guest RAM does), and be named once. */
function checkImages(images: BenchImage[]): BenchImage[] {
  const seen = new Set<string>();
  for (const im of images) {
    if (im.sizeBytes < 4096 || im.sizeBytes % 4096 !== 0)
      throw new UsageError(`--image "${im.path}" is ${im.sizeBytes} bytes: expected a whole number of 4 KiB pages (guest RAM)`);
    const p = imageProfile(im.path);
    if (seen.has(p)) throw new UsageError(`--image names two files called ${p.slice(6)}: the report tells rows apart by file name`);
    seen.add(p);
  }
  return images;
}

/** `mfd bench`'s options as commander hands them over (strings), before parsing. */
export interface RawBenchOptions {
  compression: string;
  channels: string;
  zeroPageDetection: string;
  profile: string;
  size: string;
  /** The user's image files with their sizes (the command stats them), when --image names any. */
  images?: BenchImage[];
  /** --profile was given, not its default: with --image, generated images run too. */
  profileGiven?: boolean;
  /** --changed: percentages of changed pages (delta cells of the generated images). */
  changed?: string;
  runs: string;
  warmup: string;
  seed: string;
  peers?: string;
  link?: string;
  qemuBinary?: string;
  qemu10Binary?: string;
}

/** Parses and checks every option; `methods` and `detectors` are the names this build has. */
export function parseBenchOptions(raw: RawBenchOptions, methods: readonly string[], detectors: readonly string[]): BenchConfig {
  const int = (flag: string, v: string, min: number, max: number): number => parseIntList(flag, v, min, max)[0]!;
  if (raw.runs.includes(',') || raw.warmup.includes(',') || raw.seed.includes(','))
    throw new UsageError('--runs, --warmup and --seed take one number each');
  const peers = raw.peers === undefined ? undefined : parsePeers(raw.peers);
  if (raw.qemuBinary !== undefined && peers && !peers.includes('qemu'))
    throw new UsageError(`--qemu-binary is for the qemu peer, which --peers ${raw.peers} leaves out`);
  if (raw.qemu10Binary !== undefined && peers && !peers.includes('qemu10'))
    throw new UsageError(`--qemu10-binary is for the qemu10 peer, which --peers ${raw.peers} leaves out`);
  return {
    compression: parseChoiceList('--compression', raw.compression, methods),
    channels: parseIntList('--channels', raw.channels, 1, 255),
    zeroPageDetection: parseChoiceList('--zero-page-detection', raw.zeroPageDetection, detectors),
    profiles: raw.images?.length && !raw.profileGiven ? [] : parseProfiles('--profile', raw.profile),
    sizes: parseSizeList('--size', raw.size),
    images: checkImages(raw.images ?? []),
    changed: raw.changed === undefined ? [] : parseIntList('--changed', raw.changed, 0, 100),
    runs: int('--runs', raw.runs, 1, 1000),
    warmup: int('--warmup', raw.warmup, 0, 100),
    seed: int('--seed', raw.seed, 0, 2 ** 32 - 1),
    peers,
    link: raw.link === undefined ? undefined : parseLink(raw.link),
    ...(raw.qemuBinary === undefined ? {} : { qemuBinary: raw.qemuBinary }),
    ...(raw.qemu10Binary === undefined ? {} : { qemu10Binary: raw.qemu10Binary }),
  };
}
