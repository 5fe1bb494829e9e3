/**
 * `mfd accel`: what this machine and this build offer for offload, read from
 * the CPU (cpuid via the addon) and sysfs, what this build compiled, real
 * probes (a QPL hardware job, a QATzip hardware session, a NOOP descriptor on
 * each DSA work queue), and what a run with given flags would use. It claims
 * no probe it did not make.
 * The backends come from the registries: every method and zero-page backend
 * that has a probe() reports itself. The sysfs root can be redirected
 * (MFD_SYSFS_ROOT) so the parsing is testable.
 */
import { DELTA_UNAVAILABLE, native, nativeFile } from '../native/load.js';
import type { CpuFeatures } from '../native/binding.js';
import { getMethod, listMethods, type MethodParams } from '../methods/index.js';
import { getDetector, listDetectors } from '../zero-page/index.js';
import { STATE_TEXT } from '../offload/state.js';
import type { BackendReport, ProbeContext } from '../offload/probe.js';
import { readQatEndpoints, readWorkQueues, type QatEndpoint, type WorkQueue } from '../offload/sysfs.js';

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
  /** Each backend with hardware behind it, by name (qpl, qatzip, dsa): what its method's or zero-page backend's probe() reports. */
  backends: Record<string, BackendReport>;
  /** The addon file in use, and the software engines found at run time. */
  software: {
    addon: string;
    isal: { version: string; file: string } | { unavailable: string };
    crc32c: string;
    /** Delta transfer's fingerprint hash: the XXH3 kernel that runs and those this CPU has, or why there is none. */
    deltaHash: { kernel: string; kernels: string[] } | { unavailable: string };
  };
  run: RunPlan;
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

/**
 * Every backend with hardware behind it, by its name: what each method and zero-page backend of the
 * registries reports of itself (its probe()), in registration order.
 */
function probeBackends(ctx: ProbeContext): Record<string, BackendReport> {
  const probes = [...listMethods().map((m) => getMethod(m).probe), ...listDetectors().map((d) => getDetector(d).probe)];
  return Object.fromEntries(
    probes.flatMap((probe) => {
      const p = probe?.(ctx);
      return p ? [[p.backend, p.report]] : [];
    }),
  );
}

export function accelReport(
  sysfs = process.env.MFD_SYSFS_ROOT ?? '/sys',
  flags: PlanFlags = { compression: 'none', zeroPageDetection: 'multifd', accelPaths: [], requireHardware: false },
): AccelReport {
  const f = native.cpuFeatures();
  const wqs = readWorkQueues(sysfs);
  const qat = readQatEndpoints(sysfs);
  return {
    cpu: { avx2: !!f.avx2, avx512f: !!f.avx512f, avx512bw: !!f.avx512bw, movdir64b: !!f.movdir64b, enqcmd: !!f.enqcmd },
    zeroPage: { accelerators: native.zeroPageAccels(), selected: native.zeroPageAccel() },
    devices: { iaa: wqs.iaa, dsa: wqs.dsa, qat },
    backends: probeBackends({ sysfs, accelPaths: flags.accelPaths }),
    software: {
      addon: nativeFile,
      isal:
        native.isalVersion !== null
          ? { version: native.isalVersion, file: native.isalFile ?? '' }
          : { unavailable: native.isalUnavailable ?? '' },
      crc32c: native.crc32cEngine,
      deltaHash: native.deltaHashKernel
        ? { kernel: native.deltaHashKernel, kernels: native.deltaHashKernels ?? [] }
        : { unavailable: DELTA_UNAVAILABLE },
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
  /** liblz4 and libzstd (the lz4 and zstd methods' default engines), xxHash (delta transfer's fingerprints): null when not compiled in. */
  lz4: string | null;
  zstd: string | null;
  xxhash: string | null;
  qpl: { version: string | null; reason: string };
  qatzip: { version: string | null; reason: string };
}

export function compiledEngines(): CompiledEngines {
  const qpl = native.qplHardwareOpen();
  const qz = native.qatzipHardwareOpen(1);
  return {
    zlib: native.zlibVersion,
    isal: native.isalVersion,
    lz4: native.lz4Version,
    zstd: native.zstdVersion,
    // XXH_VERSION_NUMBER: major * 10000 + minor * 100 + release.
    xxhash: native.xxhashVersion
      ? [Math.floor(native.xxhashVersion / 10000), Math.floor(native.xxhashVersion / 100) % 100, native.xxhashVersion % 100].join('.')
      : null,
    qpl: { version: qpl.version || null, reason: qpl.version ? '' : qpl.reason },
    qatzip: { version: qz.version || null, reason: qz.version ? '' : qz.reason },
  };
}

/** One line naming each engine and its version, or "not compiled". */
export function formatEngines(e: CompiledEngines): string {
  const v = (name: string, version: string | null): string => `${name} ${version ?? 'not compiled'}`;
  return `engines: ${[v('zlib', e.zlib), v('isa-l', e.isal), v('lz4', e.lz4), v('zstd', e.zstd), v('xxhash', e.xxhash), v('qpl', e.qpl.version), v('qatzip', e.qatzip.version), 'dsa (x86-64 Linux)'].join(', ')}`;
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
    `delta fingerprints: ${'kernel' in r.software.deltaHash ? `xxh3-128 ${r.software.deltaHash.kernel} (available: ${r.software.deltaHash.kernels.join(', ')})` : `not available: ${r.software.deltaHash.unavailable}`}`,
  );
  const run = r.run;
  lines.push(
    `a run with --compression ${run.compression} --zero-page-detection ${run.zeroPageDetection}${run.accelPaths.map((p) => ` --accel-path ${p}`).join('')}${run.requireHardware ? ' --require-hardware' : ''}:`,
    `    compression: ${run.compressionPath}`,
    `    zero pages: ${run.zeroPagePath}`,
  );
  return lines.map((l) => l.trimEnd()).join('\n');
}
