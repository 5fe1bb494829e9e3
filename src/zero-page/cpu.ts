/** `multifd`: detection in the sender's channel path with the addon's SIMD scan (QEMU's default). */
import { native } from '../native/load.js';
import { analysePages } from '../native/packet-io.js';
import { registerDetector, type ZeroPageDetector } from './detector.js';

export const cpu: ZeroPageDetector = {
  name: 'multifd',
  description: 'CPU SIMD scan in the channel path (one addon call per packet)',
  analyse: (pages, pageSize, count, zeroOut, crcOut) => analysePages(pages, pageSize, count, zeroOut, crcOut),
  path: () => `cpu-${native.zeroPageAccel()}`,
};

registerDetector(cpu);
