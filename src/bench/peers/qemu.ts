/**
 * QEMU's own multifd migration of the image: two paused QEMUs (`-M none`, `-S`) whose guest RAM is
 * a memory-backend-file with share=on, the image on the source and the output on the destination;
 * multifd on both sides with the cell's channel count and method, max-bandwidth lifted (QEMU's
 * default throttles), and completion polled over QMP on both sides. Timed from `migrate` to both
 * sides reporting completed (QEMU's start-up is outside the time, unlike mfd's). The destination
 * file is compared with the image after both QEMUs have quit. Both QEMUs are one binary: the
 * system's, or the one `--qemu-binary` names (e.g. the QEMU 10.0 that .ci/fetch-qemu10 fetches);
 * the label carries the version it reported.
 */
import fs from 'node:fs';
import path from 'node:path';
import { compareFiles } from '../files.js';
import type { Cell } from '../matrix.js';
import { cpuSec, sleep, start, syncDisks, which, type Proc } from '../../proc/proc.js';
import {
  enableMultifd,
  fileBackedRam,
  Qmp,
  QmpError,
  qemuAtLeast,
  qemuVersion,
  quitQemus,
  unthrottle,
  QEMU,
  type MigrateInfo,
} from '../../qemu/qmp.js';
import { PeerNotApplicable, type Peer, type PeerRunInput, type PeerSample } from './peer.js';
import { getMethod } from '../../methods/index.js';

/**
 * A QEMU peer running `binary` (a name on PATH or a path): `qemu`, the system's unless
 * --qemu-binary names another, or `qemu10`, the QEMU 10.0 .ci/fetch-qemu10 fetches unless
 * --qemu10-binary names another; both can run in one bench, pair by pair with mfd.
 */
export function qemuPeer(binary: string = QEMU, name: 'qemu' | 'qemu10' = 'qemu'): Peer {
  const version = (): string => qemuVersion(binary) ?? 'unknown';
  const flag = name === 'qemu' ? '--qemu-binary' : '--qemu10-binary';
  return {
    name,
    label: () => `QEMU ${version()} multifd${binary === QEMU ? '' : ` (${binary})`}`,
    unavailable: () => {
      if (binary === QEMU) return which(QEMU) ? null : `${QEMU} is not installed (Debian: apt-get install qemu-system-x86)`;
      if (name === 'qemu10' && !fs.existsSync(binary))
        return `QEMU 10.0 is not at ${binary}: run npm run fetch-qemu10 (Debian's bookworm-backports build), or name one with --qemu10-binary`;
      return qemuVersion(binary) ? null : `${flag} ${binary} does not run or prints no version (--version)`;
    },
    notApplicable(cell: Cell): string | null {
      // The methods QEMU's multifd-compression has, as the registry marks them (qpl from 9.1, qatzip from 9.2, when built with them).
      if (!getMethod(cell.compression).qemuCompatible) return `QEMU has no ${cell.compression} multifd compression`;
      if (cell.sizeBytes % 4096 !== 0) return 'QEMU needs a RAM size in whole pages';
      // zero-page-detection came in QEMU 9.0; before it, zero pages are always found (by the migration thread).
      if (cell.zeroPageDetection === 'none' && !qemuAtLeast(version(), 9, 0)) {
        return `QEMU ${version()} cannot turn zero-page detection off (zero-page-detection is QEMU 9.0+)`;
      }
      return null;
    },
    note(cell: Cell): string | null {
      if (cell.zeroPageDetection === 'multifd' && !qemuAtLeast(version(), 9, 0)) {
        return `QEMU ${version()} finds zero pages in its migration thread (no zero-page-detection parameter before 9.0)`;
      }
      return null;
    },
    run: (input) => qemuMigrate(binary, input),
  };
}

async function qemuMigrate(binary: string, { cell, image, imageBytes, workDir, net: link, signal }: PeerRunInput): Promise<PeerSample> {
  const out = path.join(workDir, 'qemu-out.ram');
  const dstSock = path.join(workDir, 'qemu-dst.qmp');
  const srcSock = path.join(workDir, 'qemu-src.qmp');
  for (const f of [out, dstSock, srcSock]) fs.rmSync(f, { force: true });
  syncDisks();
  const machine = (mem: string): string[] => ['-display', 'none', '-S', ...fileBackedRam('none', mem, imageBytes)];
  const procs: Proc[] = [];
  const qmps: Qmp[] = [];
  const spawnQemu = (side: 'send' | 'recv', args: string[]): Proc => {
    const [c, a] = link.wrap(side, binary, args);
    const p = start(c, a);
    procs.push(p);
    return p;
  };
  try {
    const dst = spawnQemu('recv', [...machine(out), '-incoming', 'defer', '-qmp', `unix:${dstSock},server=on,wait=off`]);
    const src = spawnQemu('send', [...machine(image), '-qmp', `unix:${srcSock},server=on,wait=off`]);
    const qd = await Qmp.connect(dstSock, 'destination', dst, signal);
    qmps.push(qd);
    const qs = await Qmp.connect(srcSock, 'source', src, signal);
    qmps.push(qs);
    const params: Record<string, unknown> = { 'multifd-channels': cell.channels, 'multifd-compression': cell.compression };
    const has = await qs.cmd<Record<string, unknown>>('query-migrate-parameters');
    if ('zero-page-detection' in has) params['zero-page-detection'] = cell.zeroPageDetection;
    for (const q of [qd, qs]) {
      try {
        await enableMultifd(q, params);
      } catch (e) {
        if (e instanceof QmpError)
          throw new PeerNotApplicable(`QEMU ${qemuVersion(binary) ?? binary} refused the parameters (${e.message})`);
        throw e;
      }
    }
    await unthrottle(qs);
    await qd.cmd('migrate-incoming', { uri: `tcp:${link.recvAddr}:0` });
    const port = Number((await qd.cmd<MigrateInfo>('query-migrate'))['socket-address']?.[0]?.port);
    if (!port) throw new Error('QEMU destination: no listening port in query-migrate');
    const rx0 = link.rxBytes();
    const t0 = process.hrtime.bigint();
    await qs.cmd('migrate', { uri: `tcp:${link.recvAddr}:${port}` });
    const done = { src: false, dst: false };
    let lastMoved = { bytes: -1, at: Date.now() };
    for (;;) {
      if (!done.src) {
        const s = await qs.cmd<MigrateInfo>('query-migrate');
        if (s.status === 'failed') throw new Error(`QEMU source: migration failed: ${s['error-desc'] ?? ''}`);
        done.src = s.status === 'completed';
        const moved = s.ram?.transferred ?? 0;
        if (moved !== lastMoved.bytes) lastMoved = { bytes: moved, at: Date.now() };
        else if (!done.src && Date.now() - lastMoved.at > 60_000) throw new Error(`QEMU source: no progress for 60 s (status ${s.status})`);
      }
      if (!done.dst) {
        const d = await qd.cmd<MigrateInfo>('query-migrate');
        if (d.status === 'failed') throw new Error(`QEMU destination: migration failed: ${d['error-desc'] ?? ''}`);
        done.dst = d.status === 'completed';
      }
      if (done.src && done.dst) break;
      await sleep(5, signal);
    }
    const wallSec = Number(process.hrtime.bigint() - t0) / 1e9;
    const linkBytes = link.rxBytes() - rx0;
    // Both QEMUs have finished the migration and sit paused: what they used is the migration's (and start-up's).
    const cpu = { sendCpuSec: cpuSec(src.pid), recvCpuSec: cpuSec(dst.pid) };
    await quitQemus(qmps, procs);
    await compareFiles(image, out, `QEMU (${cell.compression}, ${cell.channels} ch)`);
    return { wallSec, linkBytes: Number.isFinite(linkBytes) ? linkBytes : null, ...finite(cpu) };
  } finally {
    await quitQemus(qmps, procs);
    for (const f of [out, dstSock, srcSock]) fs.rmSync(f, { force: true });
  }
}

/** The fields whose value is a number (a CPU count read from a process that had gone is NaN). */
function finite<T extends Record<string, number>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => Number.isFinite(v))) as Partial<T>;
}
