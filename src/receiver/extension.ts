/**
 * Where an extension of the receiving side (delta transfer, src/delta/receiver.ts)
 * plugs in: the receiver and the file restore (src/file/restore.ts) define
 * what it is asked, and whoever assembles the migration (src/migrate/) wires it
 * in. Neither path knows what the extension does with its packets.
 */
import type { Logger } from '../log.js';
import type { Hello, Ready } from '../control/protocol.js';
import type { Stash } from '../control/delta.js';
import type { ControlChannel } from '../transport/control-channel.js';
import type { PacketHeader } from '../wire/packet.js';
import type { RunStats } from '../stats/stats.js';
import type { TargetBlock } from './data-channel.js';

/**
 * The handler of a migration's extension packets (delta reference packets),
 * which the data channels accept once it is there (ChannelHost.refs). Contract:
 * apply() takes each such packet (its header checked) and resolves with the
 * pages it stood for, each marked received and digested; finish() runs once
 * every channel has drained, before verification, for the work that waited
 * for them; stats() adds its counts to the run's statistics; close() is called
 * once the migration is over, either way, and releases what it holds once
 * nothing is in flight.
 */
export interface PacketExtension {
  apply(h: PacketHeader, payload: Uint8Array[], channel: number): Promise<number>;
  finish(): Promise<void>;
  stats(stats: RunStats): void;
  close(): void;
}

/** What the receiver hands an extension when a migration is set up (its outputs open). */
export interface RecvSetup {
  hello: Hello;
  /** Each ramblock's final path, in the hello's order. */
  finals: string[];
  blocks: Map<string, TargetBlock>;
  headerSize: number;
  log: Logger;
  /** Pages the extension wrote into an output, for its journal. */
  onWritten?: (block: TargetBlock, offsets: ArrayLike<number>, count: number) => void;
}

/**
 * An extension of the network receiver (src/delta/receiver.ts's deltaReceiver).
 * Contract: open() is called once a migration's outputs are open (never on a
 * resume) and returns null when the hello does not ask for it; else the
 * migration's extension is what it returns (OpenExtension).
 */
export interface RecvExtension {
  open(setup: RecvSetup): OpenExtension | null;
  /**
   * Before any output is touched (not on a resume): refuses outputs the
   * extension cannot serve (`finals`, the outputs' final paths; `inPlace`,
   * whether they are written where they are) with a UsageError.
   */
  checkTargets?(hello: Hello, finals: string[], inPlace: boolean): void;
}

/**
 * A network migration's extension: offer() runs before `ready`, may send
 * frames of its own on the control channel, and returns the fields it adds to
 * `ready` (after `have`); then it handles the extension packets.
 */
export interface OpenExtension extends PacketExtension {
  offer(ctl: ControlChannel): Promise<Pick<Ready, 'delta'>>;
  /**
   * The sender's `stash` frames after `ready` (`first`, the first of them):
   * reads the rest, acts on them before any page is written (the sender
   * connects its channels only once answered) and answers on `ctl`.
   */
  stash?(ctl: ControlChannel, first: Stash): Promise<void>;
}
