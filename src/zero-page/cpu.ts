/** `multifd`: detection in the sender's channel path with the addon's SIMD scan (QEMU's default). */
import { native } from '../native/load.js';
import { analysePages, analysePagesHere } from '../native/packet-io.js';
import { HOLE_PATH, registerDetector, type ZeroPageDetector } from './detector.js';

/** The CPU scan's path name, e.g. "cpu-avx2". */
export const cpuPath = (): string => `cpu-${native.zeroPageAccel()}`;

export const cpu: ZeroPageDetector = {
  name: 'multifd',
  description: 'CPU SIMD scan in the channel path (one addon call per packet)',
  hardware: false,
  check: () => cpuPath(),
  skipsHoles: true,
  open: ({ tally, onWorker }) => ({
    async analyse(pages, pageSize, count, zeroOut, crcOut, holes) {
      const zeros = onWorker
        ? analysePagesHere(pages, pageSize, count, zeroOut, crcOut, holes ?? null)
        : await analysePages(pages, pageSize, count, zeroOut, crcOut, holes ?? null);
      let unread = 0;
      if (holes) for (let i = 0; i < count; i++) unread += holes[i]!;
      if (unread > 0) tally.add(HOLE_PATH, unread);
      tally.add(cpuPath(), count - unread);
      return zeros;
    },
  }),
  failures: () => [],
};

registerDetector(cpu);
