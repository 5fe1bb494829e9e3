/**
 * `mfd accel`: what this machine and this build offer for offload, read from
 * the CPU (cpuid via the addon) and sysfs, what this build compiled, real
 * probes (a QPL hardware job, a QATzip hardware session, a NOOP descriptor on
 * each DSA work queue), and what a run with given flags would use. It claims
 * no probe it did not make.
 * The sysfs root can be redirected (MFD_SYSFS_ROOT) so the parsing is testable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { native, nativeFile } from '../native/load.js';
import type { CpuFeatures } from '../native/binding.js';
import { getMethod, type MethodParams } from '../methods/index.js';
import { getDetector } from '../zero-page/index.js';
import { qatzipState, qplState, STATE_TEXT, type BackendState } from '../offload/state.js';

export interface WorkQueue {
  name: string;
  device: string;
  mode: string;
  size: number;
  state: string;
  type: string;
  /** Character device a process would open. */
  path: string;
}

export interface QatEndpoint {
  bdf: string;
  deviceId: string;
  state: string;
  services: string;
  /** Compression service up: state "up" and "dc" among the services. */
  compressionUp: boolean;
}

export interface ProbeResult {
  /** What was probed (a work queue, "hardware job", "hardware session"). */
  target: string;
  ok: boolean;
  reason: string;
  /** How descriptors would be submitted (DSA): enqcmd, movdir64b, write, fake. */
  submission?: string;
}

export interface BackendReport {
  compiled: boolean;
  /** Not compiled; compiled but no device; device present but busy; hardware usable (DSA: by its probes). */
  state: BackendState;
  /** Library version when compiled ("" otherwise). */
  version: string;
  reason: string;
  /** Real probes made now: a QPL hardware job, a QATzip hardware session, a NOOP on each DSA work queue. */
  probes: ProbeResult[];
  /** The library's own software path, usable without a device (QPL's qpl_path_software, QATzip's sw_backup), when compiled. */
  softwarePath?: ProbeResult;
}

export interface RunPlan {
  /** The flags the plan is for. */
  compression: string;
  zeroPageDetection: string;
  accelPaths: string[];
  requireHardware: boolean;
  /** What each backend would run, or why the run would be refused. */
  compressionPath: string;
  zeroPagePath: string;
}

export interface AccelReport {
  cpu: Required<Pick<CpuFeatures, 'avx2' | 'avx512f' | 'avx512bw' | 'movdir64b' | 'enqcmd'>>;
  zeroPage: { accelerators: string[]; selected: string };
  devices: { iaa: WorkQueue[]; dsa: WorkQueue[]; qat: QatEndpoint[] };
  backends: { qpl: BackendReport; qatzip: BackendReport; dsa: BackendReport };
  /** The addon file in use, and the software engines found at run time. */
  software: { addon: string; isal: { version: string; file: string } | { unavailable: string }; crc32c: string };
  run: RunPlan;
}

/** QAT PCI device ids with a compression service (PF/VF of 4xxx, 401xx, 402xx, 420xx). */
const QAT_IDS = new Set(['0x4940', '0x4941', '0x4942', '0x4943', '0x4944', '0x4945', '0x4946', '0x4947']);

function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

function list(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}

export function readWorkQueues(sysfs: string): { iaa: WorkQueue[]; dsa: WorkQueue[] } {
  const base = path.join(sysfs, 'bus', 'dsa', 'devices');
  const out = { iaa: [] as WorkQueue[], dsa: [] as WorkQueue[] };
  for (const name of list(base)) {
    const m = /^wq(\d+)\.(\d+)$/.exec(name);
    if (!m) continue;
    const dir = path.join(base, name);
    // The work queue's device is its parent: iax<N> (IAA) or dsa<N>.
    const device = list(base).find((d) => d === `iax${m[1]}` || d === `dsa${m[1]}`) ?? `?${m[1]}`;
    const isIaa = device.startsWith('iax');
    const wq: WorkQueue = {
      name,
      device,
      mode: read(path.join(dir, 'mode')),
      size: Number(read(path.join(dir, 'size')) || 0),
      state: read(path.join(dir, 'state')),
      type: read(path.join(dir, 'type')),
      path: `/dev/${isIaa ? 'iax' : 'dsa'}/${name}`,
    };
    (isIaa ? out.iaa : out.dsa).push(wq);
  }
  return out;
}

export function readQatEndpoints(sysfs: string): QatEndpoint[] {
  const base = path.join(sysfs, 'bus', 'pci', 'devices');
  const out: QatEndpoint[] = [];
  for (const bdf of list(base)) {
    const deviceId = read(path.join(base, bdf, 'device'));
    const vendor = read(path.join(base, bdf, 'vendor'));
    if (vendor !== '0x8086' || !QAT_IDS.has(deviceId)) continue;
    const state = read(path.join(base, bdf, 'qat', 'state'));
    const services = read(path.join(base, bdf, 'qat', 'cfg_services'));
    out.push({ bdf, deviceId, state, services, compressionUp: state === 'up' && /\bdcc?\b|decomp/.test(services) });
  }
  return out;
}

export interface PlanFlags {
  compression: string;
  zeroPageDetection: string;
  accelPaths: string[];
  requireHardware: boolean;
  params?: MethodParams;
}

/** What `mfd send` with these flags would run here, or the error it would stop with. */
export function planRun(f: PlanFlags): RunPlan {
  const attempt = (fn: () => string): string => {
    try {
      return fn();
    } catch (e) {
      return `refused: ${(e as Error).message}`;
    }
  };
  return {
    compression: f.compression,
    zeroPageDetection: f.zeroPageDetection,
    accelPaths: f.accelPaths,
    requireHardware: f.requireHardware,
    compressionPath: attempt(() => {
      const m = getMethod(f.compression);
      return m.path({ params: m.params(f.params ?? {}), requireHardware: f.requireHardware });
    }),
    zeroPagePath: attempt(() => getDetector(f.zeroPageDetection).check({ accelPaths: f.accelPaths, requireHardware: f.requireHardware })),
  };
}

const PROBE_TIMEOUT_MS = 500;

/**
 * A backend built on an optional library (QPL, QATzip): compiled or not, its state, the hardware
 * probe, and where compiled the library's own software path (opened only then).
 */
function libraryBackend(
  hw: { ok: boolean; reason: string; version: string },
  state: BackendState,
  library: string,
  hwTarget: string,
  swTarget: string,
  openSoftware: () => { ok: boolean; reason: string },
): BackendReport {
  const compiled = hw.version !== '';
  const sw = compiled ? openSoftware() : null;
  return {
    compiled,
    state,
    version: hw.version,
    reason: compiled ? `built with ${library} ${hw.version}` : hw.reason,
    probes: [{ target: hwTarget, ok: hw.ok, reason: hw.reason }],
    ...(sw ? { softwarePath: { target: swTarget, ok: sw.ok, reason: sw.reason } } : {}),
  };
}

export function accelReport(
  sysfs = process.env.MFD_SYSFS_ROOT ?? '/sys',
  flags: PlanFlags = { compression: 'none', zeroPageDetection: 'multifd', accelPaths: [], requireHardware: false },
): AccelReport {
  const f = native.cpuFeatures();
  const wqs = readWorkQueues(sysfs);
  const qat = readQatEndpoints(sysfs);
  const qpl = native.qplHardwareOpen();
  const qz = native.qatzipHardwareOpen(1);
  // A NOOP on every DSA work queue sysfs lists and every dsa: path given.
  const dsaTargets = [
    ...new Set([...wqs.dsa.map((w) => w.path), ...flags.accelPaths.filter((p) => p.startsWith('dsa:')).map((p) => p.slice(4))]),
  ];
  const dsaProbes = dsaTargets.map((p): ProbeResult => {
    const r = native.dsaProbe(`dsa:${p}`, sysfs, PROBE_TIMEOUT_MS);
    return { target: p, ok: r.ok, reason: r.reason, ...(r.submission ? { submission: r.submission } : {}) };
  });
  return {
    cpu: { avx2: !!f.avx2, avx512f: !!f.avx512f, avx512bw: !!f.avx512bw, movdir64b: !!f.movdir64b, enqcmd: !!f.enqcmd },
    zeroPage: { accelerators: native.zeroPageAccels(), selected: native.zeroPageAccel() },
    devices: { iaa: wqs.iaa, dsa: wqs.dsa, qat },
    backends: {
      qpl: libraryBackend(qpl, qplState(qpl), 'libqpl', 'qpl_init_job(qpl_path_hardware)', 'qpl_init_job(qpl_path_software)', () =>
        native.qplSoftwareOpen(),
      ),
      qatzip: libraryBackend(qz, qatzipState(qz), 'QATzip', 'QATzip hardware session', 'QATzip session with sw_backup', () =>
        native.qatzipSoftwareOpen(1),
      ),
      dsa: {
        compiled: true,
        state: dsaProbes.some((p) => p.ok && p.submission !== 'fake') ? 'hardware' : 'no-device',
        version: '',
        reason: 'always built on x86-64 Linux (linux/idxd.h; ENQCMD and MOVDIR64B only after a CPUID check, write() submission otherwise)',
        probes:
          dsaProbes.length > 0
            ? dsaProbes
            : [{ target: 'DSA work queues', ok: false, reason: `none found under ${path.join(sysfs, 'bus', 'dsa', 'devices')}` }],
      },
    },
    software: {
      addon: nativeFile,
      isal:
        native.isalVersion !== null
          ? { version: native.isalVersion, file: native.isalFile ?? '' }
          : { unavailable: native.isalUnavailable ?? '' },
      crc32c: native.crc32cEngine,
    },
    run: planRun(flags),
  };
}

/**
 * What this build of the addon compiled in, by engine: its library version, or
 * why it is not there. QPL's and QATzip's versions come with their hardware
 * probes (quick without the hardware); the probe's outcome is not reported here.
 */
export interface CompiledEngines {
  zlib: string;
  isal: string | null;
  qpl: { version: string | null; reason: string };
  qatzip: { version: string | null; reason: string };
}

export function compiledEngines(): CompiledEngines {
  const qpl = native.qplHardwareOpen();
  const qz = native.qatzipHardwareOpen(1);
  return {
    zlib: native.zlibVersion,
    isal: native.isalVersion,
    qpl: { version: qpl.version || null, reason: qpl.version ? '' : qpl.reason },
    qatzip: { version: qz.version || null, reason: qz.version ? '' : qz.reason },
  };
}

/** One line naming each engine and its version, or "not compiled". */
export function formatEngines(e: CompiledEngines): string {
  const v = (name: string, version: string | null): string => `${name} ${version ?? 'not compiled'}`;
  return `engines: ${[v('zlib', e.zlib), v('isa-l', e.isal), v('qpl', e.qpl.version), v('qatzip', e.qatzip.version), 'dsa (x86-64 Linux)'].join(', ')}`;
}

export function formatAccel(r: AccelReport): string {
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  const wq = (w: WorkQueue): string =>
    `    ${w.name} on ${w.device}: mode ${w.mode || '?'}, size ${w.size}, state ${w.state || '?'}, type ${w.type || '?'} (${w.path})`;
  const lines = [
    `cpu: avx2 ${yes(r.cpu.avx2)}, avx512f ${yes(r.cpu.avx512f)}, avx512bw ${yes(r.cpu.avx512bw)}, movdir64b ${yes(r.cpu.movdir64b)}, enqcmd ${yes(r.cpu.enqcmd)}`,
    `zero-page scan: ${r.zeroPage.selected} (available: ${r.zeroPage.accelerators.join(', ')})`,
    `IAA work queues: ${r.devices.iaa.length === 0 ? 'none found' : ''}`,
    ...r.devices.iaa.map(wq),
    `DSA work queues: ${r.devices.dsa.length === 0 ? 'none found' : ''}`,
    ...r.devices.dsa.map(wq),
    `QAT endpoints: ${r.devices.qat.length === 0 ? 'none found' : ''}`,
    ...r.devices.qat.map(
      (q) =>
        `    ${q.bdf} (${q.deviceId}): state ${q.state || '?'}, services ${q.services || '?'}, compression ${q.compressionUp ? 'up' : 'down'}`,
    ),
  ];
  for (const [name, b] of Object.entries(r.backends)) {
    lines.push(`${name}: ${STATE_TEXT[b.state]}${b.compiled ? `, ${b.reason}` : `: ${b.reason.replace(/^not compiled: /, '')}`}`);
    if (b.compiled)
      for (const p of b.probes)
        lines.push(`    probe ${p.target}: ${p.ok ? 'ok' : 'failed'}${p.submission ? ` (${p.submission} submission)` : ''}: ${p.reason}`);
    if (b.softwarePath)
      lines.push(
        `    library software path, ${b.softwarePath.target}: ${b.softwarePath.ok ? 'usable' : 'failed'}: ${b.softwarePath.reason}`,
      );
  }
  const isal = r.software.isal;
  lines.push(
    `addon: ${r.software.addon}`,
    `isa-l: ${'version' in isal ? `${isal.version}, loaded from ${isal.file} (zlib and qatzip's software deflate and inflate, CRC-32C)` : `not available: ${isal.unavailable}`}`,
    `crc-32c: ${r.software.crc32c}`,
  );
  const run = r.run;
  lines.push(
    `a run with --compression ${run.compression} --zero-page-detection ${run.zeroPageDetection}${run.accelPaths.map((p) => ` --accel-path ${p}`).join('')}${run.requireHardware ? ' --require-hardware' : ''}:`,
    `    compression: ${run.compressionPath}`,
    `    zero pages: ${run.zeroPagePath}`,
  );
  return lines.map((l) => l.trimEnd()).join('\n');
}
