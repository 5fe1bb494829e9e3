/**
 * The compression-method contract, after QEMU's MultiFDMethods ops table.
 * One file per method under src/methods/: it declares its options `as const`,
 * makes the method with defineMethod() (so its calls see its parameters typed),
 * adds it to MethodRegistry (declare module) and ends with registerMethod().
 * Nothing outside src/methods/registry.ts looks a method up by name.
 *
 * Lifecycle per migration, per channel:
 *   sender:   sendSetup() once -> prepare() for every packet with pages, in
 *             the order the packets are written -> cleanup() once.
 *   receiver: recvSetup() once -> recv() for every packet with normal pages,
 *             in the order the packets arrived on that channel -> cleanup().
 *             A receiver whose stream lives in the addon may also offer it to
 *             the channel's own thread (`thread`): the channel then has each
 *             packet decoded there or by recv(), one at a time, in order.
 * Stream methods (zlib, zstd) keep history across a channel's packets, which
 * is why both calls are made in channel order and never shared by channels.
 */

import type { ProtocolError } from '../errors.js';
import type { DecoderHandle } from '../native/binding.js';
import type { PathTally } from '../offload/paths.js';
import type { BackendProbe, ProbeContext } from '../offload/probe.js';

/**
 * Parameters both sides agree on in the hello (levels and the like), as they cross the wire or a
 * file's header: unchecked until a method's params() has checked them against its options.
 */
export type MethodParams = Record<string, number | string | boolean>;

export interface MethodSetup<P extends object = MethodParams> {
  channel: number;
  /** The migration's channel count (default 1): a method sizes per-channel state from it, so all channels' fit in memory. */
  channels?: number;
  pageSize: number;
  /** The parameters params() checked and completed, typed as the method's options declare. */
  params: P;
  /**
   * The channel's path counts: prepare() and recv() add every packet's pages
   * under the path that handled them, and every fallback with its reason.
   * Made with requireHardware, a fallback throws (--require-hardware).
   */
  tally: PathTally;
}

export interface PathOptions<P extends object = MethodParams> {
  params: P;
  /** --require-hardware: throw AccelError naming what is missing instead of taking a software path. */
  requireHardware: boolean;
  /**
   * The receiving side (the parameters came from the sender): a software engine the sender asked
   * for and this build lacks is replaced by one that decodes the same format, never refused.
   */
  receiving?: boolean;
}

export interface MethodSender {
  /**
   * Builds the payload for one packet. `pages` are the packet's normal pages
   * as runs of whole pages (views into the caller's slab, in offset order,
   * `normalPages` pages in all). Returns the chunks to write after the header;
   * they may be the same views (no copy) and must stay valid until written.
   * The caller puts their total length in next_packet_size.
   *
   * `out`, given to offloaded methods: a buffer of the caller's, at least
   * maxPayload(normalPages) bytes, recycled from packet to packet. A method
   * that can writes its payload there from the first byte and returns that
   * view (no allocation per packet); one that cannot returns buffers of its
   * own, which the caller copies into `out`. Without `out`, a method returns
   * buffers of its own.
   */
  prepare(pages: Uint8Array[], normalPages: number, out?: Uint8Array): Uint8Array[] | Promise<Uint8Array[]>;
  /** Frees what sendSetup made. Called once, also after a failure. */
  cleanup(): void;
}

export interface MethodReceiver {
  /**
   * Decodes one packet's payload (exactly next_packet_size bytes, as the
   * socket chunks it arrived in) into the packet's normal pages: pieces that
   * together hold normalPages x pageSize bytes, in offset order (a page may
   * span two pieces). Throws a ProtocolError naming the channel when the
   * payload is corrupt, truncated or decodes to any other length; never
   * returns a short result.
   *
   * `out`, given to offloaded methods: a buffer of the caller's, at least
   * normalPages x pageSize bytes, recycled from packet to packet. A method
   * that can decodes into its first bytes and returns that view; one that
   * cannot returns buffers of its own, which the caller copies into `out`.
   */
  recv(payload: Uint8Array[], normalPages: number, packetNum: bigint, out?: Uint8Array): Uint8Array[] | Promise<Uint8Array[]>;
  /** Frees what recvSetup made. Called once, also after a failure. */
  cleanup(): void;
  /**
   * The receiver's stream as a decoder the channel's own thread runs (a stream in the addon:
   * SocketChannel.recvWrite reads, decodes, digests and writes a packet in one operation, no hop to
   * another thread); absent for a method that decodes only in recv(). Given only where the method's
   * threadDecodes() said so.
   */
  thread?: ThreadDecoder;
}

/** A receiver's stream as the channel's thread runs it (MethodReceiver.thread). */
export interface ThreadDecoder {
  /** What recvWrite takes (the addon stream's decoder()). */
  handle: DecoderHandle;
  /** A packet of normalPages pages the thread decoded: counted (the path tally) as recv() counts its own. */
  decoded(normalPages: number): void;
  /**
   * The error recv() throws for the same payload, for one the thread refused: it decoded to `decoded` bytes
   * (-1: it failed, with the decoder's `code` and `message`) instead of normalPages x pageSize.
   */
  refused(r: { decoded: number; code: string | null; message: string }, normalPages: number, packetNum: bigint): ProtocolError;
}

interface OptionCommon<K extends string> {
  /** Long flag without the dashes, e.g. "zlib-level". */
  flag: string;
  /** QEMU's migration parameter of the same meaning, accepted as an alias flag (e.g. "multifd-zlib-level"). */
  qemu?: string;
  /** Key in the method's parameters. */
  key: K;
  description: string;
}

/**
 * A command-line parameter a method takes (QEMU's multifd-*-level names): an integer in min..max, a
 * boolean (on|off on the command line, as QEMU's boolean parameters) or one of a list of choices.
 * Its type is the type of its value in the method's parameters (ParamsOf).
 */
export type MethodOption<K extends string = string> =
  | (OptionCommon<K> & { type: 'int'; min: number; max: number; default: number })
  | (OptionCommon<K> & { type: 'bool'; default: boolean })
  | (OptionCommon<K> & { type: 'choice'; choices: readonly string[]; default: string });

/** The value an option takes: an int's number, a bool's boolean, one of a choice's choices. */
type ValueOf<O> = O extends { type: 'int' }
  ? number
  : O extends { type: 'bool' }
    ? boolean
    : O extends { choices: readonly (infer C)[] }
      ? C
      : never;

/** The parameters a method's options make: each option's key, with the type of its value (none: no key at all). */
export type ParamsOf<O extends readonly MethodOption[]> = [O[number]] extends [never]
  ? Record<string, never>
  : { [X in O[number] as X['key']]: ValueOf<X> };

/**
 * A method, generic in its parameters P (ParamsOf its options; the erased default is MethodParams,
 * for code that holds any method) and its name N.
 */
export interface CompressionMethod<P extends object = MethodParams, N extends string = string> {
  /** The name on the command line (QEMU's multifd-compression value). */
  readonly name: N;
  /** Value of the flags' compression bits on every packet with pages. */
  readonly flag: number;
  /** False for mfd's own extensions, which a QEMU receiver cannot read. */
  readonly qemuCompatible: boolean;
  readonly description: string;
  /**
   * True when prepare()/recv() are CPU-heavy: they then run in the compute
   * pool's worker threads (one worker per channel, so stream state never
   * moves between threads) and may be synchronous. prepare() and recv() get
   * `out`, a buffer the worker shares with the thread that writes the packet
   * or its pages, to write their result into.
   */
  readonly offload: boolean;
  /** Parameters on the command line, checked by params(); declared `as const`, so ParamsOf gives P. */
  readonly options: readonly MethodOption[];
  /**
   * True when the payload is the normal pages as they are (so next_packet_size is exactly normalPages x
   * pageSize): a receiver may place it without decoding (a mapped-ram file's pages; the channel thread's
   * recvWrite), and still hands it to recv() for its checks and path tally.
   */
  readonly exactPayload: boolean;
  /** The accelerator the method can use (e.g. "Intel IAA through QPL"), or null for software-only methods. */
  readonly hardware: string | null;
  /**
   * Which implementation this process will run, for the run summary (e.g.
   * "software: zlib 1.3.1"); never hides a fallback. Called on the main
   * thread before any page moves; throws AccelError when hardware is required
   * (or its software fallback is switched off) and missing.
   */
  path(o: PathOptions<P>): string;
  /**
   * A method with hardware behind it reports that backend for `mfd accel`: compiled or not, its
   * state, the probes it made now (a hardware job or session), its library's software path. `mfd
   * accel` asks every registered method; software-only methods have none.
   */
  probe?(ctx: ProbeContext): BackendProbe;
  /** Largest next_packet_size the receiver accepts for `normalPages` pages. */
  maxPayload(normalPages: number, pageSize: number): number;
  /**
   * Checks and completes parameters (from the command line, or the sender's
   * hello on the receiver); throws UsageError naming the flag and valid range.
   */
  params(user: Readonly<Record<string, unknown>>): P;
  sendSetup(s: MethodSetup<P>): MethodSender;
  recvSetup(s: MethodSetup<P>): MethodReceiver;
  /**
   * True when recvSetup(params) in this process gives a receiver with a `thread` decoder, so a channel
   * read on its own thread needs no compute worker for this method. Absent: false.
   */
  threadDecodes?(params: P): boolean;
}

/**
 * A method as its file declares it: name and options as literal types, so that its calls see its
 * parameters typed (`params.level` a number) and the registry's types (registry.ts) see them too.
 */
export function defineMethod<const N extends string, const O extends readonly MethodOption[]>(
  m: CompressionMethod<ParamsOf<O>, N> & { readonly options: O },
): CompressionMethod<ParamsOf<O>, N> & { readonly options: O } {
  return m;
}
