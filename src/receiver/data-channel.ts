/**
 * One multifd channel on the receiver: parses header and payload off the
 * socket, checks each header (wire/packet.ts), records page coverage, decodes
 * through the method in channel order, then digests and writes the pages.
 * Decoding is serial per channel (stream methods keep history); digesting and
 * writing overlap. With a compute decoder and the receiver's own placement, the
 * channel's worker decodes, digests and writes a packet in one step
 * (decodeAndWrite); otherwise the decoded pages come back and the addon writes
 * them on the libuv pool (apply). The socket pauses while too many packets are in flight.
 *
 * The one channel reader: mfd's receiver and a migration file's restore read
 * with the strict profile; recv --qemu with the QEMU-tolerant one
 * (wire/packet.ts PacketProfile), the packet's method learned from the
 * packets (host.methodFor), and its pages placed by a PagePlacer of its own
 * (QEMU's passes, ordered by sync epochs) instead of the receiver's targets;
 * mfd inspect with the QEMU-tolerant one too, a stream file's bytes a window
 * at a time, one packet at a time (host.inOrder), QEMU 10's device-state
 * packets listed (host.deviceState), the packets and decoded pages recorded
 * by its PagePlacer. Each failure names the stream offset of its packet.
 */
import type { EventEmitter } from 'node:events';
import { ConnectionError, ProtocolError, NativeIoError, nativeIoFailure } from '../errors.js';
import { ByteQueue } from '../transport/byte-queue.js';
import { BytePool } from '../io/byte-pool.js';
import {
  checkFlagBits,
  checkPacketCommon,
  checkPacketHeader,
  checkPacketKind,
  decodePacketHeader,
  NEXT_PACKET_SIZE_OFFSET,
  PACKET_FLAGS_OFFSET,
  payloadLength,
  type PacketCheckContext,
  type PacketHeader,
  type PacketProfile,
} from '../wire/packet.js';
import { NativeChannel, type RecvWriteResult } from '../transport/native-channel.js';
import { MULTIFD_FLAG_COMPRESSION_MASK, MULTIFD_FLAG_DEVICE_STATE, MULTIFD_FLAG_SYNC, hex, pageCount } from '../wire/constants.js';
import { DEVICE_STATE_HEADER_SIZE, checkDeviceStateHeader, decodeDeviceStateHeader, type DeviceStateHeader } from '../wire/device-state.js';
import { isRefPacket } from '../wire/delta-ref.js';
import type { CompressionMethod, ThreadDecoder } from '../methods/method.js';
import { writeFailure, writePacket, type WriteRequest } from '../native/packet-io.js';
import type { ChannelCounters } from '../stats/stats.js';
import type { BlockDigest } from '../image/digest.js';
import type { Output } from './output.js';
import { PageStateLimitError, type PageBitmap } from './page-bitmap.js';

/** Packets decoded or written but not finished, per channel, before reading pauses. */
const MAX_IN_FLIGHT = 4;
/**
 * Headers one native read may bring (the strict profile's readNative): a run of packets of zero
 * pages only (a sparse image's holes: header after header, no payload) comes in one operation
 * rather than one each, two thread wake-ups saved a packet.
 */
const HEADER_BATCH = 16;
/**
 * Bytes of payload the native readers of one host hold at once, all its channels together: 64 of
 * the largest packets (512 KiB of pages), so many channels share what 13 use up at full speed.
 */
export const READ_POOL_BYTES = 32 << 20;

/** Where the pages a channel's thread decodes start in the room taken with their payload: a cache line. */
const PAGE_ROOM_ALIGN = 64;
const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * The payload buffers of a host's native readers: one pool for all its channels, bounded in bytes.
 * A reader takes a buffer only once a header, judged, says how long its payload is, and only that
 * long: a channel waiting for data holds none, and memory follows what the peers really sent. Sharing
 * cannot stall the migration: a reader holding room has its header, and a peer sends header and
 * payload together (one sendmsg, one writev in QEMU), so the payload comes whatever the other
 * channels do; a packet in flight needs no other channel to finish.
 */
export function readPool(): BytePool {
  return new BytePool(READ_POOL_BYTES);
}

const EMPTY: Uint8Array[] = [];

/**
 * Decodes a channel's payloads (inline, or on the channel's compute worker).
 * decode() is called once per packet in arrival order, without waiting for
 * the previous result; the decoder keeps that order itself.
 */
export interface Decoder {
  decode(payload: Uint8Array[], normalPages: number, packetNum: bigint): Uint8Array[] | Promise<Uint8Array[]>;
  /**
   * The method's stream as the channel's own thread decodes with it (an inline receiver's `thread`): a
   * native reader then reads, decodes, digests and writes a packet the receiver places in one operation
   * (writtenPacket), once no packet of the channel is in flight, so decode() and the thread never run the
   * stream at once and it sees the packets in order.
   */
  thread?: ThreadDecoder;
  /** The pages decode() returned are written (or their packet failed): their buffer can be used again. */
  done?(pages: Uint8Array[]): void;
  /**
   * Decodes a packet's payload and, in the same step on the thread that decodes, digests and writes
   * its pages as writePacket does (`w`: all of it but the pages and the CRCs): the decoded pages never
   * come back. Called in arrival order, like decode(). A written packet's CRCs go to `digest` (the
   * first normalPages of `crc`, valid during the call) before it resolves with the write's result (0,
   * or the negative code and the page a padding failure is about); rejects when the payload does not
   * decode. Absent (an inline decoder): decode(), then writePacket on the libuv pool.
   */
  decodeWrite?(
    payload: Uint8Array[],
    normalPages: number,
    packetNum: bigint,
    w: PageWrite,
    digest: (crc: Uint32Array) => void,
  ): Promise<{ result: number; badPage: number }>;
}

/** A packet's write, all of it but the decoded pages and the room for their CRCs (src/native/packet-io.ts). */
export type PageWrite = Omit<WriteRequest, 'pages' | 'crc'>;

export interface TargetBlock {
  output: Output;
  size: number;
  /** One bit per page: received (normal or zero); allocated as pages arrive. */
  seen: PageBitmap;
  digest: BlockDigest;
  /**
   * 1 for each page where the output already holds non-zero bytes of its own
   * (delta's clone of the earlier version, or the file delta writes in place,
   * src/delta/receiver.ts): a zero page there is written, elsewhere not.
   */
  nonzero?: Uint8Array;
}

/**
 * What a channel reads from: its socket, or (restoring a migration file) the
 * file's records for this channel. Emits 'data' (Buffer), 'end', 'error',
 * 'close'; pause() while too many packets are in flight, resume() after.
 */
export type ChannelSource = EventEmitter & { pause(): unknown; resume(): unknown; destroy(): unknown };

/**
 * Where a channel's packets go instead of the receiver's targets (recv --qemu:
 * pages ordered by sync epochs; mfd inspect: a report and its extraction).
 * claim() sees every packet (`at`: the stream offset of its header), in
 * arrival order, before its payload is decoded, and returns what to do with
 * the decoded normal pages (null: nothing to place); it throws to refuse the
 * packet.
 */
export interface PagePlacer {
  claim(h: PacketHeader, at: number): ((pages: Uint8Array[]) => void | Promise<void>) | null;
}

export interface ChannelHost {
  pageSize: number;
  headerSize: number;
  /** How packets are framed and judged; "strict" when absent. */
  profile?: PacketProfile;
  /** The stream offset of the first byte the reader is given (INIT_PACKET_SIZE when the caller read the init packet); 0 when absent. */
  streamStart?: number;
  /** How the end of the source reads in a truncation error; "connection closed" when absent. */
  endedAs?: string;
  /**
   * Frame a packet only once the one before it is finished (mfd inspect: its packets, and the
   * first error, in stream order); read ahead up to MAX_IN_FLIGHT packets when absent.
   */
  inOrder?: boolean;
  /**
   * With the "qemu" profile on a stream source: QEMU 10's device-state packets are judged
   * (checkDeviceStateHeader) and handed here, at the stream offset `at` of their header, once
   * their state (not kept) has been read; refused (checkPacketKind) when absent.
   */
  deviceState?(d: DeviceStateHeader, at: number): void;
  /**
   * With the "qemu" profile: the method of a packet with normal pages, from its compression bits
   * (the first one decides; a later one that differs throws). check's method fields then do not count.
   */
  methodFor?(flag: number, channel: number, packetNum: bigint): CompressionMethod;
  check: Omit<PacketCheckContext, 'channel'>;
  blocks: Map<string, TargetBlock>;
  zeroPageCrc: number;
  inPlace: boolean;
  /**
   * A packet's payload is its pages as they are (compression none): a native reader has the pages of a
   * packet the receiver places read, digested and written on the channel's thread, one operation
   * (writtenPacket).
   */
  pagesAsSent?: boolean;
  /** A native reader's limit on waiting for data (ERR_CHANNEL_TIMEOUT); none when absent. */
  readTimeoutMs?: number;
  /** The payload buffers of the host's native readers (readPool()), shared by its channels; needed with a native source. */
  readPool?: BytePool;
  onPages(bytes: number): void;
  /** The pages at `offsets[0..count)` of `block` are written (in the page cache); for the progress journal. */
  onWritten?(block: TargetBlock, offsets: ArrayLike<number>, count: number): void;
  onIdle(): void;
  /** The channel failed and reads no more; `at`: the stream offset of the packet (header, or payload when it is the payload's fault) or byte it is about. */
  fail(e: unknown, at?: number): void;
  /** Delta transfer (src/delta/receiver.ts): applies a reference packet (its header at stream offset `at`); resolves with the pages it stood for. */
  refs?(h: PacketHeader, payload: Uint8Array[], channel: number, at: number): Promise<number>;
}

/** The header checks for packets of `method` at `pageSize`, ramblocks looked up in `blocks` (a network migration and a file restore alike). */
export function packetChecks(
  method: CompressionMethod,
  pageSize: number,
  blocks: Map<string, TargetBlock>,
): Omit<PacketCheckContext, 'channel'> {
  return {
    pageSize,
    pageCount: pageCount(pageSize),
    methodFlag: method.flag,
    exactPayload: method.exactPayload,
    maxPayload: (n) => method.maxPayload(n, pageSize),
    lookupRamblock: (name) => blocks.get(name),
  };
}

export class DataChannel {
  private readonly queue = new ByteQueue();
  private header: PacketHeader | null = null;
  /** The payload length of `header` (its framing under the profile). */
  private payloadLen = 0;
  private readonly profile: PacketProfile;
  private readonly placer: PagePlacer;
  /** The receiver's placement (claim()), not a PagePlacer of the host's. */
  private readonly ownPlacement: boolean;
  private inFlight = 0;
  /** Of those, packets with normal pages: the method's stream decodes them in order, so the channel's thread decodes only with none. */
  private decoding = 0;
  /** Packets in flight before reading pauses: 1 in order, else MAX_IN_FLIGHT. */
  private readonly maxInFlight: number;
  /** The stream offset of the packet being read (its header). */
  private at: number;
  /** A device-state packet whose state is being skipped, and how many of its bytes are still to come. */
  private device: DeviceStateHeader | null = null;
  private skip = 0;
  /** The source ended while a packet was in flight (in order): judged once it is finished. */
  private endSeen = false;
  /** The channel failed (host.fail): nothing more is read. */
  private failed = false;
  private readonly ctx: PacketCheckContext;
  /** The byte stream parsed here; null when a native reader reads the socket. */
  private readonly stream: ChannelSource | null;
  private readonly destroySource: () => void;
  /** The native reader's wait for fewer packets in flight. */
  private wake: (() => void) | null = null;
  /** EOF seen at a packet boundary. */
  ended = false;
  lastWasSync = false;

  /**
   * Reads from `source`: a stream of bytes (parsed here), or a socket on its
   * native thread (one read per packet, into buffers of this channel).
   * `initial`: bytes already read, parsed first.
   */
  constructor(
    readonly id: number,
    source: ChannelSource | NativeChannel,
    initial: Buffer,
    private readonly decoder: Decoder,
    readonly counters: ChannelCounters,
    private readonly host: ChannelHost,
    placer?: PagePlacer,
  ) {
    this.ctx = { ...host.check, channel: id };
    this.profile = host.profile ?? 'strict';
    this.maxInFlight = host.inOrder ? 1 : MAX_IN_FLIGHT;
    this.at = host.streamStart ?? 0;
    this.placer = placer ?? { claim: (h) => this.claim(h) };
    this.ownPlacement = placer === undefined;
    this.counters.wireBytes += initial.length;
    this.queue.push(initial);
    if (source instanceof NativeChannel) {
      if (host.inOrder || host.deviceState) throw new Error('DataChannel: inOrder and deviceState need a stream source');
      this.stream = null;
      this.destroySource = () => source.socket.destroy();
      void this.readNative(source);
      return;
    }
    const socket = source;
    this.stream = socket;
    this.destroySource = () => socket.destroy();
    socket.on('data', (c: Buffer) => {
      this.counters.wireBytes += c.length;
      this.queue.push(c);
      this.pump();
    });
    socket.on('end', () => this.onEnd());
    socket.on('error', (e) => this.stop(new ConnectionError('ERR_CHANNEL_CONNECTION', e.message, { channel: id }, e), this.at));
    socket.on('close', () => {
      if (!this.ended) this.onEnd();
    });
    this.pump();
  }

  get idle(): boolean {
    return this.ended && this.inFlight === 0;
  }

  private onEnd(): void {
    if (this.ended || this.failed) return;
    if (this.inFlight > 0 && this.inOrder) {
      this.endSeen = true;
      return;
    }
    const hs = this.host.headerSize;
    if (this.device) {
      const size = this.device.nextPacketSize;
      return this.truncated(`device state: received ${size - this.skip} of ${size} bytes`, this.at + DEVICE_STATE_HEADER_SIZE);
    }
    if (this.header) return this.truncated(`payload: received ${this.queue.length} of ${this.payloadLen} bytes`, this.at + hs);
    if (this.queue.length > 0) {
      const flags = this.queue.peekUInt32BE(PACKET_FLAGS_OFFSET);
      if (this.listsDeviceState(flags))
        return this.truncated(`device-state packet header: received ${this.queue.length} of ${DEVICE_STATE_HEADER_SIZE} bytes`, this.at);
      try {
        // A packet of another kind, shorter than a RAM header, is named as such.
        this.judgeKind(flags);
      } catch (e) {
        return this.stop(e, this.at);
      }
      return this.truncated(`header: received ${this.queue.length} of ${hs} bytes`, this.at);
    }
    this.ended = true;
    this.host.onIdle();
  }

  private get inOrder(): boolean {
    return this.maxInFlight === 1;
  }

  /** The channel fails: the host hears of it once, with the stream offset it is about; nothing more is read. */
  private stop(e: unknown, at: number): void {
    if (this.failed) return;
    this.failed = true;
    this.host.fail(e, at);
  }

  destroy(): void {
    this.destroySource();
  }

  /** The packet kind, from the flags of its common 12 bytes (null: not all here yet); QEMU profile only. */
  private judgeKind(flags: number | null): void {
    if (this.profile === 'qemu' && flags !== null) checkPacketKind(flags, this.id);
  }

  /** A device-state packet (flags of its common 12 bytes) that the host lists. */
  private listsDeviceState(flags: number | null): boolean {
    return flags !== null && (flags & MULTIFD_FLAG_DEVICE_STATE) !== 0 && this.profile === 'qemu' && this.host.deviceState !== undefined;
  }

  /**
   * Judges a header under the channel's profile (throws ProtocolError naming
   * what is wrong) and returns the length of the payload that follows it.
   */
  private judge(h: PacketHeader): number {
    if (this.profile === 'strict') {
      checkPacketHeader(h, this.ctx);
      return payloadLength(h, 'strict', this.ctx.exactPayload, this.host.pageSize);
    }
    // QEMU-tolerant: no normal pages, no payload (next_packet_size may be stale); the method is
    // judged on packets with normal pages only (QEMU 7.2 sets its bit only there).
    const flag = h.flags & MULTIFD_FLAG_COMPRESSION_MASK;
    const ps = this.host.pageSize;
    // A delta reference packet (an mfd extension, refused unless check.deltaRefs) is framed by its next_packet_size.
    if (isRefPacket(h)) {
      checkPacketHeader(h, this.ctx);
      return payloadLength(h, 'strict', false, ps);
    }
    if (h.normalPages === 0) {
      checkPacketHeader({ ...h, nextPacketSize: 0 }, { ...this.ctx, methodFlag: flag, exactPayload: true });
      return payloadLength(h, 'qemu', true, ps);
    }
    // The common fields first: the method is learned from flags that passed them.
    checkPacketCommon(h, this.id);
    checkFlagBits(h.flags, hex(flag), { channel: this.id, packetNum: h.packetNum });
    const m = this.host.methodFor!(flag, this.id, h.packetNum);
    checkPacketHeader(h, { ...this.ctx, methodFlag: m.flag, exactPayload: m.exactPayload, maxPayload: (n) => m.maxPayload(n, ps) });
    return payloadLength(h, 'qemu', m.exactPayload, ps);
  }

  private truncated(what: string, at: number): void {
    this.stop(
      new ConnectionError('ERR_CHANNEL_TRUNCATED', `${this.host.endedAs ?? 'connection closed'} in the middle of a packet ${what}`, {
        channel: this.id,
      }),
      at,
    );
  }

  private pause(): void {
    this.stream?.pause();
  }

  private resume(): void {
    if (this.inOrder) {
      // The packets queued behind the one just finished, then (if none is in flight) the end or more bytes.
      this.pump();
      if (this.inFlight > 0 || this.failed) return;
      if (this.endSeen) return this.onEnd();
    }
    this.stream?.resume();
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /**
   * The native reader: a read of the header into the channel's header
   * buffer, the same checks as the stream parser, then a read of exactly the
   * payload the header announced into a buffer of that size from the host's
   * read pool (and, in the same operation, of as much of the next header as
   * has arrived), then packet(). The payload's buffer goes back to the pool once
   * the packet is written; it is shared memory, so a compute worker decodes
   * from it without a copy. At most MAX_IN_FLIGHT packets are read ahead.
   */
  private async readNative(ch: NativeChannel): Promise<void> {
    const hs = this.host.headerSize;
    const pool = this.host.readPool;
    // The headers read in one operation (recvHeaders): with the strict profile, a run of packets
    // without payload; with the QEMU one, whose device-state packets have headers of their own
    // size, one at a time.
    const batch = Buffer.allocUnsafeSlow(hs * (this.profile === 'strict' ? HEADER_BATCH : 1));
    // Where a header is read, and what has arrived of the next one read ahead with a payload.
    const first = batch.subarray(0, hs);
    // Whole headers read after the current one: batch[next, end).
    let next = 0;
    let end = 0;
    const timeout = this.host.readTimeoutMs ?? -1;
    // Bytes of the next header already in `first`: read with the payload before it.
    let early = 0;
    // Fills buf after its first `have` bytes: bytes read before the handover first, then the socket's
    // (and, into `ahead`, what has already arrived after buf).
    const fill = async (buf: Uint8Array, have: number, ahead?: Uint8Array): Promise<number> => {
      have += this.queue.takeInto(buf, have, buf.length - have);
      if (have === buf.length) return have;
      const r = await ch.recv(buf, have, timeout, ahead);
      this.counters.wireBytes += r.got - have + r.ahead;
      early = r.ahead;
      return r.got;
    };
    // The next header into `first` after its first `have` bytes, and the headers without payload after it.
    const readHeaders = async (have: number): Promise<number> => {
      have += this.queue.takeInto(first, have, hs - have);
      if (have === hs) return hs;
      const got = await ch.recvHeaders(batch, have, hs, NEXT_PACKET_SIZE_OFFSET, timeout);
      this.counters.wireBytes += got - have;
      return got;
    };
    try {
      if (!pool) throw new Error("DataChannel: a native source needs the host's readPool");
      for (;;) {
        if (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => (this.wake = resolve));
        let header = first;
        let got = hs;
        if (next < end) {
          header = batch.subarray(next, next + hs);
          next += hs;
        } else {
          const have = early;
          early = 0;
          got = await readHeaders(have);
          next = hs;
          end = got - (got % hs);
        }
        if (got === 0) {
          // The sender's end of the channel: close ours (libuv, no longer reading, would not see it).
          this.ended = true;
          ch.socket.destroy();
          this.host.onIdle();
          return;
        }
        if (got >= PACKET_FLAGS_OFFSET + 4) this.judgeKind(header.readUInt32BE(PACKET_FLAGS_OFFSET));
        if (got < hs) return this.truncated(`header: received ${got} of ${hs} bytes`, this.at);
        const h = decodePacketHeader(header, this.host.check.pageCount);
        // The header buffer is read into again while this packet is in flight.
        h.ramblock = new Uint8Array(h.ramblock);
        const len = this.judge(h);
        if (len > 0 && next < end) throw new Error(`channel ${this.id}: recvHeaders read past a header announcing ${len} payload bytes`);
        if (len > pool.bytes)
          throw new Error(
            `channel ${this.id}: next_packet_size ${len} passed the header checks but exceeds the read pool of ${pool.bytes} bytes`,
          );
        if (this.writesWhereRead(h, len)) {
          // A payload the thread decodes takes room for its pages too, in the same view (one wait for the
          // pool: a channel never holds part of the room it needs while it waits for the rest).
          const at = this.host.pagesAsSent ? len : alignUp(len, PAGE_ROOM_ALIGN);
          const room = await pool.acquire(this.host.pagesAsSent ? len : at + h.normalPages * this.host.pageSize);
          let r: { got: number; ahead: number; refused?: ProtocolError };
          try {
            r = await this.writtenPacket(ch, h, room.subarray(0, len), first, timeout, room.subarray(at));
          } finally {
            pool.release(room);
          }
          this.counters.wireBytes += r.got + r.ahead;
          // The payload's fault: named at its offset, as a worker's refusal is (decodeAndWrite).
          if (r.refused) return this.stop(r.refused, this.at + hs);
          early = r.ahead;
          if (r.got < len) return this.truncated(`payload: received ${r.got} of ${len} bytes`, this.at + hs);
          this.at += hs + len;
          continue;
        }
        let payload = EMPTY;
        let release: (() => void) | null = null;
        if (len > 0) {
          const buf = await pool.acquire(len);
          let n: number;
          try {
            n = await fill(buf, 0, first);
          } catch (e) {
            pool.release(buf);
            throw e;
          }
          if (n < len) {
            pool.release(buf);
            return this.truncated(`payload: received ${n} of ${len} bytes`, this.at + hs);
          }
          payload = [buf];
          release = () => pool.release(buf);
        }
        this.packet(h, payload, release, this.at);
        this.at += hs + len;
      }
    } catch (e) {
      if (e instanceof NativeIoError) {
        if (e.code === 'ESTALLED')
          this.stop(new ConnectionError('ERR_CHANNEL_TIMEOUT', `no data for ${this.host.readTimeoutMs} ms`, { channel: this.id }), this.at);
        else this.stop(nativeIoFailure(e, { channel: this.id }), this.at);
      } else {
        this.stop(e, this.at);
      }
    } finally {
      ch.close();
    }
  }

  /** writtenPacket's CRCs (one packet at a time), made at its first packet. */
  private crcRoom: Uint32Array | null = null;

  /**
   * A packet placed by the receiver, with nothing of its payload read yet, whose pages come as they are or
   * that the method's stream decodes on the channel's thread (Decoder.thread, once no packet of the channel
   * that the stream decodes is in flight: packets of zero pages only may be): the channel's thread reads,
   * decodes, digests and writes it (writtenPacket).
   */
  private writesWhereRead(h: PacketHeader, len: number): boolean {
    if (!this.ownPlacement || this.profile !== 'strict' || h.normalPages === 0) return false;
    if (this.queue.length !== 0 || (this.host.refs && isRefPacket(h))) return false;
    if (this.host.pagesAsSent) return len === h.normalPages * this.host.pageSize;
    return this.decoder.thread !== undefined && len > 0 && this.decoding === 0;
  }

  /**
   * The receiver's placement of a packet whose payload is its pages, or a stream's that the channel's thread
   * decodes (as decodeAndWrite): read into `buf` on the channel's thread, then decoded (into `room`, taken
   * from the read pool with `buf`), digested and written there, in one operation with the read of what has arrived of the
   * next header into `ahead`: no hop to another thread and back, one completion a packet. Done before the
   * next header is read (the channels write in parallel). Resolves to the payload bytes read (fewer: the
   * stream ended, nothing written) and the bytes read ahead; for a payload that does not decode (nothing
   * written), the method's error (recv()'s for the same bytes) as `refused`.
   */
  private async writtenPacket(
    ch: NativeChannel,
    h: PacketHeader,
    buf: Uint8Array,
    ahead: Uint8Array,
    timeout: number,
    room: Uint8Array,
  ): Promise<{ got: number; ahead: number; refused?: ProtocolError }> {
    const c = this.counters;
    c.packets++;
    this.lastWasSync = (h.flags & MULTIFD_FLAG_SYNC) !== 0;
    if (this.lastWasSync) c.syncPackets++;
    const t = this.target(h);
    const pages = h.normalPages + h.zeroPages;
    this.counted(h);
    const thread = this.host.pagesAsSent ? undefined : this.decoder.thread;
    let r: RecvWriteResult = { got: 0, ahead: 0 };
    let refused: ProtocolError | undefined;
    await this.apply(h, t.name, t.block, async (w, digest) => {
      // One packet at a time on this path: the channel's room for CRCs serves every packet.
      const crc = (this.crcRoom ??= new Uint32Array(pageCount(this.host.pageSize))).subarray(0, w.normal);
      if (!thread) {
        r = await ch.recvWrite(buf, w, crc, timeout, ahead);
        if (r.got < buf.length) return;
        digest(crc);
        // The method still sees what arrived (its checks, its path tally: "uncompressed"), as it would to decode it.
        await this.decoder.decode([buf], h.normalPages, h.packetNum);
        return;
      }
      r = await ch.recvWrite(buf, w, crc, timeout, ahead, { decoder: thread.handle, pages: room });
      if (r.got < buf.length) return;
      if (r.refused) {
        refused = thread.refused(r.refused, h.normalPages, h.packetNum);
        return;
      }
      digest(crc);
      thread.decoded(h.normalPages);
    });
    if (refused) return { got: r.got, ahead: r.ahead, refused };
    if (r.got < buf.length) return { got: r.got, ahead: r.ahead };
    this.charged(t.name, t.place, () => this.host.onWritten?.(t.block, h.offsets, pages));
    this.host.onPages(pages * this.host.pageSize);
    return { got: r.got, ahead: r.ahead };
  }

  private pump(): void {
    try {
      for (;;) {
        if (this.failed || (this.inOrder && this.inFlight > 0)) return;
        if (this.device && !this.skipDeviceState()) return;
        if (!this.header) {
          const flags = this.queue.peekUInt32BE(PACKET_FLAGS_OFFSET);
          if (this.listsDeviceState(flags)) {
            if (!this.deviceStateHeader()) return;
            continue;
          }
          this.judgeKind(flags);
          const raw = this.queue.take(this.host.headerSize);
          if (!raw) return;
          // Offsets beyond pagesAlloc are never read (QEMU leaves stale ones there).
          const h = decodePacketHeader(raw, this.host.check.pageCount);
          this.header = h;
          // Judge the header before waiting for (or allocating) its payload.
          this.payloadLen = this.judge(h);
        }
        const h = this.header;
        const payload = this.payloadLen > 0 ? this.queue.takeViews(this.payloadLen) : EMPTY;
        if (!payload) return;
        this.header = null;
        this.packet(h, payload, null, this.at);
        this.at += this.host.headerSize + this.payloadLen;
      }
    } catch (e) {
      this.stop(e, this.at);
    }
  }

  /** A device-state header (the host lists them): judged, its state then skipped as it arrives. False until all of it is here. */
  private deviceStateHeader(): boolean {
    const raw = this.queue.take(DEVICE_STATE_HEADER_SIZE);
    if (!raw) return false;
    const d = decodeDeviceStateHeader(raw);
    checkDeviceStateHeader(d, this.id);
    this.device = d;
    this.skip = d.nextPacketSize;
    return true;
  }

  /** Drops the device state that has arrived; true once all of it has, and the host has the packet. */
  private skipDeviceState(): boolean {
    const k = Math.min(this.skip, this.queue.length);
    this.queue.takeViews(k);
    this.skip -= k;
    if (this.skip > 0) return false;
    const d = this.device!;
    this.device = null;
    this.host.deviceState!(d, this.at);
    this.at += DEVICE_STATE_HEADER_SIZE + d.nextPacketSize;
    return true;
  }

  /** A checked packet, its header at stream offset `at`; `release` (if any) runs once its payload is no longer needed. */
  private packet(h: PacketHeader, payload: Uint8Array[], release: (() => void) | null, at: number): void {
    const c = this.counters;
    c.packets++;
    this.lastWasSync = (h.flags & MULTIFD_FLAG_SYNC) !== 0;
    if (this.lastWasSync) c.syncPackets++;
    if (this.host.refs && isRefPacket(h)) return this.refPacket(h, payload, release, at);
    // The receiver's own placement of a packet with normal pages, with a decoder that can also
    // write: decoded, digested and written in one step on the channel's compute worker.
    if (this.ownPlacement && h.normalPages > 0 && this.decoder.decodeWrite) return this.decodeAndWrite(h, payload, release, at);
    const place = this.placer.claim(h, at);
    if (!place) return release?.();
    const pages = h.normalPages + h.zeroPages;
    this.counted(h);

    if (++this.inFlight >= this.maxInFlight) this.pause();
    const decodes = h.normalPages > 0;
    if (decodes) this.decoding++;
    const decoded = decodes ? this.decoder.decode(payload, h.normalPages, h.packetNum) : EMPTY;
    // A payload that does not decode is named at the payload's offset, any other failure at the header's.
    let placing = false;
    let pagesOut: Uint8Array[] | null = null;
    this.settle(
      Promise.resolve(decoded)
        .then((data) => {
          placing = true;
          pagesOut = data;
          return place(data);
        })
        .finally(() => {
          if (pagesOut && pagesOut !== EMPTY) this.decoder.done?.(pagesOut);
        }),
      release,
      pages,
      (e) => this.stop(e, placing ? at : at + this.host.headerSize),
      decodes,
    );
  }

  private counted(h: PacketHeader): void {
    this.counters.normalPages += h.normalPages;
    this.counters.zeroPages += h.zeroPages;
  }

  /**
   * A packet in flight (`work`) to its end: its payload released once nothing reads it (decoded and
   * written, or failed), then the channel reads on, or fails through `failed`.
   */
  private settle(
    work: Promise<unknown>,
    release: (() => void) | null,
    pages: number,
    failed: (e: unknown) => void,
    decodes: boolean,
  ): void {
    work
      .finally(() => {
        release?.();
        if (decodes) this.decoding--;
      })
      .then(() => {
        if (--this.inFlight < this.maxInFlight) this.resume();
        this.host.onPages(pages * this.host.pageSize);
        if (this.idle) this.host.onIdle();
      })
      .catch(failed);
  }

  /**
   * The receiver's placement (as claim() and apply()), the decoding, digesting and writing one call
   * to the decoder (decodeWrite): the payload goes to the compute worker, and only the CRCs come back
   * (in a slot both threads see).
   */
  private decodeAndWrite(h: PacketHeader, payload: Uint8Array[], release: (() => void) | null, at: number): void {
    const t = this.target(h);
    const pages = h.normalPages + h.zeroPages;
    this.counted(h);
    if (++this.inFlight >= this.maxInFlight) this.pause();
    this.decoding++;
    // A payload that does not decode is named at the payload's offset, any other failure at the header's.
    let placing = false;
    let started = false;
    const work = this.apply(h, t.name, t.block, async (w, digest) => {
      started = true;
      const r = await this.decoder.decodeWrite!(payload, h.normalPages, h.packetNum, w, digest);
      placing = true;
      if (r.result < 0) throw writeFailure(r.result, r.badPage);
    }).then(() => this.charged(t.name, t.place, () => this.host.onWritten?.(t.block, h.offsets, pages)));
    // A failure before the call reached the decoder (the output closed, say) is the header's.
    this.settle(work, release, pages, (e) => this.stop(e, placing || !started ? at : at + this.host.headerSize), true);
  }

  /** The receiver's placement: each page once (the coverage bitmap), digested and written to its target block. */
  private claim(h: PacketHeader): ((data: Uint8Array[]) => Promise<void>) | null {
    const pages = h.normalPages + h.zeroPages;
    if (pages === 0) return null;
    const { name, block, place } = this.target(h);
    return async (data) => {
      await this.apply(h, name, block, async (w, digest) => {
        const crc = new Uint32Array(w.normal);
        await writePacket({ ...w, pages: data, crc });
        digest(crc);
      });
      this.charged(name, place, () => this.host.onWritten?.(block, h.offsets, pages));
    };
  }

  /** The target block of a packet with pages, each of them marked received (once: a page repeated throws). */
  private target(h: PacketHeader): { name: string; block: TargetBlock; place: { channel: number; packetNum: bigint } } {
    const pages = h.normalPages + h.zeroPages;
    const name = Buffer.from(h.ramblock).toString('utf8');
    const block = this.host.blocks.get(name)!;
    const ps = this.host.pageSize;
    const place = { channel: this.id, packetNum: h.packetNum };
    this.charged(name, place, () => {
      for (let i = 0; i < pages; i++) {
        if (!block.seen.set(h.offsets[i]! / ps))
          throw new ProtocolError('ERR_PAGE_REPEATED', `page at offset ${h.offsets[i]} of ram block "${name}" received twice`, place);
      }
    });
    return { name, block, place };
  }

  /** A delta reference packet: the host copies its pages; in flight like any packet. */
  private refPacket(h: PacketHeader, payload: Uint8Array[], release: (() => void) | null, at: number): void {
    if (++this.inFlight >= this.maxInFlight) this.pause();
    this.host.refs!(h, payload, this.id, at)
      .finally(() => release?.())
      .then((pages) => {
        if (--this.inFlight < this.maxInFlight) this.resume();
        this.host.onPages(pages * this.host.pageSize);
        if (this.idle) this.host.onIdle();
      })
      .catch((e) => this.stop(e, at));
  }

  /** Runs `f`, which marks pages of ram block `name`; a bookkeeping limit it meets names the block, channel and packet. */
  private charged(name: string, place: { channel: number; packetNum: bigint }, f: () => void): void {
    try {
      f();
    } catch (e) {
      throw e instanceof PageStateLimitError ? e.at(name, place) : e;
    }
  }

  /**
   * Digests the decoded pages and writes them (and, in place, the zero pages): one addon call,
   * `write`'s (writePacket on the libuv pool, or the compute worker's as it decodes), through the
   * output's gate.
   */
  private async apply(
    h: PacketHeader,
    name: string,
    block: TargetBlock,
    write: (w: PageWrite, digest: (crc: Uint32Array) => void) => Promise<void>,
  ): Promise<void> {
    const ps = this.host.pageSize;
    const normal = h.normalPages;
    let zero = h.zeroPages;
    let offsets = h.offsets;
    for (let j = normal; j < normal + zero; j++) block.digest.add(h.offsets[j]! / ps, this.host.zeroPageCrc);
    const writeZeros = this.host.inPlace || block.nonzero !== undefined;
    if (block.nonzero && zero > 0) {
      // Only the zero pages over non-zero bytes are written; the others are zero already (in place, past
      // the pages `nonzero` knows of, every one is written).
      const over: number[] = [];
      const known = block.nonzero.length;
      for (let j = normal; j < normal + zero; j++) {
        const p = h.offsets[j]! / ps;
        if (p < known ? block.nonzero[p] : this.host.inPlace) over.push(h.offsets[j]!);
      }
      if (over.length < zero) {
        offsets = new Float64Array(normal + over.length);
        offsets.set(h.offsets.subarray(0, normal));
        offsets.set(over, normal);
        zero = over.length;
      }
    }
    if (normal === 0 && !(writeZeros && zero > 0)) return;
    // The written pages' CRCs, in whatever room the write has them (the caller's, or a worker's slot).
    const digest = (crc: Uint32Array): void => {
      for (let j = 0; j < normal; j++) block.digest.add(h.offsets[j]! / ps, crc[j]!);
    };
    try {
      await block.output.use((fd) => write({ fd, pageSize: ps, offsets, normal, zero, blockSize: block.size, writeZeros }, digest));
    } catch (e) {
      // A write's failure; any other (a payload that does not decode) goes as it is.
      if (!(e instanceof NativeIoError) || e.op !== 'write') throw e;
      if (e.code === 'EPADDING') {
        throw new ProtocolError(
          'ERR_PAGE_PAST_END',
          `page at offset ${offsets[e.badPage!]} runs past the end of ram block "${name}" (size ${block.size}) with non-zero bytes`,
          { channel: this.id, packetNum: h.packetNum },
        );
      }
      throw nativeIoFailure(e, { subject: `ram block "${name}" to "${block.output.writePath}"`, channel: this.id, packetNum: h.packetNum });
    }
  }
}
