/**
 * `mfd accel`: what this machine and this build offer for offload, read from
 * the CPU (cpuid via the addon) and sysfs, and what a run would use. It claims
 * no probe it did not make: this build compiles no QPL, QATzip or DSA backend,
 * so those say "not compiled" with the reason, and list the devices sysfs shows.
 * The sysfs root can be redirected (MFD_SYSFS_ROOT) so the parsing is testable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../native/load.js';
import type { CpuFeatures } from '../native/binding.js';

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

export interface BackendReport {
  compiled: boolean;
  reason: string;
  /** What a run with this method or mode does on this build and machine. */
  path: string;
}

export interface AccelReport {
  cpu: Required<Pick<CpuFeatures, 'avx2' | 'avx512f' | 'avx512bw' | 'movdir64b' | 'enqcmd'>>;
  zeroPage: { accelerators: string[]; selected: string };
  devices: { iaa: WorkQueue[]; dsa: WorkQueue[]; qat: QatEndpoint[] };
  backends: { qpl: BackendReport; qatzip: BackendReport; dsa: BackendReport };
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

export function accelReport(sysfs = process.env.MFD_SYSFS_ROOT ?? '/sys'): AccelReport {
  const f = native.cpuFeatures();
  const wqs = readWorkQueues(sysfs);
  const qat = readQatEndpoints(sysfs);
  const notCompiled = (lib: string): string => `mfd does not compile a ${lib} backend yet`;
  return {
    cpu: { avx2: !!f.avx2, avx512f: !!f.avx512f, avx512bw: !!f.avx512bw, movdir64b: !!f.movdir64b, enqcmd: !!f.enqcmd },
    zeroPage: { accelerators: native.zeroPageAccels(), selected: native.zeroPageAccel() },
    devices: { iaa: wqs.iaa, dsa: wqs.dsa, qat },
    backends: {
      qpl: { compiled: false, reason: notCompiled('QPL (IAA)'), path: '--compression qpl runs its software path (raw deflate, 4 KiB window) on every page' },
      qatzip: { compiled: false, reason: notCompiled('QATzip (QAT)'), path: '--compression qatzip runs its software path (gzip members with QZ headers)' },
      dsa: { compiled: false, reason: notCompiled('DSA'), path: `zero pages are found by the CPU scan (${native.zeroPageAccel()}); --zero-page-detection dsa-accel is not available` },
    },
  };
}

export function formatAccel(r: AccelReport): string {
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  const wq = (w: WorkQueue): string => `    ${w.name} on ${w.device}: mode ${w.mode || '?'}, size ${w.size}, state ${w.state || '?'}, type ${w.type || '?'} (${w.path})`;
  const lines = [
    `cpu: avx2 ${yes(r.cpu.avx2)}, avx512f ${yes(r.cpu.avx512f)}, avx512bw ${yes(r.cpu.avx512bw)}, movdir64b ${yes(r.cpu.movdir64b)}, enqcmd ${yes(r.cpu.enqcmd)}`,
    `zero-page scan: ${r.zeroPage.selected} (available: ${r.zeroPage.accelerators.join(', ')})`,
    `IAA work queues: ${r.devices.iaa.length === 0 ? 'none found' : ''}`,
    ...r.devices.iaa.map(wq),
    `DSA work queues: ${r.devices.dsa.length === 0 ? 'none found' : ''}`,
    ...r.devices.dsa.map(wq),
    `QAT endpoints: ${r.devices.qat.length === 0 ? 'none found' : ''}`,
    ...r.devices.qat.map((q) => `    ${q.bdf} (${q.deviceId}): state ${q.state || '?'}, services ${q.services || '?'}, compression ${q.compressionUp ? 'up' : 'down'}`),
  ];
  for (const [name, b] of Object.entries(r.backends)) lines.push(`${name}: ${b.compiled ? 'compiled' : 'not compiled'}: ${b.reason}; ${b.path}`);
  return lines.map((l) => l.trimEnd()).join('\n');
}
