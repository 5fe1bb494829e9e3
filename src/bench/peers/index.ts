/** The peers by name, and which of them a bench run uses. */
import { UsageError } from '../../errors.js';
import { PEER_NAMES, type PeerName } from '../matrix.js';
import { iperf3 } from './iperf3.js';
import { nc } from './nc.js';
import type { Peer } from './peer.js';
import { qemuPeer } from './qemu.js';
import { qemu10Binary } from '../../qemu/qmp.js';
import { zstdNc } from './zstd-nc.js';
import { zstdFloor } from './zstd-floor.js';
import { rsync } from './rsync.js';
import { mfdPlain } from './mfd-plain.js';

export type { Peer, PeerRunInput, PeerSample } from './peer.js';
export { PeerNotApplicable } from './peer.js';

/** How the peers are set up: the QEMU binaries the qemu peers run (default: the system's; the fetched QEMU 10.0). */
export interface PeerOptions {
  qemuBinary?: string;
  qemu10Binary?: string;
}

export function peers(o: PeerOptions = {}): Record<PeerName, Peer> {
  return {
    iperf3,
    nc,
    'zstd-nc': zstdNc,
    'zstd-floor': zstdFloor,
    qemu: qemuPeer(o.qemuBinary),
    qemu10: qemuPeer(o.qemu10Binary ?? qemu10Binary(), 'qemu10'),
    rsync,
    'mfd-plain': mfdPlain,
  };
}

export interface PeerChoice {
  peers: Peer[];
  /** Peers left out, and why. */
  skipped: { name: PeerName; reason: string }[];
}

/**
 * `asked` undefined: every peer this machine can run, the others skipped with the reason.
 * Peers asked for by name must be runnable: a missing one is a usage error naming the package.
 */
export function choosePeers(
  asked: PeerName[] | undefined,
  unavailable: (p: Peer) => string | null = (p) => p.unavailable(),
  o: PeerOptions = {},
): PeerChoice {
  const out: PeerChoice = { peers: [], skipped: [] };
  const all = peers(o);
  for (const name of PEER_NAMES) {
    const p = all[name];
    if (asked && !asked.includes(name)) continue;
    const why = unavailable(p);
    if (why === null) out.peers.push(p);
    else if (asked) throw new UsageError(`--peers ${name}: ${why}`, 'ERR_BENCH_PEER_UNAVAILABLE');
    else out.skipped.push({ name, reason: why });
  }
  return out;
}
