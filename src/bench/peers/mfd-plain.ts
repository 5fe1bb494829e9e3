/**
 * Plain mfd beside delta transfer: the same image into the same earlier version at the
 * destination, written in place as the delta run writes it, without --delta (every page
 * travels). Delta cells only.
 */
import path from 'node:path';
import { isDeltaCell } from '../matrix.js';
import { runMfd } from '../runner.js';
import type { Peer, PeerRunInput, PeerSample } from './peer.js';

export const mfdPlain: Peer = {
  name: 'mfd-plain',
  label: () => 'mfd without --delta',
  unavailable: () => null,
  notApplicable: (cell) =>
    isDeltaCell(cell) ? null : 'plain mfd is the cell itself: only delta cells (--changed, --base) compare with it',
  async run({ cell, image, base, workDir, net, signal }: PeerRunInput): Promise<PeerSample> {
    const s = await runMfd({ cell, image, outDir: path.join(workDir, 'mfd-plain'), net, signal, ...(base ? { base } : {}), delta: false });
    return { wallSec: s.wallSec, linkBytes: s.linkBytes, wireBytes: s.wireBytes };
  },
};
