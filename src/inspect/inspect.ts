/**
 * Reads raw multifd channel streams (a channel's bytes as they crossed the
 * wire: init packet, then packets), ours or QEMU 7.2..10.x's, and reports
 * every packet and every problem with its byte offset. Packets are framed
 * with the receiver's QEMU-tolerant profile (wire/packet.ts payloadLength):
 * offsets past the counted pages are ignored, a packet without normal pages
 * has no payload whatever its (possibly stale) next_packet_size says, an
 * empty ramblock name is fine on a packet without pages, and a SYNC flag may
 * ride on a data packet (QEMU <= 8.2). Every payload is decoded by the
 * receiver's decoder for its method (receiver/decoder.ts) unless headersOnly;
 * QEMU 10's device-state packets are listed (idstr, instance, size).
 */
import { PathTally } from '../accel/paths.js';
import fs from 'node:fs';
import { decodeInitPacket, uuidToString } from '../wire/init-packet.js';
import { decodePacketHeader, payloadLength } from '../wire/packet.js';
import { DEVICE_STATE_HEADER_SIZE, decodeDeviceStateHeader } from '../wire/device-state.js';
import {
  INIT_PACKET_SIZE,
  MULTIFD_DEFINED_FLAGS,
  MULTIFD_FLAG_COMPRESSION_MASK,
  MULTIFD_FLAG_DEVICE_STATE,
  MULTIFD_FLAG_SYNC,
  MULTIFD_MAGIC,
  MULTIFD_VERSION,
  hex,
  packetHeaderSize,
  pageCount,
} from '../wire/constants.js';
import { methodByFlag, type MethodReceiver } from '../methods/index.js';
import { createDecoder } from '../receiver/decoder.js';
import type { Decoder } from '../receiver/data-channel.js';
import { IoError, UsageError } from '../errors.js';
import { printable } from '../text.js';
import { MAX_REFS_PER_PACKET, REF_ENTRY_SIZE, decodeRefs, describeRef, isRefPacket } from '../delta/wire.js';

export interface InspectedPacket {
  /** Byte offset of the header in the stream. */
  at: number;
  /** "ram", or "device-state" (QEMU 10.0+, flag 0x40: no packet_num, method or pages). */
  kind: 'ram' | 'device-state';
  /** "-" for a device-state packet. */
  packetNum: string;
  flags: string;
  method: string;
  /** The ramblock; a device-state packet's idstr. */
  ramblock: string;
  /** A device-state packet's instance_id. */
  instanceId?: number;
  normalPages: number;
  zeroPages: number;
  payloadBytes: number;
  /** payload bytes / (normal pages x page size); 0 without normal pages. */
  ratio: number;
  /** A delta reference packet (src/delta/wire.ts): its references, as text (the first 16), and the pages they stand for. */
  references?: { count: number; pages: number; first: string[] };
}

export interface StreamReport {
  file: string;
  init: { magic: string; version: number; uuid: string; id: number } | null;
  /** False with headersOnly: payloads were not decoded. */
  decoded: boolean;
  packets: InspectedPacket[];
  totals: {
    packets: number;
    syncPackets: number;
    normalPages: number;
    zeroPages: number;
    payloadBytes: number;
    /** Normal pages whose payload decoded to whole pages. */
    decodedPages: number;
    deviceStatePackets: number;
    deviceStateBytes: number;
    bytes: number;
  };
  errors: { at: number; message: string }[];
}

export interface InspectOptions {
  /** --headers-only: frame and check the headers, do not decode the payloads. */
  headersOnly?: boolean;
}

/** Receives decoded pages (extract): block name, byte offset, page bytes (null: a zero page), packet number. */
export type PageSink = (ramblock: string, offset: number, page: Uint8Array | null, packetNum: bigint) => void;

function flagNames(flags: number): string {
  const names: string[] = [];
  if (flags & MULTIFD_FLAG_SYNC) names.push('SYNC');
  if (flags & MULTIFD_FLAG_DEVICE_STATE) names.push('DEVICE_STATE');
  // A device-state packet has no method (its compression bits are an error).
  const m = methodByFlag(flags & MULTIFD_FLAG_COMPRESSION_MASK);
  if (!(flags & MULTIFD_FLAG_DEVICE_STATE) || flags & MULTIFD_FLAG_COMPRESSION_MASK) {
    names.push(m ? m.name : isRefPacket({ flags }) ? 'delta-ref' : `method?${hex(flags & MULTIFD_FLAG_COMPRESSION_MASK)}`);
  }
  const unknown = (flags & ~MULTIFD_DEFINED_FLAGS) >>> 0;
  if (unknown) names.push(`unknown${hex(unknown)}`);
  return names.join('|');
}

/** Packets listed one by one in a report at most; the totals count them all. */
export const MAX_LISTED_PACKETS = 100_000;
/** Bytes read from a stream file at a time. */
const WINDOW = 4 << 20;
/** magic, version, flags: common to every packet kind. */
const COMMON_HEADER_SIZE = 12;

/** Random access to a stream's bytes: a buffer, or a file read a window at a time. */
interface Bytes {
  readonly length: number;
  /** Bytes [at, at + n), within length. */
  read(at: number, n: number): Buffer | Promise<Buffer>;
}

/**
 * Reads a stream file a window at a time (its memory does not grow with the
 * file). Only regular files: a pipe or a device (/dev/urandom) has no end to
 * report on, and is refused.
 */
export async function inspectStream(file: string, pageSize: number, sink?: PageSink, opts: InspectOptions = {}): Promise<StreamReport> {
  let fd: number;
  try {
    // Judged before opening: opening a pipe for reading waits for a writer.
    refuseUnlessFile(fs.statSync(file), file);
    fd = fs.openSync(file, 'r');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new IoError(`ERR_${err.code ?? 'OPEN'}`, `cannot read stream "${file}": ${err.message}`, e);
  }
  try {
    const st = fs.fstatSync(fd);
    refuseUnlessFile(st, file);
    let start = 0;
    let window = Buffer.alloc(0);
    const bytes: Bytes = {
      length: st.size,
      read(at, n) {
        if (at >= start && at + n <= start + window.length) return window.subarray(at - start, at - start + n);
        const want = Math.min(Math.max(n, WINDOW), st.size - at);
        if (window.length < want) window = Buffer.alloc(want);
        let got = 0;
        while (got < want) {
          const r = fs.readSync(fd, window, got, want - got, at + got);
          if (r === 0)
            throw new IoError(
              'ERR_SHORT_READ',
              `reading stream "${file}": it ends at byte ${at + got}, expected ${at + want} (did it shrink?)`,
            );
          got += r;
        }
        start = at;
        window = window.subarray(0, want);
        return window.subarray(0, n);
      },
    };
    return await inspectSource(bytes, file, pageSize, sink, opts);
  } finally {
    fs.closeSync(fd);
  }
}

function refuseUnlessFile(st: fs.Stats, file: string): void {
  if (st.isFile()) return;
  const kind = st.isFIFO()
    ? 'a pipe'
    : st.isCharacterDevice()
      ? 'a character device'
      : st.isBlockDevice()
        ? 'a block device'
        : st.isSocket()
          ? 'a socket'
          : st.isDirectory()
            ? 'a directory'
            : 'not a regular file';
  throw new UsageError(
    `mfd inspect reads regular files: "${file}" is ${kind} (save the stream to a file first, e.g. with mfd recv --dump-streams)`,
  );
}

/** inspectStream on bytes already read; `file` names them in the report. */
export async function inspectBytes(
  buf: Buffer,
  file: string,
  pageSize: number,
  sink?: PageSink,
  opts: InspectOptions = {},
): Promise<StreamReport> {
  return inspectSource({ length: buf.length, read: (at, n) => buf.subarray(at, at + n) }, file, pageSize, sink, opts);
}

async function inspectSource(
  buf: Bytes,
  file: string,
  pageSize: number,
  sink: PageSink | undefined,
  opts: InspectOptions,
): Promise<StreamReport> {
  const report: StreamReport = {
    file,
    init: null,
    decoded: !opts.headersOnly,
    packets: [],
    totals: {
      packets: 0,
      syncPackets: 0,
      normalPages: 0,
      zeroPages: 0,
      payloadBytes: 0,
      decodedPages: 0,
      deviceStatePackets: 0,
      deviceStateBytes: 0,
      bytes: buf.length,
    },
    errors: [],
  };
  const err = (at: number, message: string): void =>
    void (report.errors.length < MAX_LISTED_PACKETS && report.errors.push({ at, message }));
  const list = (p: InspectedPacket): void => void (report.packets.length < MAX_LISTED_PACKETS && report.packets.push(p));
  if (buf.length < INIT_PACKET_SIZE) {
    err(0, `stream of ${buf.length} bytes is shorter than the ${INIT_PACKET_SIZE}-byte init packet`);
    return report;
  }
  const init = decodeInitPacket(await buf.read(0, INIT_PACKET_SIZE));
  report.init = { magic: hex(init.magic), version: init.version, uuid: uuidToString(init.uuid), id: init.id };
  if (init.magic !== MULTIFD_MAGIC) err(0, `init packet magic ${hex(init.magic)}, expected ${hex(MULTIFD_MAGIC)}`);
  if (init.version !== MULTIFD_VERSION) err(4, `init packet version ${init.version}, expected ${MULTIFD_VERSION}`);
  const hs = packetHeaderSize(pageSize);
  const perPacket = pageCount(pageSize);
  const t = report.totals;
  // The receiver's decoders (inline), one per method seen, kept for the whole stream (zlib/zstd carry history).
  const decoders = new Map<number, { decoder: Decoder; receivers: MethodReceiver[] }>();
  const drop = (flag: number): void => {
    for (const r of decoders.get(flag)?.receivers ?? []) r.cleanup();
    decoders.delete(flag);
  };

  /** A device-state packet at `at` (flags read): listed, judged as QEMU 10 judges it, its opaque state skipped. Returns the next packet's offset, or -1 at the end. */
  const deviceState = async (at: number, flags: number): Promise<number> => {
    if (buf.length - at < DEVICE_STATE_HEADER_SIZE) {
      err(at, `truncated device-state packet header: ${buf.length - at} of ${DEVICE_STATE_HEADER_SIZE} bytes`);
      return -1;
    }
    const d = decodeDeviceStateHeader(Buffer.from(await buf.read(at, DEVICE_STATE_HEADER_SIZE)));
    const kind = flags & MULTIFD_FLAG_COMPRESSION_MASK;
    if (kind)
      err(
        at,
        `device-state packet with compression bits ${hex(kind)} (flags ${hex(flags)}): no QEMU version defines that packet kind; its state cannot be read`,
      );
    if (flags & MULTIFD_FLAG_SYNC) err(at, `device-state packet with the SYNC flag (flags ${hex(flags)}), which QEMU refuses`);
    if (!d.idstrTerminated) err(at, 'device-state packet idstr is not NUL-terminated');
    if (d.nextPacketSize === 0) err(at, 'empty device-state packet (next_packet_size 0), which QEMU refuses');
    const payloadAt = at + DEVICE_STATE_HEADER_SIZE;
    if (payloadAt + d.nextPacketSize > buf.length) {
      err(payloadAt, `truncated device state: ${buf.length - payloadAt} of ${d.nextPacketSize} bytes`);
      return -1;
    }
    const idstr = Buffer.from(d.idstr).toString('utf8');
    list({
      at,
      kind: 'device-state',
      packetNum: '-',
      flags: flagNames(flags),
      method: '-',
      ramblock: idstr,
      instanceId: d.instanceId,
      normalPages: 0,
      zeroPages: 0,
      payloadBytes: d.nextPacketSize,
      ratio: 0,
    });
    t.packets++;
    t.deviceStatePackets++;
    t.deviceStateBytes += d.nextPacketSize;
    return payloadAt + d.nextPacketSize;
  };

  try {
    for (let at = INIT_PACKET_SIZE; at < buf.length;) {
      // The common 12 bytes say which kind of packet follows (and how long its header is).
      if (buf.length - at < COMMON_HEADER_SIZE) {
        err(at, `truncated packet header: ${buf.length - at} of ${hs} bytes`);
        break;
      }
      const common = await buf.read(at, COMMON_HEADER_SIZE);
      const magic = common.readUInt32BE(0);
      const version = common.readUInt32BE(4);
      const flags = common.readUInt32BE(8);
      if (magic !== MULTIFD_MAGIC || version !== MULTIFD_VERSION) {
        err(
          at,
          `packet magic ${hex(magic)} version ${version}, expected ${hex(MULTIFD_MAGIC)} version ${MULTIFD_VERSION}; cannot find the next packet`,
        );
        break;
      }
      const undefinedBits = (flags & ~MULTIFD_DEFINED_FLAGS) >>> 0;
      if (undefinedBits) err(at, `flags ${hex(flags)}: bits ${hex(undefinedBits)} are defined by no QEMU version`);
      if (flags & MULTIFD_FLAG_DEVICE_STATE) {
        at = await deviceState(at, flags);
        if (at < 0) break;
        continue;
      }
      if (buf.length - at < hs) {
        err(at, `truncated packet header: ${buf.length - at} of ${hs} bytes`);
        break;
      }
      const h = decodePacketHeader(Buffer.from(await buf.read(at, hs)), perPacket);
      const name = Buffer.from(h.ramblock).toString('utf8');
      const flag = h.flags & MULTIFD_FLAG_COMPRESSION_MASK;
      const method = methodByFlag(flag);
      let normal = h.normalPages;
      let zero = h.zeroPages;
      if (h.pagesAlloc > perPacket) err(at, `pages_alloc ${h.pagesAlloc}, expected at most ${perPacket} (is the page size ${pageSize}?)`);
      if (normal > perPacket || zero > perPacket - Math.min(normal, perPacket)) {
        err(at, `page counts normal ${normal} + zero ${zero} exceed ${perPacket} pages per packet; counts ignored`);
        normal = 0;
        zero = 0;
      }
      // Framed as QEMU's receivers read it (the tolerant profile reads mfd's streams too); a delta
      // reference packet (an mfd extension) by its own length.
      const refs = isRefPacket(h);
      if (refs && (h.nextPacketSize % REF_ENTRY_SIZE !== 0 || h.nextPacketSize > MAX_REFS_PER_PACKET * REF_ENTRY_SIZE)) {
        err(
          at,
          `delta reference packet: next_packet_size ${h.nextPacketSize}, expected a multiple of ${REF_ENTRY_SIZE} up to ${MAX_REFS_PER_PACKET * REF_ENTRY_SIZE}; cannot find the next packet`,
        );
        break;
      }
      const payloadLen = refs
        ? h.nextPacketSize
        : payloadLength({ ...h, normalPages: normal }, 'qemu', method?.exactPayload ?? false, pageSize);
      if (normal > 0 && method?.exactPayload && h.nextPacketSize !== payloadLen)
        err(at, `next_packet_size ${h.nextPacketSize}, expected ${payloadLen}`);
      const payloadAt = at + hs;
      if (payloadAt + payloadLen > buf.length) {
        err(payloadAt, `truncated payload: ${buf.length - payloadAt} of ${payloadLen} bytes`);
        break;
      }
      const pages = normal + zero;
      if (pages > 0 && !method) err(at, `flags ${hex(h.flags)} name no known method`);
      if (pages > 0 && !h.ramblockTerminated) err(at, 'ramblock name is not NUL-terminated');
      // A page whose offset cannot be one (2^53 or more, unaligned) is reported and never extracted.
      const placeable = (i: number): boolean => Number.isSafeInteger(h.offsets[i]! + pageSize) && h.offsets[i]! % pageSize === 0;
      for (let i = 0; i < pages; i++) {
        const o = h.offsets[i]!;
        if (!Number.isSafeInteger(o + pageSize))
          err(at, `offset of page ${i} is ${o === Infinity ? '2^53 or more' : o}, its page ends past 2^53: past any ramblock`);
        else if (o % pageSize !== 0) err(at, `offset ${o} of page ${i} is not a multiple of ${pageSize}`);
      }
      if (method && normal > 0 && payloadLen > method.maxPayload(normal, pageSize)) {
        err(
          payloadAt,
          `payload of ${payloadLen} bytes, expected at most ${method.maxPayload(normal, pageSize)} for ${normal} pages of ${method.name}: not decoded`,
        );
      } else if (method && normal > 0 && !opts.headersOnly) {
        const payload = Buffer.from(await buf.read(payloadAt, payloadLen));
        let dec = decoders.get(flag);
        if (!dec) {
          const receivers: MethodReceiver[] = [];
          const setup = { channel: init.id, method, pageSize, params: method.params({}), compute: null, receivers };
          decoders.set(
            flag,
            (dec = {
              decoder: createDecoder({ ...setup, tally: new PathTally(`${method.name} decompression`), fail: () => {} }),
              receivers,
            }),
          );
        }
        let out: Buffer | null = null;
        try {
          out = Buffer.concat(await dec.decoder.decode([payload], normal, h.packetNum));
        } catch (e) {
          // Each payload that does not decode is an error; the next one starts a fresh decoder (as a
          // stream method's history is lost, its later payloads fail too, and are reported so).
          err(payloadAt, (e as Error).message);
          drop(flag);
        }
        if (out) t.decodedPages += normal;
        // Outside the try: a failure to write the extraction is not the payload's fault.
        if (out && sink)
          for (let j = 0; j < normal; j++)
            if (placeable(j)) sink(name, h.offsets[j]!, out.subarray(j * pageSize, (j + 1) * pageSize), h.packetNum);
      }
      if (sink) for (let j = normal; j < pages; j++) if (placeable(j)) sink(name, h.offsets[j]!, null, h.packetNum);
      let references: InspectedPacket['references'];
      if (refs) {
        const list = decodeRefs(Buffer.from(await buf.read(payloadAt, payloadLen)));
        references = { count: list.length, pages: list.reduce((a, r) => a + r.count, 0), first: list.slice(0, 16).map(describeRef) };
      }
      list({
        at,
        kind: 'ram',
        packetNum: h.packetNum.toString(),
        flags: flagNames(h.flags),
        method: method?.name ?? '?',
        ramblock: name,
        normalPages: normal,
        zeroPages: zero,
        payloadBytes: payloadLen,
        ratio: normal ? Math.round((payloadLen / (normal * pageSize)) * 1e4) / 1e4 : 0,
        ...(references ? { references } : {}),
      });
      t.packets++;
      if (h.flags & MULTIFD_FLAG_SYNC) t.syncPackets++;
      t.normalPages += normal;
      t.zeroPages += zero;
      t.payloadBytes += payloadLen;
      at = payloadAt + payloadLen;
    }
  } finally {
    for (const flag of [...decoders.keys()]) drop(flag);
  }
  return report;
}

/**
 * Rebuilds one ramblock from the streams into `file`: for each page the
 * highest packet_num wins (a page re-sent in a later pass); zero pages are
 * holes (or zeroed when a later packet zeroes an earlier page).
 */
export function extractSink(block: string, file: string, pageSize: number): { sink: PageSink; close(): number } {
  const io = <T>(what: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new IoError(
        err.code?.startsWith('ERR_') ? err.code : `ERR_${err.code ?? 'EXTRACT'}`,
        `--extract ${block}: ${what} "${file}": ${err.message}`,
        e,
      );
    }
  };
  const fd = io('cannot open', () => fs.openSync(file, 'w'));
  const newest = new Map<number, bigint>();
  let size = 0;
  const zeros = new Uint8Array(pageSize);
  return {
    sink(name, offset, page, packetNum) {
      if (name !== block) return;
      const seen = newest.get(offset);
      if (seen !== undefined && seen > packetNum) return;
      newest.set(offset, packetNum);
      if (page) io(`writing the page at offset ${offset} to`, () => fs.writeSync(fd, page, 0, pageSize, offset));
      else if (seen !== undefined) io(`zeroing the page at offset ${offset} in`, () => fs.writeSync(fd, zeros, 0, pageSize, offset));
      size = Math.max(size, offset + pageSize);
    },
    close() {
      try {
        io('cannot size', () => fs.ftruncateSync(fd, size));
      } finally {
        fs.closeSync(fd);
      }
      return newest.size;
    },
  };
}

export function formatReport(r: StreamReport): string {
  const lines = [`${r.file}: ${r.totals.bytes} bytes`];
  if (r.init) lines.push(`  init: magic ${r.init.magic} version ${r.init.version} uuid ${r.init.uuid} channel ${r.init.id}`);
  lines.push('  packet_num  flags             ramblock              normal  zero  payload  ratio');
  for (const p of r.packets) {
    // A device-state packet: its idstr and instance in the ramblock column.
    const where = p.instanceId === undefined ? p.ramblock : `${p.ramblock} #${p.instanceId}`;
    lines.push(
      `  ${p.packetNum.padStart(10)}  ${p.flags.padEnd(16)}  ${printable(where).slice(0, 20).padEnd(20)}  ${String(p.normalPages).padStart(6)}  ${String(p.zeroPages).padStart(4)}  ${String(p.payloadBytes).padStart(7)}  ${p.ratio.toFixed(3)}`,
    );
    const refs = p.references;
    if (refs) {
      lines.push(`              ${refs.count} reference(s) for ${refs.pages} page(s):`);
      for (const d of refs.first) lines.push(`                ${d}`);
      if (refs.first.length < refs.count) lines.push(`                ... ${refs.count - refs.first.length} more`);
    }
  }
  const t = r.totals;
  lines.push(
    `  totals: ${t.packets} packets (${t.syncPackets} SYNC), normal pages ${t.normalPages}, zero pages ${t.zeroPages}, payload ${t.payloadBytes} bytes`,
  );
  if (t.deviceStatePackets > 0) lines.push(`  device state: ${t.deviceStatePackets} packets, ${t.deviceStateBytes} bytes`);
  lines.push(r.decoded ? `  decoded: ${t.decodedPages} of ${t.normalPages} normal pages` : '  payloads not decoded (--headers-only)');
  if (r.packets.length < t.packets) lines.push(`  (the first ${r.packets.length} packets listed)`);
  for (const e of r.errors) lines.push(`  error at byte ${e.at}: ${printable(e.message)}`);
  return lines.join('\n');
}
