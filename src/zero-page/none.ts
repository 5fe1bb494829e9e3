/** `none`: no detection; zero pages are sent as normal pages. */
import { analysePages } from '../native/packet-io.js';
import { registerDetector, type ZeroPageDetector } from './detector.js';

export const noDetection: ZeroPageDetector = {
  name: 'none',
  description: 'no detection: every page is sent with its data',
  hardware: false,
  check: () => 'none',
  open: ({ tally }) => ({
    async analyse(pages, pageSize, count, zeroOut, crcOut) {
      zeroOut.fill(0, 0, count);
      await analysePages(pages, pageSize, count, null, crcOut);
      tally.add('none', count);
      return 0;
    },
  }),
  failures: () => [],
};

registerDetector(noDetection);
