/**
 * Reads raw multifd channel streams (a channel's bytes as they crossed the
 * wire: init packet, then packets), ours or QEMU 7.2..10.x's, and reports
 * every packet, and the first error with its byte offset. The packets are
 * read by the receiver's channel reader (receiver/data-channel.ts
 * DataChannel) with the QEMU-tolerant profile: its framing, header checks
 * and decoders, one packet at a time so that the report and its error come
 * in stream order. Offsets past the counted pages are ignored, a packet
 * without normal pages has no payload whatever its (possibly stale)
 * next_packet_size says, an empty ramblock name is fine on a packet without
 * pages, and a SYNC flag may ride on a data packet (QEMU <= 8.2). Every
 * payload is decoded unless headersOnly; QEMU 10's device-state packets are
 * listed (idstr, instance, size), delta reference packets with their
 * references.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { PathTally } from '../offload/paths.js';
import { decodeInitPacket, uuidToString } from '../wire/init-packet.js';
import { payloadLength, type PacketHeader } from '../wire/packet.js';
import type { DeviceStateHeader } from '../wire/device-state.js';
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
import { largestPayload, methodByFlag, type CompressionMethod, type MethodReceiver } from '../methods/index.js';
import { createDecoder } from '../receiver/decoder.js';
import { DataChannel, type ChannelHost, type Decoder, type PagePlacer } from '../receiver/data-channel.js';
import { IoError, MfdError, ProtocolError, UsageError, errorText } from '../errors.js';
import { newChannelCounters } from '../stats/stats.js';
import { printable } from '../text.js';
import { isRefPacket, summarizeRefs } from '../wire/delta-ref.js';

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
  /** A delta reference packet (src/wire/delta-ref.ts): its references, as text (the first 16), and the pages they stand for. */
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
  /** The first error (reading stops there): its byte offset in the stream, code and message. */
  errors: { at: number; code: string; message: string }[];
}

export interface InspectOptions {
  /** --headers-only: frame and check the headers, do not decode the payloads. */
  headersOnly?: boolean;
}

/** Receives decoded pages (extract): block name, byte offset, page bytes (null: a zero page), packet number. */
export type PageSink = (ramblock: string, offset: number, page: Uint8Array | null, packetNum: bigint) => void;

/** Packets listed one by one in a report at most; the totals count them all. */
export const MAX_LISTED_PACKETS = 100_000;
/** Bytes read from a stream file at a time. */
const WINDOW = 4 << 20;

/** Reads bytes [at, at + n) of a stream (within its length) into a buffer of their own. */
type ReadAt = (at: number, n: number) => Buffer;

/**
 * A stream's bytes from `at` to `end`, as the 'data' events (at most WINDOW
 * bytes each, a fresh buffer each) of the ChannelSource the DataChannel
 * reads: while paused nothing is read, so memory stays bounded whatever the
 * stream's size. A read that fails goes to `failed`, not to the reader (it is
 * not the stream's fault).
 */
class WindowSource extends EventEmitter {
  private paused = false;
  private stopped = false;
  private running = false;

  constructor(
    private readonly read: ReadAt,
    private at: number,
    private readonly end: number,
    private readonly failed: (e: unknown) => void,
  ) {
    super();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    if (!this.running) this.run();
  }

  destroy(): void {
    this.stopped = true;
  }

  private run(): void {
    this.running = true;
    try {
      while (!this.paused && !this.stopped) {
        if (this.at >= this.end) {
          this.stopped = true;
          this.emit('end');
          break;
        }
        const n = Math.min(WINDOW, this.end - this.at);
        const chunk = this.read(this.at, n);
        this.at += n;
        this.emit('data', chunk);
      }
    } catch (e) {
      this.stopped = true;
      this.failed(e);
    } finally {
      this.running = false;
    }
  }
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
    const read: ReadAt = (at, n) => {
      const buf = Buffer.allocUnsafeSlow(n);
      let got = 0;
      while (got < n) {
        const r = fs.readSync(fd, buf, got, n - got, at + got);
        if (r === 0)
          throw new IoError('ERR_SHORT_READ', `reading stream "${file}": it ends at byte ${at + got}, expected ${at + n} (did it shrink?)`);
        got += r;
      }
      return buf;
    };
    return await inspectSource(read, st.size, file, pageSize, sink, opts);
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
  return inspectSource((at, n) => buf.subarray(at, at + n), buf.length, file, pageSize, sink, opts);
}

/** The report's name for a packet's flags: SYNC, DEVICE_STATE, the method (or delta-ref), unknown bits. */
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

function emptyReport(file: string, bytes: number, decoded: boolean): StreamReport {
  return {
    file,
    init: null,
    decoded,
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
      bytes,
    },
    errors: [],
  };
}

/**
 * The stream of `length` bytes that `read` reads: its init packet here, its
 * packets by a DataChannel (QEMU-tolerant profile, in order) whose host and
 * placer fill the report and hand decoded pages to `sink`. The first error
 * ends the reading; a failure that is not the stream's (reading the file,
 * writing the extraction) is thrown.
 */
async function inspectSource(
  read: ReadAt,
  length: number,
  file: string,
  pageSize: number,
  sink: PageSink | undefined,
  opts: InspectOptions,
): Promise<StreamReport> {
  const report = emptyReport(file, length, !opts.headersOnly);
  const t = report.totals;
  const error = (at: number, e: MfdError): void => void report.errors.push({ at, code: e.code, message: errorText(e) });
  if (length < INIT_PACKET_SIZE) {
    error(0, new ProtocolError('ERR_INIT_TRUNCATED', `stream of ${length} bytes is shorter than the ${INIT_PACKET_SIZE}-byte init packet`));
    return report;
  }
  const init = decodeInitPacket(read(0, INIT_PACKET_SIZE));
  report.init = { magic: hex(init.magic), version: init.version, uuid: uuidToString(init.uuid), id: init.id };
  if (init.magic !== MULTIFD_MAGIC) {
    error(0, new ProtocolError('ERR_INIT_MAGIC', `init packet magic ${hex(init.magic)}, expected ${hex(MULTIFD_MAGIC)}`));
    return report;
  }
  if (init.version !== MULTIFD_VERSION) {
    error(4, new ProtocolError('ERR_INIT_VERSION', `init packet version ${init.version}, expected ${MULTIFD_VERSION}`));
    return report;
  }
  const list = (p: InspectedPacket): void => {
    t.packets++;
    t.payloadBytes += p.kind === 'ram' ? p.payloadBytes : 0;
    if (report.packets.length < MAX_LISTED_PACKETS) report.packets.push(p);
  };
  const ramPacket = (h: PacketHeader, at: number, extra: Partial<InspectedPacket> = {}): void => {
    const normal = h.normalPages;
    const payloadBytes = payloadLength(h, 'qemu', false, pageSize);
    if (h.flags & MULTIFD_FLAG_SYNC) t.syncPackets++;
    t.normalPages += normal;
    t.zeroPages += h.zeroPages;
    list({
      at,
      kind: 'ram',
      packetNum: h.packetNum.toString(),
      flags: flagNames(h.flags),
      method: methodByFlag(h.flags & MULTIFD_FLAG_COMPRESSION_MASK)?.name ?? '?',
      ramblock: Buffer.from(h.ramblock).toString('utf8'),
      normalPages: normal,
      zeroPages: h.zeroPages,
      payloadBytes,
      ratio: normal ? Math.round((payloadBytes / (normal * pageSize)) * 1e4) / 1e4 : 0,
      ...extra,
    });
  };

  // The stream's method: the first packet with normal pages decides (as recv --qemu learns it); one
  // decoder for the stream (zlib and zstd carry history), the receiver's.
  let method: CompressionMethod | null = null;
  let decoder: Decoder | null = null;
  const receivers: MethodReceiver[] = [];
  const methodFor = (flag: number, channel: number, packetNum: bigint): CompressionMethod => {
    const m = methodByFlag(flag);
    const place = { channel, packetNum };
    if (!m) throw new ProtocolError('ERR_PACKET_METHOD', `flags received ${hex(flag)}: no method has them`, place);
    if (method && m !== method)
      throw new ProtocolError(
        'ERR_PACKET_METHOD',
        `flags received ${hex(flag)} (${m.name}), expected ${hex(method.flag)} (${method.name}, the method of earlier packets)`,
        place,
      );
    return (method = m);
  };
  const decode: Decoder = {
    decode: (payload, normal, packetNum) =>
      (decoder ??= createDecoder({
        channel: init.id,
        method: method!,
        pageSize,
        params: method!.params({}),
        tally: new PathTally(`${method!.name} decompression`),
        compute: null,
        receivers,
        fail: () => {},
      })).decode(payload, normal, packetNum),
  };

  /** The packets, and the decoded pages for the sink. */
  const placer: PagePlacer = {
    claim(h, at) {
      ramPacket(h, at);
      const normal = h.normalPages;
      if (normal + h.zeroPages === 0 || opts.headersOnly) return null;
      return (pages) => {
        t.decodedPages += normal;
        if (!sink) return;
        const name = Buffer.from(h.ramblock).toString('utf8');
        // Pages arrive as one buffer or a list of pages: either way, page j at j x pageSize of their concatenation.
        const all = pages.length === 1 ? pages[0]! : Buffer.concat(pages);
        for (let j = 0; j < normal; j++) sink(name, h.offsets[j]!, all.subarray(j * pageSize, (j + 1) * pageSize), h.packetNum);
        for (let j = normal; j < normal + h.zeroPages; j++) sink(name, h.offsets[j]!, null, h.packetNum);
      };
    },
  };

  const source = new WindowSource(read, INIT_PACKET_SIZE, length, (e) => settle(e));
  let channel: DataChannel | null = null;
  let settle: (thrown?: unknown) => void = () => {};
  const done = new Promise<void>((resolve, reject) => {
    settle = (thrown) => {
      source.destroy();
      if (thrown === undefined) resolve();
      else reject(thrown);
    };
  });
  const anyRamblock = { size: 2 ** 53 - pageSize };
  const host: ChannelHost = {
    pageSize,
    headerSize: packetHeaderSize(pageSize),
    profile: 'qemu',
    streamStart: INIT_PACKET_SIZE,
    endedAs: 'stream ended',
    inOrder: true,
    methodFor,
    check: {
      pageSize,
      pageCount: pageCount(pageSize),
      // The method's fields are methodFor()'s.
      methodFlag: 0,
      exactPayload: true,
      maxPayload: (n) => largestPayload(n, pageSize),
      // Any ramblock, of any size: a page that ends below 2^53 may be in one.
      lookupRamblock: () => anyRamblock,
      deltaRefs: true,
    },
    blocks: new Map(),
    zeroPageCrc: 0,
    inPlace: false,
    onPages: () => {},
    onIdle: () => {
      if (channel?.idle) settle();
    },
    fail: (e, at) => {
      // The stream's errors are reported; a failure that is not (writing the extraction), or a bug, is thrown.
      if (!(e instanceof MfdError) || e instanceof IoError) return settle(e);
      error(at ?? INIT_PACKET_SIZE, e);
      settle();
    },
    deviceState: (d: DeviceStateHeader, at: number) => {
      t.deviceStatePackets++;
      t.deviceStateBytes += d.nextPacketSize;
      list({
        at,
        kind: 'device-state',
        packetNum: '-',
        flags: flagNames(d.flags),
        method: '-',
        ramblock: Buffer.from(d.idstr).toString('utf8'),
        instanceId: d.instanceId,
        normalPages: 0,
        zeroPages: 0,
        payloadBytes: d.nextPacketSize,
        ratio: 0,
      });
    },
    refs: (h, payload, _channel, at) => {
      ramPacket(h, at, {
        payloadBytes: h.nextPacketSize,
        references: summarizeRefs(payload.length === 1 ? payload[0]! : Buffer.concat(payload)),
      });
      return Promise.resolve(0);
    },
  };
  try {
    channel = new DataChannel(init.id, source, Buffer.alloc(0), decode, newChannelCounters(init.id), host, placer);
    source.resume();
    await done;
  } finally {
    source.destroy();
    for (const r of receivers) r.cleanup();
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
  for (const e of r.errors) lines.push(`  error at byte ${e.at}: ${printable(e.message)} [${e.code}]`);
  if (r.errors.length > 0) lines.push('  (reading stops at the first error)');
  return lines.join('\n');
}
