/** What every peer implements: a check that it can run here, and one measured transfer of the image. */
import type { Cell, PeerName } from '../matrix.js';
import type { Net } from '../net.js';

export interface PeerRunInput {
  cell: Cell;
  image: string;
  imageBytes: number;
  /** A scratch directory for this peer's output and sockets; the peer removes its output. */
  workDir: string;
  net: Net;
  signal: AbortSignal;
  /** A delta cell's earlier version of the image, which the destination holds before the run. */
  base?: string;
}

/** One run of a peer. Wall-clock peers give wallSec; iperf3 gives bytesPerSec. */
export interface PeerSample {
  wallSec?: number;
  /** iperf3: the rate the link carried (bytes per second of payload). */
  bytesPerSec?: number;
  /** Bytes the receiving interface saw during the run. */
  linkBytes?: number | null;
  /** Bytes the tool itself says it moved (rsync's --stats; plain mfd's wire bytes). */
  wireBytes?: number;
  /** CPU seconds of the sending and the receiving side, where the peer has them (QEMU's processes). */
  sendCpuSec?: number;
  recvCpuSec?: number;
}

export interface Peer {
  name: PeerName;
  /** For the report: "iperf3 3.12", "QEMU 7.2.22 multifd". */
  label(): string;
  /** Why this peer cannot run on this machine (a tool missing), or null. */
  unavailable(): string | null;
  /** Why this peer has nothing to compare in this cell (e.g. QEMU has no lz4), or null. Known before running. */
  notApplicable(cell: Cell): string | null;
  /** A note for the report about how the peer ran in this cell, if any. */
  note?(cell: Cell): string | null;
  /** One measured run; its output (if any) compared with the image outside the timing. */
  run(input: PeerRunInput): Promise<PeerSample>;
}

/**
 * A peer found, while running, that it cannot do this cell (QEMU refusing a parameter value):
 * the cell records the reason and skips the peer. Never leaves the bench.
 */
export class PeerNotApplicable extends Error {
  readonly code = 'ERR_BENCH_PEER_NOT_APPLICABLE';
}
