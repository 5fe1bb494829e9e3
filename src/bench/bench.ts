/**
 * `mfd bench`: for each image (profile x size) and each cell (method x zero-page mode x channels),
 * warm-up runs of mfd, then measured runs, each mfd run followed by one run of every peer on the
 * same image, so each pair of runs meets the same load on a shared machine. Every output is
 * compared with its image. Results stream out as JSON lines while it runs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InterruptedError, MfdError } from '../errors.js';
import { generateImage, type Profile } from '../image/generate.js';
import { changedPages, changeImage, readThrough } from './files.js';
import { formatSize } from '../stats/stats.js';
import { buildCells, cellKey, deltaLabel, isDeltaCell, type BenchConfig, type Cell, type PeerName } from './matrix.js';
import { loopback, type Net } from './net.js';
import { describeLink, openShapedLink } from './netns.js';
import { choosePeers, PeerNotApplicable, type Peer, type PeerSample } from './peers/index.js';
import { killAll } from '../proc/proc.js';
import { delayLineLine, jsonLine, type BenchMeta } from './report.js';
import type { DelayLineStats } from '../native/binding.js';
import { MFD_BIN, runMfd, type MfdSample } from './runner.js';
import { computeTargets, summarizeCell, type CellRecord, type CellSummary, type PeerRecord, type Target } from './summary.js';

export interface BenchRunOptions {
  /** Where the work directory (images, outputs) is made; removed at the end unless `keep`. */
  dir: string;
  keep?: boolean;
  signal: AbortSignal;
  /** A progress line for a person (stderr). */
  status(line: string): void;
  /** Each JSON line as soon as it is known (meta, runs, cells, targets). */
  record(line: string): void;
}

export interface BenchResult {
  meta: BenchMeta;
  records: CellRecord[];
  cells: CellSummary[];
  targets: Target[];
  /** A delayed link's forwarder: packets, drops, CPU seconds. */
  delayLine?: DelayLineStats;
}

/** Peers that only compare with delta cells. */
const DELTA_PEERS: readonly PeerName[] = ['rsync', 'mfd-plain'];

function mfdVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(path.dirname(MFD_BIN), '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function duration(sec: number): string {
  if (sec < 60) return `${sec.toFixed(0)}s`;
  return `${Math.floor(sec / 60)}m${String(Math.round(sec % 60)).padStart(2, '0')}s`;
}

function cellTitle(c: Cell, showZpd: boolean): string {
  const d = deltaLabel(c);
  return `${c.compression} ${c.channels}ch${showZpd ? ` zpd=${c.zeroPageDetection}` : ''} ${c.profile} ${formatSize(c.sizeBytes)}${d === null ? '' : ` delta ${d}`}`;
}

export async function runBench(cfg: BenchConfig, opts: BenchRunOptions): Promise<BenchResult> {
  const { signal, status } = opts;
  const check = (): void => {
    if (signal.aborted) throw new InterruptedError(String(signal.reason ?? 'SIGINT'));
  };
  const cells = buildCells(cfg);
  const choice = choosePeers(cfg.peers, undefined, { qemuBinary: cfg.qemuBinary, qemu10Binary: cfg.qemu10Binary });
  // The delta-only peers (rsync, plain mfd) are left out of a bench without delta cells, unless asked for.
  if (!cfg.peers && !cells.some(isDeltaCell)) choice.peers = choice.peers.filter((p) => !DELTA_PEERS.includes(p.name));
  // The link first: it is what most often cannot be had (root, tc, TUN), so say so before any work.
  const net: Net = cfg.link ? openShapedLink(cfg.link) : loopback();
  const cpu = os.cpus();
  const meta: BenchMeta = {
    date: new Date().toISOString(),
    mfdVersion: mfdVersion(),
    host: {
      cpus: cpu.length,
      model: cpu[0]?.model.trim() ?? 'unknown',
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      kernel: os.release(),
      node: process.version,
    },
    network: cfg.link
      ? { kind: 'link', description: describeLink(cfg.link), rateBitsPerSec: cfg.link.rateBitsPerSec, delayMs: cfg.link.delayMs }
      : { kind: 'loopback', description: 'loopback' },
    matrix: {
      compression: cfg.compression,
      channels: cfg.channels,
      zeroPageDetection: cfg.zeroPageDetection,
      profiles: cfg.profiles,
      sizes: cfg.sizes,
      images: cfg.images.map((i) => i.path),
      ...(cfg.changed.length ? { changed: cfg.changed } : {}),
      ...(cfg.images.some((i) => i.base) ? { bases: cfg.images.map((i) => i.base ?? null) } : {}),
    },
    runs: cfg.runs,
    warmup: cfg.warmup,
    seed: cfg.seed,
    peers: choice.peers.map((p) => ({ name: p.name, label: p.label() })),
    skippedPeers: choice.skipped,
  };
  let workDir: string | undefined;
  const records: CellRecord[] = [];
  const summaries: CellSummary[] = [];
  try {
    opts.record(jsonLine({ type: 'meta', ...meta }));
    status(`mfd bench: ${cells.length} cell(s) x (${cfg.warmup} warm-up + ${cfg.runs} run(s)) over ${net.description}`);
    status(`peers: ${meta.peers.map((p) => p.label).join('; ') || 'none'}`);
    for (const s of choice.skipped) status(`peer ${s.name} skipped: ${s.reason}`);
    fs.mkdirSync(opts.dir, { recursive: true });
    workDir = fs.mkdtempSync(path.join(opts.dir, 'mfd-bench-'));
    const outDir = path.join(workDir, 'out');
    const showZpd = cfg.zeroPageDetection.length > 1;
    const t0 = Date.now();
    const totalUnits = cells.length * (cfg.warmup + cfg.runs);
    let doneUnits = 0;
    const eta = (): string => {
      const el = (Date.now() - t0) / 1000;
      return doneUnits === 0 ? duration(el) : `${duration(el)}, ~${duration((el / doneUnits) * (totalUnits - doneUnits))} left`;
    };

    let image = '';
    let imageOf = '';
    let generated = false;
    // A delta cell's image and its earlier version (a generated one is changed from it: `made`, the bench's own file).
    let deltaOf = '';
    let changed: { image: string; base: string; pages: number; made: boolean } | null = null;
    for (const [ci, cell] of cells.entries()) {
      check();
      const want = cell.image ?? `${cell.profile}-${formatSize(cell.sizeBytes).replace(' ', '')}-seed${cfg.seed}.ram`;
      if (imageOf !== want) {
        // Only a generated image is removed; a user's (--image) is only ever read.
        if (generated && !opts.keep) fs.rmSync(image, { force: true });
        imageOf = want;
        generated = cell.image === undefined;
        if (cell.image !== undefined) {
          image = cell.image;
          status(`image ${image} (${formatSize(cell.sizeBytes)})`);
        } else {
          image = path.join(workDir, want);
          status(`generating ${formatSize(cell.sizeBytes)} ${cell.profile} image (seed ${cfg.seed}): ${image}`);
          generateImage(image, { size: cell.sizeBytes, profile: cell.profile as Profile, seed: cfg.seed });
        }
        // Every contender starts with the image in the page cache.
        await readThrough(image);
      }
      // The pair a delta cell sends: the generated image and its change, or a user's image and its base (one base may serve several).
      const deltaKey = cell.changed !== undefined ? `${want}:${cell.changed}` : cell.base !== undefined ? `${image}\n${cell.base}` : '';
      if (deltaOf !== deltaKey) {
        // Only a changed image the bench made is removed: a user's --image is only ever read.
        if (changed?.made && !opts.keep) fs.rmSync(changed.image, { force: true });
        deltaOf = deltaKey;
        changed = null;
        if (cell.changed !== undefined) {
          const file = path.join(workDir, `${path.parse(want).name}-changed${cell.changed}.ram`);
          status(`changing ${cell.changed}% of the pages of ${want} (the destination holds it as it was): ${file}`);
          changed = { image: file, base: image, pages: changeImage(image, file, cell.changed, cfg.seed), made: true };
        } else if (cell.base !== undefined) {
          changed = { image, base: cell.base, pages: await changedPages(image, cell.base), made: false };
          status(`${image}: ${changed.pages} page(s) differ from its earlier version ${cell.base}`);
        }
        if (changed) await readThrough(changed.image);
      }
      // What this cell sends: the image, or the changed one against its earlier version.
      const sent = changed?.image ?? image;
      const base = changed?.base;
      const title = `[${ci + 1}/${cells.length} ${cellTitle(cell, showZpd)}]`;
      const rec: CellRecord = { cell, runs: [], peers: {}, ...(changed ? { changedPages: changed.pages } : {}) };
      const active: Peer[] = [];
      for (const p of choice.peers) {
        const r: PeerRecord = { label: p.label(), samples: [] };
        const na = p.notApplicable(cell);
        const note = p.note?.(cell);
        if (note) r.note = note;
        if (na) r.skipped = na;
        else active.push(p);
        rec.peers[p.name] = r;
      }
      const mfdRun = (): Promise<MfdSample> => runMfd({ cell, image: sent, outDir, net, signal, ...(base ? { base } : {}) });
      for (let w = 0; w < cfg.warmup; w++) {
        const s = await mfdRun();
        doneUnits++;
        status(`${title} warm-up ${w + 1}/${cfg.warmup}: mfd ${s.wallSec.toFixed(3)} s  (${eta()})`);
      }
      for (let i = 0; i < cfg.runs; i++) {
        check();
        const s = await mfdRun();
        rec.runs.push(s);
        const parts = [
          `mfd ${s.wallSec.toFixed(3)} s (${(s.imageBytes / s.wallSec / 1e9).toFixed(2)} GB/s, wire ${s.wireRatio.toFixed(3)}${s.delta ? `, ${s.wireBytes} bytes` : ''})`,
        ];
        const peerSamples: Partial<Record<PeerName, PeerSample | null>> = {};
        for (const p of [...active]) {
          check();
          const r = rec.peers[p.name]!;
          try {
            const ps = await p.run({ cell, image: sent, imageBytes: s.imageBytes, workDir, net, signal, ...(base ? { base } : {}) });
            r.samples[i] = ps;
            peerSamples[p.name] = ps;
            parts.push(
              ps.bytesPerSec !== undefined
                ? `${p.name} ${(ps.bytesPerSec / 1e9).toFixed(2)} GB/s`
                : `${p.name} ${ps.wallSec?.toFixed(3)} s`,
            );
          } catch (e) {
            // A mismatch or an interruption ends the bench; a peer that cannot do the cell, or fails, is recorded and left out.
            if (e instanceof MfdError) throw e;
            active.splice(active.indexOf(p), 1);
            const msg = (e as Error).message;
            if (e instanceof PeerNotApplicable) r.skipped = msg;
            else r.failed = msg;
            r.samples[i] = null;
            peerSamples[p.name] = null;
            parts.push(`${p.name} ${e instanceof PeerNotApplicable ? 'skipped' : 'FAILED'}: ${msg}`);
          }
        }
        doneUnits++;
        opts.record(jsonLine({ type: 'run', cell: cellKey(cell), run: i, mfd: s, peers: peerSamples }));
        status(`${title} run ${i + 1}/${cfg.runs}: ${parts.join(' | ')}  (${eta()})`);
      }
      records.push(rec);
      const sum = summarizeCell(rec);
      summaries.push(sum);
      opts.record(jsonLine({ type: 'cell', ...sum }));
    }
    const delayLine = net.delayLine?.();
    if (delayLine) {
      // The forwarder shares the CPUs with the runs: say what it took.
      opts.record(jsonLine({ type: 'link', delayLine }));
      status(delayLineLine(delayLine));
    }
    const targets = computeTargets(summaries);
    for (const t of targets) opts.record(jsonLine({ type: 'target', ...t }));
    status(`done in ${duration((Date.now() - t0) / 1000)}`);
    return { meta, records, cells: summaries, targets, delayLine };
  } finally {
    await killAll();
    await net.close();
    if (workDir && !opts.keep) fs.rmSync(workDir, { recursive: true, force: true });
    else if (workDir) status(`kept ${workDir}`);
  }
}
