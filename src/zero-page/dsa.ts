/**
 * `dsa-accel`: zero pages found by Intel DSA (QEMU's DSA series names:
 * zero-page-detection=dsa-accel, accel-path=dsa:/dev/dsa/wqX.Y). Each channel
 * uses one work queue, round-robin over the --accel-path list; each packet is
 * one batch of compare-pattern descriptors, submitted and polled to completion
 * in the addon on the libuv pool (addon/dsa.cc). Whatever the device does not
 * finish (page fault, failed descriptor, busy queue, failed device) is checked
 * on the CPU and counted by reason; CRC-32C for the digest is always computed
 * on the CPU, for the non-zero pages only.
 *
 * `fake-dsa:OPTIONS` selects the software stand-in the tests use (only when
 * MFD_ALLOW_FAKE_ACCEL=1, and only in a process that installed the test addon,
 * mfd_test.node: the program never does); it is reported as "fake-dsa", never
 * as hardware.
 */
import path from 'node:path';
import { AccelError, UsageError } from '../errors.js';
import { native } from '../native/load.js';
import { analysePages } from '../native/packet-io.js';
import { nativeIoError } from '../native/io-error.js';
import type { DsaQueueInfo } from '../native/binding.js';
import type { ProbeResult } from '../offload/probe.js';
import { readWorkQueues } from '../offload/sysfs.js';
import { cpuPath } from './cpu.js';
import { registerDetector, type DetectorOptions, type ZeroPageDetector } from './detector.js';

/** Milliseconds a completion may take before the device is declared failed. */
const TIMEOUT_MS = Number(process.env.MFD_DSA_TIMEOUT_MS ?? 2000);
const FAKE_ENV = 'MFD_ALLOW_FAKE_ACCEL';
/** Fields of the addon's per-scan counts (addon/dsa.h ScanCounts). */
const DEVICE = 0;
const FALLBACKS: [index: number, reason: string, missing: string][] = [
  [1, 'page-fault', 'the device faulted on the page (finished on the CPU from where it stopped)'],
  [2, 'descriptor-error', 'a descriptor failed on the device'],
  [3, 'queue-busy', 'the work queue stayed busy past the retries'],
  [4, 'device-failed', 'the DSA device failed earlier in the run'],
];

interface Queue {
  accelPath: string;
  id: number;
  info: DsaQueueInfo;
}

/** Native spec for an --accel-path value, or a UsageError. */
function nativeSpec(p: string): string {
  if (p.startsWith('dsa:')) return p;
  if (p.startsWith('fake-dsa:')) {
    if (process.env[FAKE_ENV] !== '1')
      throw new UsageError(`--accel-path ${p}: the fake DSA work queue is for tests; set ${FAKE_ENV}=1 to use it`, 'ERR_ACCEL_PATH');
    return `fake:${p.slice('fake-dsa:'.length)}`;
  }
  throw new UsageError(`Expected dsa:/dev/dsa/wqX.Y for --accel-path but received "${p}"`, 'ERR_ACCEL_PATH');
}

/** How long `mfd accel` waits for a work queue's NOOP. */
const PROBE_TIMEOUT_MS = 500;

const sysfsRoot = (): string => process.env.MFD_SYSFS_ROOT ?? '/sys';

/** Opens (once per process) the queue an --accel-path names; the reason on failure. */
function openQueue(accelPath: string): Queue | { accelPath: string; error: string } {
  try {
    const info = native.dsaOpen(nativeSpec(accelPath), sysfsRoot());
    return { accelPath, id: info.id, info };
  } catch (e) {
    if (e instanceof UsageError) throw e;
    return { accelPath, error: (e as Error).message };
  }
}

function queuePath(q: Queue): string {
  return q.info.hardware ? 'dsa' : 'fake-dsa';
}

function dsaPaths(o: DetectorOptions): string[] {
  const paths = o.accelPaths.filter((p) => !p.startsWith('iaa:') && !p.startsWith('qat:'));
  if (paths.length === 0)
    throw new UsageError('--zero-page-detection dsa-accel needs at least one --accel-path dsa:/dev/dsa/wqX.Y', 'ERR_ACCEL_PATH');
  return paths;
}

const opened = new Set<number>();

export const dsaAccel: ZeroPageDetector = {
  name: 'dsa-accel',
  description:
    'Intel DSA compare-pattern batches, one per packet (needs --accel-path dsa:/dev/dsa/wqX.Y); CPU for what the device does not finish',
  hardware: true,
  probe({ sysfs, accelPaths }) {
    // A NOOP on every DSA work queue sysfs lists and every dsa: path given.
    const targets = [
      ...new Set([
        ...readWorkQueues(sysfs).dsa.map((w) => w.path),
        ...accelPaths.filter((p) => p.startsWith('dsa:')).map((p) => p.slice(4)),
      ]),
    ];
    const probes = targets.map((p): ProbeResult => {
      const r = native.dsaProbe(`dsa:${p}`, sysfs, PROBE_TIMEOUT_MS);
      return { target: p, ok: r.ok, reason: r.reason, ...(r.submission ? { submission: r.submission } : {}) };
    });
    return {
      backend: 'dsa',
      report: {
        compiled: true,
        state: probes.some((p) => p.ok && p.submission !== 'fake') ? 'hardware' : 'no-device',
        version: '',
        reason: 'always built on x86-64 Linux (linux/idxd.h; ENQCMD and MOVDIR64B only after a CPUID check, write() submission otherwise)',
        probes:
          probes.length > 0
            ? probes
            : [{ target: 'DSA work queues', ok: false, reason: `none found under ${path.join(sysfs, 'bus', 'dsa', 'devices')}` }],
      },
    };
  },
  check(o) {
    const queues = dsaPaths(o).map(openQueue);
    const parts: string[] = [];
    for (const q of queues) {
      if ('error' in q) {
        if (o.requireHardware)
          throw new AccelError(
            'ERR_DSA_UNAVAILABLE',
            `--accel-path ${q.accelPath}: ${q.error}; --require-hardware forbids the CPU fallback`,
          );
        parts.push(`${q.accelPath}: unavailable (${q.error}), ${cpuPath()} instead`);
        continue;
      }
      if (o.requireHardware && !q.info.hardware) {
        throw new AccelError(
          'ERR_DSA_UNAVAILABLE',
          `--accel-path ${q.accelPath} is a software stand-in, not hardware; --require-hardware needs a DSA work queue`,
        );
      }
      opened.add(q.id);
      parts.push(
        `${q.accelPath}: ${queuePath(q)} via ${q.info.submission}${q.info.batches ? `, batches of up to ${q.info.maxBatch}` : ', single descriptors'}`,
      );
    }
    return `dsa-accel (${parts.join('; ')})`;
  },
  open({ channel, tally, ...o }) {
    const paths = dsaPaths(o);
    const q = openQueue(paths[channel % paths.length]!);
    if ('error' in q) {
      return {
        async analyse(pages, pageSize, count, zeroOut, crcOut) {
          const zeros = await analysePages(pages, pageSize, count, zeroOut, crcOut);
          tally.add(cpuPath(), count);
          tally.fallback('no-device', count, `no usable DSA work queue (${q.error})`);
          return zeros;
        },
      };
    }
    const counts = new Float64Array(8);
    return {
      analyse(pages, pageSize, count, zeroOut, crcOut) {
        return new Promise((resolve, reject) => {
          native.dsaScan(q.id, pages, pageSize, count, zeroOut, crcOut, counts, TIMEOUT_MS, (err, r) => {
            if (err) return reject(err);
            if (r < 0) return reject(nativeIoError(r, { on: 'pages', op: 'scan' }));
            try {
              tally.add(queuePath(q), counts[DEVICE]!, counts[DEVICE]! > 0 ? 1 : 0);
              const cpu = FALLBACKS.reduce((a, [i]) => a + counts[i]!, 0);
              tally.add(cpuPath(), cpu, cpu > 0 ? 1 : 0);
              for (const [i, reason, missing] of FALLBACKS) tally.fallback(reason, counts[i]!, missing);
            } catch (e) {
              return reject(e);
            }
            resolve(r);
          });
        });
      },
    };
  },
  failures() {
    const out: string[] = [];
    for (const id of opened) {
      const s = native.dsaStatus(id);
      if (s.failed) out.push(`DSA device ${id}: ${s.reason}; the CPU checks the rest of the run`);
    }
    return out;
  },
};

registerDetector(dsaAccel);
