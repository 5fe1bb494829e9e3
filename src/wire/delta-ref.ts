/**
 * Delta reference packets (docs/wire-format.md, "Delta references"): an mfd
 * extension on the multifd channels, sent only when the control channel
 * negotiated delta transfer. The header is a RAM packet header whose
 * compression field is 0x3c, a value no QEMU method has (each of QEMU's is
 * one bit), with no normal and no zero pages; the payload is a list of
 * 24-byte references, each naming a run of pages of the packet's ramblock
 * and where the receiver finds their contents:
 *
 *   u32 source   base number (0..bases-1), or 0x80000000 | ramblock index
 *                (the hello's order) for pages sent earlier in this migration,
 *                or 0x7fffffff for zero pages (src 0)
 *   u32 count    pages in the run, at least 1
 *   u64 dst      first page index in the packet's ramblock
 *   u64 src      first page index in the source
 *
 * all big-endian.
 */
import { ProtocolError } from '../errors.js';
import { MULTIFD_FLAG_COMPRESSION_MASK, MULTIFD_PACKET_SIZE, hex } from './constants.js';
import { ramblockName, type PacketCheckContext, type PacketHeader } from './packet.js';

/** The compression field of a reference packet. */
export const MFD_FLAG_DELTA_REF = 0x3c;
export const REF_ENTRY_SIZE = 24;
/** Most references in one packet: the payload stays within a RAM packet's 512 KiB. */
export const MAX_REFS_PER_PACKET = Math.floor(MULTIFD_PACKET_SIZE / REF_ENTRY_SIZE);
/** `source` bit for a reference to a page of this migration. */
export const SOURCE_MIGRATION = 0x80000000;
/**
 * `source` of a run of zero pages: zero pages beside references travel in the
 * reference packet, so the data packets are not cut at each of them.
 */
export const SOURCE_ZERO = 0x7fffffff;

export interface PageRef {
  source: number;
  count: number;
  dst: number;
  src: number;
}

export function isRefPacket(h: Pick<PacketHeader, 'flags'>): boolean {
  return (h.flags & MULTIFD_FLAG_COMPRESSION_MASK) === MFD_FLAG_DELTA_REF;
}

/** The payload of one reference packet. */
export function encodeRefs(refs: readonly PageRef[]): Buffer {
  const b = Buffer.alloc(refs.length * REF_ENTRY_SIZE);
  refs.forEach((r, i) => {
    const p = i * REF_ENTRY_SIZE;
    b.writeUInt32BE(r.source >>> 0, p);
    b.writeUInt32BE(r.count, p + 4);
    writeU64(b, r.dst, p + 8);
    writeU64(b, r.src, p + 16);
  });
  return b;
}

/** Writes `v` (a whole number below 2^53) as a big-endian u64 at `p`, without a BigInt. */
function writeU64(b: Buffer, v: number, p: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`delta reference index ${v}: expected a whole number in 0..2^53 - 1`);
  b.writeUInt32BE(Math.floor(v / 0x100000000), p);
  b.writeUInt32BE(v >>> 0, p + 4);
}

/** Decodes a payload whose length is a multiple of REF_ENTRY_SIZE (the header check saw to that); indices past 2^53 decode as Infinity. */
export function decodeRefs(payload: Uint8Array): PageRef[] {
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const out: PageRef[] = [];
  // Two 32-bit halves, not a BigInt each (a reference packet holds thousands): at most 2^53 - 1, else Infinity.
  const big = (p: number): number => {
    const hi = b.readUInt32BE(p);
    return hi >= 0x200000 ? Infinity : hi * 0x100000000 + b.readUInt32BE(p + 4);
  };
  for (let p = 0; p + REF_ENTRY_SIZE <= b.length; p += REF_ENTRY_SIZE) {
    out.push({ source: b.readUInt32BE(p), count: b.readUInt32BE(p + 4), dst: big(p + 8), src: big(p + 16) });
  }
  return out;
}

/**
 * The header checks of a reference packet (called by checkPacketHeader for
 * the 0x3c compression field). Without delta negotiated (`ctx.deltaRefs`
 * unset) it is refused as a method mismatch, naming what it is.
 */
export function checkRefHeader(h: PacketHeader, ctx: PacketCheckContext): { ramblock: string; size: number } {
  const place = { channel: ctx.channel, packetNum: h.packetNum };
  if (!ctx.deltaRefs) {
    throw new ProtocolError(
      'ERR_PACKET_METHOD',
      `flags received ${hex(h.flags & MULTIFD_FLAG_COMPRESSION_MASK)} (an mfd delta reference packet), expected ${hex(ctx.methodFlag)}: delta transfer was not negotiated`,
      place,
    );
  }
  if (h.pagesAlloc !== ctx.pageCount)
    throw new ProtocolError(
      'ERR_PACKET_PAGES_ALLOC',
      `delta reference packet: pages_alloc received ${h.pagesAlloc}, expected ${ctx.pageCount}`,
      place,
    );
  if (h.normalPages !== 0 || h.zeroPages !== 0) {
    throw new ProtocolError(
      'ERR_PACKET_NORMAL_PAGES',
      `delta reference packet: received ${h.normalPages} normal and ${h.zeroPages} zero pages, expected 0 and 0`,
      place,
    );
  }
  if (h.nextPacketSize === 0 || h.nextPacketSize % REF_ENTRY_SIZE !== 0 || h.nextPacketSize > MAX_REFS_PER_PACKET * REF_ENTRY_SIZE) {
    throw new ProtocolError(
      'ERR_PACKET_SIZE',
      `delta reference packet: next_packet_size received ${h.nextPacketSize}, expected a multiple of ${REF_ENTRY_SIZE} in ${REF_ENTRY_SIZE}..${MAX_REFS_PER_PACKET * REF_ENTRY_SIZE}`,
      place,
    );
  }
  const name = ramblockName(h);
  if (!h.ramblockTerminated) throw new ProtocolError('ERR_PACKET_RAMBLOCK', 'ramblock name is not NUL-terminated within 256 bytes', place);
  const block = ctx.lookupRamblock(name);
  if (block === undefined) throw new ProtocolError('ERR_PACKET_RAMBLOCK', `unknown ram block "${name}"`, place);
  return { ramblock: name, size: block.size };
}

/** What a reference may point at: the sizes in pages of the bases and of the migration's ramblocks. */
export interface RefLimits {
  basePages: readonly number[];
  blockPages: readonly number[];
}

/**
 * Checks one reference against its packet's ramblock (`pages` pages) and
 * the sources; a ProtocolError names the reference, received vs expected.
 */
export function checkRef(
  r: PageRef,
  i: number,
  pages: number,
  limits: RefLimits,
  name: string,
  place: { channel: number; packetNum: bigint },
): void {
  const what = `delta reference ${i} of ram block "${name}"`;
  if (r.count < 1 || !(r.dst + r.count <= pages)) {
    throw new ProtocolError(
      'ERR_DELTA_REF',
      `${what}: pages ${r.dst}..${r.dst + r.count - 1} received, expected a run of at least 1 within the block's ${pages} pages`,
      place,
    );
  }
  if (r.source === SOURCE_ZERO) {
    if (r.src !== 0)
      throw new ProtocolError('ERR_DELTA_REF', `${what}: a run of zero pages with source page ${r.src} received, expected 0`, place);
    return;
  }
  const migration = (r.source & SOURCE_MIGRATION) !== 0;
  const index = migration ? r.source & ~SOURCE_MIGRATION : r.source;
  const sizes = migration ? limits.blockPages : limits.basePages;
  const kind = migration ? 'ram block' : 'base';
  if (index >= sizes.length)
    throw new ProtocolError('ERR_DELTA_REF', `${what}: source ${kind} ${index} received, expected below ${sizes.length}`, place);
  if (!(r.src + r.count <= sizes[index]!)) {
    throw new ProtocolError(
      'ERR_DELTA_REF',
      `${what}: source pages ${r.src}..${r.src + r.count - 1} of ${kind} ${index} received, expected within its ${sizes[index]} pages`,
      place,
    );
  }
}

/** One reference as `mfd inspect` prints it. */
export function describeRef(r: PageRef): string {
  if (r.source === SOURCE_ZERO) return `${r.count} zero page(s) at ${r.dst}`;
  const src = (r.source & SOURCE_MIGRATION) !== 0 ? `ramblock#${r.source & ~SOURCE_MIGRATION}` : `base#${r.source}`;
  return `${r.count} page(s) at ${r.dst} <- ${src} page ${r.src}`;
}

/** A reference packet's payload as `mfd inspect` lists it: how many references, the pages they stand for, the first 16 described. */
export function summarizeRefs(payload: Uint8Array): { count: number; pages: number; first: string[] } {
  const list = decodeRefs(payload);
  return { count: list.length, pages: list.reduce((a, r) => a + r.count, 0), first: list.slice(0, 16).map(describeRef) };
}
