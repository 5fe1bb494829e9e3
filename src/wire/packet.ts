/**
 * MultiFDPacket_t: the fixed-size RAM packet header (320 + 8 x pages-per-packet
 * bytes), its encoder, decoder and the receiver's checks. See docs/wire-format.md.
 */
import { ProtocolError, UnsupportedStreamError, type ErrorPlace } from '../errors.js';
import {
  MULTIFD_DEFINED_FLAGS,
  MULTIFD_FLAG_COMPRESSION_MASK,
  MULTIFD_FLAG_DEVICE_STATE,
  MULTIFD_MAGIC,
  MULTIFD_VERSION,
  PACKET_HEADER_FIXED_SIZE,
  RAMBLOCK_NAME_FIELD,
  hex,
  pageCount,
} from './constants.js';
import { checkRefHeader, isRefPacket } from './delta-ref.js';

export interface PacketHeader {
  magic: number;
  version: number;
  flags: number;
  pagesAlloc: number;
  normalPages: number;
  nextPacketSize: number;
  packetNum: bigint;
  zeroPages: number;
  /** Raw 256-byte name field up to its first NUL (or all 256 bytes when there is none). */
  ramblock: Uint8Array;
  /** False when the name field has no NUL: a QEMU receiver would truncate it. */
  ramblockTerminated: boolean;
  /** Byte offsets: normal pages first, then zero pages; decoded up to the count asked for. */
  offsets: Float64Array;
}

export interface PacketFields {
  flags: number;
  pagesAlloc: number;
  normalPages: number;
  zeroPages: number;
  nextPacketSize: number;
  packetNum: bigint;
  /** Pre-encoded name bytes (at most 255). */
  ramblock: Uint8Array;
  /** normalPages + zeroPages offsets, normal ones first. */
  offsets: ArrayLike<number>;
}

const TWO32 = 2 ** 32;

/**
 * Writes a whole header (headerSize bytes, unused offsets zero) into `out`.
 * Offsets are byte offsets below 2^53.
 */
export function encodePacketHeader(out: Uint8Array, headerSize: number, f: PacketFields): Uint8Array {
  const used = f.normalPages + f.zeroPages;
  if (headerSize < PACKET_HEADER_FIXED_SIZE + 8 * used) throw new RangeError(`header of ${headerSize} bytes cannot hold ${used} offsets`);
  if (f.ramblock.length > RAMBLOCK_NAME_FIELD - 1) throw new RangeError(`ramblock name longer than ${RAMBLOCK_NAME_FIELD - 1} bytes`);
  out.fill(0, 0, headerSize);
  const dv = new DataView(out.buffer, out.byteOffset, headerSize);
  dv.setUint32(0, MULTIFD_MAGIC);
  dv.setUint32(4, MULTIFD_VERSION);
  dv.setUint32(8, f.flags);
  dv.setUint32(12, f.pagesAlloc);
  dv.setUint32(16, f.normalPages);
  dv.setUint32(20, f.nextPacketSize);
  dv.setBigUint64(24, f.packetNum);
  dv.setUint32(32, f.zeroPages);
  out.set(f.ramblock, 64);
  for (let i = 0, p = PACKET_HEADER_FIXED_SIZE; i < used; i++, p += 8) {
    const o = f.offsets[i]!;
    dv.setUint32(p, Math.floor(o / TWO32));
    dv.setUint32(p + 4, o >>> 0);
  }
  return out;
}

/** A packet of an image's pages as the sender makes it (its pipeline, or the channel's compute worker). */
export interface PagesPacket {
  flags: number;
  pageSize: number;
  packetNum: bigint;
  /** Pre-encoded name bytes (at most 255). */
  ramblock: Uint8Array;
  /** Pages in the packet. */
  pages: number;
  /** Page i's number in the block: list[i] when the pages are scattered, else first + i. */
  first: number;
  list?: Uint32Array | undefined;
  /** Page i is a zero page where zero[i] is non-zero; `zeros` of them. */
  zero: Uint8Array;
  zeros: number;
  /** False: zero_pages 0 in the header, the zero pages' offsets past the counted ones (send --qemu). */
  zeroPagesInHeader: boolean;
  /** Bytes of payload after the header (next_packet_size). */
  payloadBytes: number;
}

/**
 * Writes the header of a packet of pages into `out`: its page offsets into `offsets` first, in packet
 * order (the normal pages', ascending, then the zero pages'), and from them the header's.
 */
export function encodePagesHeader(out: Uint8Array, headerSize: number, p: PagesPacket, offsets: number[] | Float64Array): void {
  const normal = p.pages - p.zeros;
  let n = 0;
  let z = normal;
  for (let i = 0; i < p.pages; i++) offsets[p.zero[i] ? z++ : n++] = (p.list ? p.list[i]! : p.first + i) * p.pageSize;
  encodePacketHeader(out, headerSize, {
    flags: p.flags,
    pagesAlloc: pageCount(p.pageSize),
    normalPages: normal,
    zeroPages: p.zeroPagesInHeader ? p.zeros : 0,
    nextPacketSize: p.payloadBytes,
    packetNum: p.packetNum,
    ramblock: p.ramblock,
    offsets,
  });
}

/** Byte offset of next_packet_size in the packet header (a big-endian u32). */
export const NEXT_PACKET_SIZE_OFFSET = 20;
/** Byte offset of flags in every packet kind's common 12 bytes (a big-endian u32). */
export const PACKET_FLAGS_OFFSET = 8;

/**
 * Decodes a header without judging it. `offsetCount` offsets are read (clamped
 * to what the buffer holds); offsets at or above 2^53 decode as Infinity so a
 * range check refuses them. Fewer than 320 bytes is a ProtocolError.
 */
export function decodePacketHeader(buf: Uint8Array, offsetCount: number): PacketHeader {
  if (buf.length < PACKET_HEADER_FIXED_SIZE) {
    throw new ProtocolError(
      'ERR_PACKET_TRUNCATED',
      `packet header of ${buf.length} bytes received, expected at least ${PACKET_HEADER_FIXED_SIZE}`,
    );
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const nameField = buf.subarray(64, 64 + RAMBLOCK_NAME_FIELD);
  const nul = nameField.indexOf(0);
  const n = Math.max(0, Math.min(offsetCount, Math.floor((buf.length - PACKET_HEADER_FIXED_SIZE) / 8)));
  const offsets = new Float64Array(n);
  for (let i = 0, p = PACKET_HEADER_FIXED_SIZE; i < n; i++, p += 8) {
    const hi = dv.getUint32(p);
    offsets[i] = hi >= 0x200000 ? Infinity : hi * TWO32 + dv.getUint32(p + 4);
  }
  return {
    magic: dv.getUint32(0),
    version: dv.getUint32(4),
    flags: dv.getUint32(8),
    pagesAlloc: dv.getUint32(12),
    normalPages: dv.getUint32(16),
    nextPacketSize: dv.getUint32(NEXT_PACKET_SIZE_OFFSET),
    packetNum: dv.getBigUint64(24),
    zeroPages: dv.getUint32(32),
    ramblock: nameField.subarray(0, nul === -1 ? RAMBLOCK_NAME_FIELD : nul),
    ramblockTerminated: nul !== -1,
    offsets,
  };
}

/**
 * How a channel's packets are framed and judged. "strict": mfd's peers, every
 * field checked as sent (checkPacketHeader). "qemu": as QEMU's receivers read
 * them: a packet without normal pages has no payload whatever its (possibly
 * stale) next_packet_size says, an exact-payload method's payload is normal x
 * page size, the ramblock name of a packet without pages is ignored, and the
 * compression bits count only on packets with normal pages (QEMU 7.2 sets
 * them only there).
 */
export type PacketProfile = 'strict' | 'qemu';

/** Bytes of payload after header `h` under `profile`, for a method whose payload is exact (or not). */
export function payloadLength(h: PacketHeader, profile: PacketProfile, exactPayload: boolean, pageSize: number): number {
  if (profile === 'strict') return h.nextPacketSize;
  return h.normalPages === 0 ? 0 : exactPayload ? h.normalPages * pageSize : h.nextPacketSize;
}

/**
 * The QEMU profile's judgement of a packet's kind from its flags, before a
 * RAM header is taken: QEMU 10.0's device-state packets (flag 0x40: VFIO
 * device state over multifd, the vfio-pci property x-migration-multifd-transfer)
 * have a shorter header of their own, and mfd keeps no VFIO state.
 */
export function checkPacketKind(flags: number, channel: number): void {
  if (!(flags & MULTIFD_FLAG_DEVICE_STATE)) return;
  throw new UnsupportedStreamError(
    `a device-state packet (flags ${hex(flags)}: VFIO device state over multifd, QEMU 10.0+): mfd keeps the RAM and the device state of the main channel only; turn x-migration-multifd-transfer off on the source's VFIO devices`,
    'ERR_QEMU_DEVICE_STATE_PACKET',
    { channel },
  );
}

/** What the receiver knows when it judges a header. */
export interface PacketCheckContext {
  channel: number;
  pageSize: number;
  /** Pages per packet for this page size (QEMU's page_count). */
  pageCount: number;
  /** The agreed method's flag value (compression bits). */
  methodFlag: number;
  /** Largest payload the method accepts for `normalPages` pages (next_packet_size bound). */
  maxPayload(normalPages: number): number;
  /** True when the method's payload length is fixed: exactly normalPages x pageSize. */
  exactPayload: boolean;
  lookupRamblock(name: string): { size: number } | undefined;
  /** Delta transfer was negotiated: reference packets (src/wire/delta-ref.ts) are accepted. */
  deltaRefs?: boolean;
}

/** The checks of every packet kind's common 12 bytes: magic and version (a ProtocolError naming the channel). */
export function checkPacketCommon(h: { magic: number; version: number }, channel: number): void {
  if (h.magic !== MULTIFD_MAGIC) {
    throw new ProtocolError('ERR_PACKET_MAGIC', `received packet magic ${hex(h.magic)}, expected ${hex(MULTIFD_MAGIC)}`, { channel });
  }
  if (h.version !== MULTIFD_VERSION) {
    throw new ProtocolError('ERR_PACKET_VERSION', `received packet version ${h.version}, expected ${MULTIFD_VERSION}`, { channel });
  }
}

/** Decoded ramblock name as text (UTF-8, invalid bytes replaced). */
export function ramblockName(h: PacketHeader): string {
  return Buffer.from(h.ramblock).toString('utf8');
}

/** Flag bits no QEMU version defines (MULTIFD_DEFINED_FLAGS): a ProtocolError, expecting `expected`. */
export function checkFlagBits(flags: number, expected: string, place: ErrorPlace): void {
  const unknown = (flags & ~MULTIFD_DEFINED_FLAGS) >>> 0;
  if (unknown !== 0) {
    throw new ProtocolError(
      'ERR_PACKET_FLAGS',
      `flags received ${hex(flags)}, expected ${expected} (unknown bits ${hex(unknown)}: no QEMU version defines them)`,
      place,
    );
  }
}

/**
 * The receiver's header checks: every check QEMU makes, in QEMU's order, plus
 * the ones it misses (unknown flag bits, unterminated name, offset alignment,
 * next_packet_size against the page counts, payload on a packet without pages).
 * Throws ProtocolError naming channel, packet and received vs expected values.
 * Returns the ramblock size when the packet has pages.
 */
export function checkPacketHeader(h: PacketHeader, ctx: PacketCheckContext): { ramblock: string; size: number } | null {
  const place = { channel: ctx.channel, packetNum: h.packetNum };
  checkPacketCommon(h, ctx.channel);
  if (h.flags & MULTIFD_FLAG_DEVICE_STATE) {
    throw new ProtocolError('ERR_PACKET_FLAGS', `received a device-state packet (flags ${hex(h.flags)}), which mfd does not accept`, place);
  }
  checkFlagBits(h.flags, hex(ctx.methodFlag), place);
  // An mfd delta reference packet (compression field 0x3c): checked on its own terms.
  if (isRefPacket(h)) return checkRefHeader(h, ctx);
  if (h.pagesAlloc > ctx.pageCount) {
    throw new ProtocolError('ERR_PACKET_PAGES_ALLOC', `received packet with ${h.pagesAlloc} pages, expected ${ctx.pageCount}`, place);
  }
  if (h.normalPages > h.pagesAlloc) {
    throw new ProtocolError(
      'ERR_PACKET_NORMAL_PAGES',
      `received packet with ${h.normalPages} non-zero pages, which exceeds maximum expected pages ${h.pagesAlloc}`,
      place,
    );
  }
  if (h.zeroPages > h.pagesAlloc - h.normalPages) {
    throw new ProtocolError(
      'ERR_PACKET_ZERO_PAGES',
      `received packet with ${h.zeroPages} zero pages, expected maximum ${h.pagesAlloc - h.normalPages}`,
      place,
    );
  }
  if (h.normalPages === 0) {
    if (h.nextPacketSize !== 0) {
      throw new ProtocolError(
        'ERR_PACKET_SIZE',
        `next_packet_size received ${h.nextPacketSize}, expected 0 for a packet without normal pages`,
        place,
      );
    }
  } else if (ctx.exactPayload) {
    const want = h.normalPages * ctx.pageSize;
    if (h.nextPacketSize !== want) {
      throw new ProtocolError(
        'ERR_PACKET_SIZE',
        `next_packet_size received ${h.nextPacketSize}, expected ${want} (${h.normalPages} normal pages x ${ctx.pageSize})`,
        place,
      );
    }
  } else {
    const max = ctx.maxPayload(h.normalPages);
    if (h.nextPacketSize === 0 || h.nextPacketSize > max) {
      throw new ProtocolError(
        'ERR_PACKET_SIZE',
        `next_packet_size received ${h.nextPacketSize}, expected 1..${max} for ${h.normalPages} normal pages`,
        place,
      );
    }
  }
  const pages = h.normalPages + h.zeroPages;
  if (pages === 0) return null;
  const method = h.flags & MULTIFD_FLAG_COMPRESSION_MASK;
  if (method !== ctx.methodFlag) {
    throw new ProtocolError('ERR_PACKET_METHOD', `flags received ${hex(method)}, expected ${hex(ctx.methodFlag)}`, place);
  }
  const name = ramblockName(h);
  if (!h.ramblockTerminated) {
    throw new ProtocolError('ERR_PACKET_RAMBLOCK', `ramblock name is not NUL-terminated within ${RAMBLOCK_NAME_FIELD} bytes`, place);
  }
  const block = ctx.lookupRamblock(name);
  if (block === undefined) {
    throw new ProtocolError('ERR_PACKET_RAMBLOCK', `unknown ram block "${name}"`, place);
  }
  if (h.offsets.length < pages) {
    throw new ProtocolError(
      'ERR_PACKET_TRUNCATED',
      `header holds ${h.offsets.length} offsets, received ${pages} pages (${h.normalPages} normal, ${h.zeroPages} zero)`,
      place,
    );
  }
  for (let i = 0; i < pages; i++) {
    const o = h.offsets[i]!;
    if (!(o < block.size)) {
      throw new ProtocolError(
        'ERR_PACKET_OFFSET',
        `offset ${o === Infinity ? '>= 2^53' : o} of page ${i} out of range for ram block "${name}" (received ${o === Infinity ? '>= 2^53' : o}, expected below ${block.size})`,
        place,
      );
    }
    if (o % ctx.pageSize !== 0) {
      throw new ProtocolError(
        'ERR_PACKET_OFFSET',
        `offset ${o} of page ${i} is not aligned (received ${o}, expected a multiple of ${ctx.pageSize})`,
        place,
      );
    }
  }
  return { ramblock: name, size: block.size };
}
