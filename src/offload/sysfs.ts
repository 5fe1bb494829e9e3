/**
 * What sysfs says about the offload devices: IAA and DSA work queues (the idxd
 * bus) and QAT endpoints (PCI). Read by `mfd accel`'s report and by the DSA
 * backend's probe. The root can be redirected (MFD_SYSFS_ROOT) so the parsing
 * is testable.
 */
import fs from 'node:fs';
import path from 'node:path';

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
