/**
 * The stream layout: after the header, every channel's packets as they would
 * cross the wire (multifd header + payload), each framed as a record with its
 * channel id and a CRC-32C, in the order the channels produced them; zero
 * pages are listed in the headers and never stored. Restore reads the records
 * in order and hands each channel's packets to that channel's receiver, so
 * stream methods (zlib, zstd) decode per channel, in order.
 */
import type { ChannelSink, OutgoingPacket } from '../sender/pipeline.js';
import type { ChannelCounters } from '../stats/stats.js';
import { native } from '../native/load.js';
import { preadPieces } from '../native/file-io.js';
import { ByteQueue } from '../transport/byte-queue.js';
import {
  decodeRecordHeader,
  encodeRecordHeader,
  fileError,
  recordCrcError,
  RECORD_CRC_SIZE,
  RECORD_HEADER_SIZE,
  type RecordHeader,
} from './format.js';
import type { ByteWriter } from './writer.js';

/** Per-ramblock page counts, for the trailer. */
export interface BlockCounts {
  normalPages: number;
  zeroPages: number;
}

/** Channel `channel`'s packets as records in the file's writer. */
export function streamSink(writer: ByteWriter, channel: number, counters: ChannelCounters, blocks: BlockCounts[]): ChannelSink {
  // One record in flight per channel (the pipeline waits for write()), so one header buffer does.
  const header = new Uint8Array(RECORD_HEADER_SIZE);
  return {
    async write(p: OutgoingPacket): Promise<void> {
      const length = p.pieces.reduce((a, c) => a + c.length, 0);
      encodeRecordHeader(header, channel, length);
      try {
        await writer.append([header, ...p.pieces], true);
      } finally {
        p.done();
      }
      counters.wireBytes += RECORD_HEADER_SIZE + length + RECORD_CRC_SIZE;
      if (p.block) {
        blocks[p.block.index]!.normalPages += p.normal;
        blocks[p.block.index]!.zeroPages += p.zeros;
      }
    },
    end: async () => {},
  };
}

/** One record: where it is, its channel, and its packet (header + payload) as views of the read buffers. */
export interface FileRecord {
  /** Absolute byte offset of the record in the file. */
  at: number;
  channel: number;
  /** The packet's bytes, possibly in several pieces. */
  packet: Uint8Array[];
  length: number;
}

export interface RecordReaderOptions {
  fd: number;
  /** The migration's first byte in the file (offset=N). */
  base: number;
  /** Relative range of the records: the header's data offset to the trailer's data end. */
  start: number;
  end: number;
  channels: number;
  /** The packet header length for the page size. */
  headerSize: number;
  /** Largest packet (header + payload) the method allows. */
  maxPacket: number;
  /** Read size (bytes), two reads in flight. */
  chunk?: number;
  /** What `end` is, for errors (default: the trailer's data end). */
  endIs?: string;
}

const DEFAULT_CHUNK = 8 << 20;

/** Reads u32 (big-endian) at byte `at` of the concatenated pieces. */
function u32At(pieces: Uint8Array[], at: number): number {
  const b = new Uint8Array(4);
  let got = 0;
  let base = 0;
  for (const p of pieces) {
    while (got < 4 && at + got < base + p.length) {
      b[got] = p[at + got - base]!;
      got++;
    }
    if (got === 4) break;
    base += p.length;
  }
  return new DataView(b.buffer).getUint32(0);
}

/**
 * The records between `start` and `end`, in file order, each checked: record
 * magic, channel below the header's count, length within the method's bound
 * and equal to the packet header's own (320-byte fixed part: next_packet_size),
 * and the CRC. Throws ProtocolError naming the record's byte offset.
 */
export async function* readRecords(o: RecordReaderOptions): AsyncGenerator<FileRecord> {
  const chunk = o.chunk ?? DEFAULT_CHUNK;
  const q = new ByteQueue();
  let readAt = o.start;
  /** Absolute offset of the first byte in q. */
  let qAt = o.base + o.start;
  const read = (from: number): Promise<Buffer> | null => {
    if (from >= o.end) return null;
    const n = Math.min(chunk, o.end - from);
    const buf = Buffer.allocUnsafeSlow(n);
    return preadPieces(o.fd, [buf], [o.base + from]).then(() => buf);
  };
  let next = read(readAt);
  let rec: (RecordHeader & { at: number; raw: Buffer }) | null = null;
  for (;;) {
    if (!rec && q.length >= RECORD_HEADER_SIZE) {
      const raw = q.take(RECORD_HEADER_SIZE, Buffer.alloc)!;
      rec = { ...decodeRecordHeader(raw, qAt, o.channels, o.maxPacket), at: qAt, raw };
      qAt += RECORD_HEADER_SIZE;
    }
    if (rec && q.length >= rec.packetLength + RECORD_CRC_SIZE) {
      const packet = rec.packetLength > 0 ? q.takeViews(rec.packetLength)! : [];
      const stored = q.take(RECORD_CRC_SIZE, Buffer.alloc)!.readUInt32BE(0);
      let crc = native.crc32c(rec.raw);
      for (const p of packet) crc = native.crc32c(p, crc);
      if (crc !== stored) throw recordCrcError(rec.at, rec.channel, stored, crc, rec.packetLength);
      if (rec.packetLength < o.headerSize) {
        throw fileError(
          'ERR_FILE_RECORD',
          `record at byte ${rec.at} (channel ${rec.channel}): packet of ${rec.packetLength} bytes, shorter than a ${o.headerSize}-byte packet header`,
        );
      }
      // The receiver reads next_packet_size bytes after the header: the record must hold exactly that.
      const payload = u32At(packet, 20);
      if (rec.packetLength !== o.headerSize + payload) {
        throw fileError(
          'ERR_FILE_RECORD',
          `record at byte ${rec.at} (channel ${rec.channel}): packet of ${rec.packetLength} bytes, but its header (byte ${rec.at + RECORD_HEADER_SIZE + 20}) says ${o.headerSize} + next_packet_size ${payload}`,
        );
      }
      qAt += rec.packetLength + RECORD_CRC_SIZE;
      yield { at: rec.at, channel: rec.channel, packet, length: rec.packetLength };
      rec = null;
      continue;
    }
    if (!next) break;
    const buf = await next;
    readAt += buf.length;
    next = read(readAt);
    q.push(buf);
  }
  if (rec || q.length > 0) {
    const at = rec ? rec.at : qAt;
    throw fileError(
      'ERR_FILE_RECORD',
      `record at byte ${at} runs past the end of the records (byte ${o.base + o.end}, ${o.endIs ?? 'from the trailer'})`,
    );
  }
}
