/**
 * One mfd migration as a user runs it: `mfd recv` and `mfd send` in their own processes, both with
 * `--json`. Timed from spawning the sender (the receiver is already listening) to both processes
 * having exited, so the sender's start-up and the receiver's verification are inside the time.
 * Outside it: removing the previous output, `sync`, and the byte-for-byte comparison of the output
 * with the image, which fails the bench loudly on any difference.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BenchError, ExitCode, InterruptedError, VerifyError, type ExitCodeValue } from '../errors.js';
import { compareFiles } from './files.js';
import { deltaLabel, type Cell } from './matrix.js';
import type { Net } from './net.js';
import { start, syncDisks, tail, waitFor, type ProcExit } from '../proc/proc.js';
import { PACKAGE_ROOT } from '../version.js';

/** bin/mfd.js of this package. */
export const MFD_BIN = path.join(PACKAGE_ROOT, 'bin', 'mfd.js');

export interface MfdSample {
  /** Seconds from spawning the sender to both processes' exit. */
  wallSec: number;
  /** The sender's and the receiver's own totalTimeMs, in seconds. */
  senderSec: number;
  receiverSec: number;
  imageBytes: number;
  wireBytes: number;
  wireRatio: number;
  /** user + system CPU seconds of each process. */
  sendCpuSec: number;
  recvCpuSec: number;
  sendRssBytes: number;
  recvRssBytes: number;
  /** Bytes the receiving interface saw meanwhile (lo counts the whole host's loopback traffic). */
  linkBytes: number | null;
  compressionPath: string;
  zeroPagePath: string;
  /** How the sender got the pages (map or read, and why: its --json `imageAccess`), for a method that sends them as they are. */
  imageAccess?: string;
  /** With delta transfer: how the pages travelled (the sender's --json `delta`). */
  delta?: DeltaSample;
}

/** The sender's delta counts (src/stats/stats.ts DeltaCounts), as --json gives them. */
export interface DeltaSample {
  dataPages: number;
  basePages: number;
  migrationPages: number;
  zeroPages: number;
  bytesSaved: number;
}

export interface MfdRunInput {
  cell: Cell;
  image: string;
  /** The ramblock's name: the image's file name. */
  outDir: string;
  net: Net;
  signal: AbortSignal;
  /** The receiver's --timeout (seconds without data before it gives up). */
  recvTimeoutSec?: number;
  /**
   * The image's earlier version: the output starts as a copy of it (made outside the timing), which the
   * receiver writes where it is (`--in-place`, as rsync --inplace does), with or without --delta, so
   * delta and plain runs differ only in --delta; with it the earlier version is its base and its target at once.
   */
  base?: string;
  /** Both sides with --delta (default: when there is a base). */
  delta?: boolean;
}

/** Just the fields the bench reads from `--json` (the summary has more; see src/stats.ts). */
interface JsonSummary {
  status?: string;
  totalTimeMs: number;
  imageBytes: number;
  wireBytes: number;
  wireRatio: number;
  compressionPath?: string;
  zeroPagePath?: string;
  imageAccess?: string;
  delta?: DeltaSample;
  paths?: { zeroPage?: { pages?: Record<string, number> } };
  ramblocks: { name: string; digest: string }[];
  process: { cpuUserSec: number; cpuSystemSec: number; maxRssBytes: number };
}

const KNOWN_EXIT: readonly number[] = Object.values(ExitCode);

function parseSummary(side: string, r: ProcExit): JsonSummary {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    const j = JSON.parse(line) as JsonSummary;
    if (j.status !== 'completed' || !j.process || !Array.isArray(j.ramblocks)) throw new Error(`status ${String(j.status)}`);
    return j;
  } catch (e) {
    throw new BenchError(
      'ERR_BENCH_MFD_OUTPUT',
      `mfd ${side}: no completed --json summary on stdout (${(e as Error).message}): ${tail(r.stdout)}`,
    );
  }
}

export async function runMfd(input: MfdRunInput): Promise<MfdSample> {
  const { cell, image, outDir, net, signal } = input;
  const name = path.basename(image);
  const output = path.join(outDir, name);
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  if (input.base !== undefined) fs.copyFileSync(input.base, output);
  const delta = (input.delta ?? input.base !== undefined) ? ['--delta'] : [];
  const inPlace = input.base !== undefined ? ['--in-place'] : [];
  syncDisks();

  const [rc, ra] = net.wrap('recv', process.execPath, [
    MFD_BIN,
    'recv',
    '--listen',
    `${net.recvAddr}:0`,
    '--output',
    outDir,
    '--json',
    '--no-progress',
    '--timeout',
    String(input.recvTimeoutSec ?? 60),
    // The shaped link's receiver listens on its veth address, reachable only from the bench's own namespace.
    '--insecure',
    ...delta,
    ...inPlace,
  ]);
  let onPort: ((port: number) => void) | undefined;
  const recv = start(rc, ra, {
    onStderr: (all) => {
      const m = /listening on \S*:(\d+)/.exec(all);
      if (m) onPort?.(Number(m[1]));
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new BenchError('ERR_BENCH_MFD_FAILED', `mfd recv did not listen within 30 s: ${tail(recv.stderr())}`)),
      30_000,
    );
    const onAbort = (): void => fail(new InterruptedError(String(signal.reason)));
    signal.addEventListener('abort', onAbort, { once: true });
    const settle = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      onPort = undefined;
    };
    function fail(e: Error): void {
      settle();
      recv.kill();
      reject(e);
    }
    onPort = (p) => {
      settle();
      resolve(p);
    };
    void recv.done.then((r) => onPort !== undefined && fail(failure('recv exited before listening', r)));
  });

  const [sc, sa] = net.wrap('send', process.execPath, [
    MFD_BIN,
    'send',
    '--to',
    `${net.recvAddr}:${port}`,
    '--channels',
    String(cell.channels),
    '--compression',
    cell.compression,
    '--zero-page-detection',
    cell.zeroPageDetection,
    '--json',
    '--no-progress',
    ...delta,
    image,
  ]);
  const rx0 = net.rxBytes();
  const t0 = process.hrtime.bigint();
  const send = start(sc, sa);
  // A side that fails leaves the other waiting for a peer that is gone: give it a moment, then stop it.
  const stopOther = (r: ProcExit, other: typeof recv): void => {
    if (r.code !== 0) setTimeout(() => other.kill(), 3000).unref();
  };
  void send.done.then((r) => stopOther(r, recv));
  void recv.done.then((r) => stopOther(r, send));
  const [s, v] = await Promise.all([waitFor(send, signal), waitFor(recv, signal)]);
  const wallSec = Number(process.hrtime.bigint() - t0) / 1e9;
  const linkBytes = net.rxBytes() - rx0;

  if (s.code !== 0 || v.code !== 0) {
    // The side that failed of its own accord, not the one reporting its peer's failure (exit 7).
    const failed = [s, v].filter((r) => r.code !== 0);
    const bad = failed.find((r) => r.code !== ExitCode.REMOTE) ?? failed[0]!;
    throw new BenchError(
      'ERR_BENCH_MFD_FAILED',
      `mfd run failed (${describeCell(cell)}): send exit ${s.code ?? s.signal}: ${tail(s.stderr, 3)}; recv exit ${v.code ?? v.signal}: ${tail(v.stderr, 3)}`,
      KNOWN_EXIT.includes(bad.code ?? -1) && bad.code !== 0 ? (bad.code as ExitCodeValue) : ExitCode.INTERNAL,
    );
  }
  const sj = parseSummary('send', s);
  const vj = parseSummary('recv', v);
  const sd = sj.ramblocks[0]?.digest;
  const vd = vj.ramblocks[0]?.digest;
  if (sd === undefined || sd !== vd)
    throw new VerifyError('ERR_BENCH_MISMATCH', `mfd (${describeCell(cell)}): sender digest ${sd}, receiver digest ${vd}`);
  // Byte for byte, outside the timing: the receiver's digest check is mfd's own; this one is the bench's.
  await compareFiles(image, output, `mfd (${describeCell(cell)})`);
  fs.rmSync(outDir, { recursive: true, force: true });

  return {
    wallSec,
    senderSec: sj.totalTimeMs / 1000,
    receiverSec: vj.totalTimeMs / 1000,
    imageBytes: sj.imageBytes,
    wireBytes: sj.wireBytes,
    wireRatio: sj.wireRatio,
    sendCpuSec: sj.process.cpuUserSec + sj.process.cpuSystemSec,
    recvCpuSec: vj.process.cpuUserSec + vj.process.cpuSystemSec,
    sendRssBytes: sj.process.maxRssBytes,
    recvRssBytes: vj.process.maxRssBytes,
    linkBytes: Number.isFinite(linkBytes) ? linkBytes : null,
    compressionPath: sj.compressionPath ?? '',
    ...(sj.imageAccess !== undefined ? { imageAccess: sj.imageAccess } : {}),
    // Every path that found zero pages (a sparse image's holes are one), not only the detector's.
    zeroPagePath: Object.keys(sj.paths?.zeroPage?.pages ?? {}).join(' + ') || (sj.zeroPagePath ?? ''),
    ...(sj.delta ? { delta: sj.delta } : {}),
  };
}

function failure(what: string, r: ProcExit): BenchError {
  return new BenchError('ERR_BENCH_MFD_FAILED', `mfd ${what} (exit ${r.code ?? r.signal}): ${tail(r.stderr)}`);
}

export function describeCell(c: Cell): string {
  const d = deltaLabel(c);
  return `${c.compression}, zero-page-detection ${c.zeroPageDetection}, ${c.channels} ch, ${c.profile}${d === null ? '' : `, delta ${d}`}`;
}
