/** `multifd`: detection in the sender's channel path with the addon's SIMD scan (QEMU's default). */
import { native } from '../native/load.js';
import { readPacket } from '../native/packet-io.js';
import { registerDetector, type ZeroPageDetector } from './detector.js';

export const cpu: ZeroPageDetector = {
  name: 'multifd',
  description: 'CPU SIMD scan in the channel path (one addon call per packet)',
  load: (src, position, length, slab, pageSize, pageCount) => readPacket(src.fd, position, length, slab, pageSize, pageCount, true),
  path: () => `cpu-${native.zeroPageAccel()}`,
};

registerDetector(cpu);
