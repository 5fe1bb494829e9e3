/** `none`: no detection; zero pages are sent as normal pages. */
import { analysePages } from '../native/packet-io.js';
import { registerDetector, type ZeroPageDetector } from './detector.js';

export const noDetection: ZeroPageDetector = {
  name: 'none',
  description: 'no detection: every page is sent with its data',
  async analyse(pages, pageSize, count, zeroOut, crcOut) {
    zeroOut.fill(0, 0, count);
    await analysePages(pages, pageSize, count, null, crcOut);
    return 0;
  },
  path: () => 'none',
};

registerDetector(noDetection);
