/** `none`: no detection; zero pages are sent as normal pages. */
import { readPacket } from '../native/packet-io.js';
import { registerDetector, type ZeroPageDetector } from './detector.js';

export const noDetection: ZeroPageDetector = {
  name: 'none',
  description: 'no detection: every page is sent with its data',
  load: (src, position, length, slab, pageSize, pageCount) => readPacket(src.fd, position, length, slab, pageSize, pageCount, false),
  path: () => 'none',
};

registerDetector(noDetection);
