/**
 * `mfd inspect` for migration files: header, ramblock table, the stream
 * layout's packets (one line each, as for channel streams) with per-channel
 * totals, mapped-ram bitmaps (pages present per block), and the trailer's
 * validity. Every problem is reported with its byte offset; reading goes on
 * where it can (a file without a trailer still shows its packets up to where
 * it was cut).
 */
import fs from 'node:fs';
import { asMfdError, errorText } from '../errors.js';
import { silentLogger } from '../log.js';
import { preadPieces } from '../native/file-io.js';
import { checkPacketHeader, decodePacketHeader, ramblockName } from '../wire/packet.js';
import { MULTIFD_FLAG_COMPRESSION_MASK, MULTIFD_FLAG_SYNC, packetHeaderSize, pageCount } from '../wire/constants.js';
import { methodByFlag } from '../methods/index.js';
import { MAX_LISTED_PACKETS, type InspectedPacket } from './inspect.js';
import {
  bitmapBytes,
  decodeHeader,
  decodeTail,
  decodeTrailer,
  FILE_MAGIC,
  HEADER_FIXED_SIZE,
  peekHeader,
  TAIL_SIZE,
  type FileHeader,
  type FileTrailer,
} from '../file/format.js';
import { openForRestore, type FileTarget } from '../file/target.js';
import { readRecords } from '../file/stream-layout.js';
import { fileMethod, restoreFromFile } from '../file/restore.js';
import { printable } from '../text.js';
import { isRefPacket, REF_ENTRY_SIZE, summarizeRefs } from '../wire/delta-ref.js';

export interface FileReport {
  file: string;
  offset: number;
  /** File size in bytes. */
  bytes: number;
  header: Omit<FileHeader, 'ramblocks'> | null;
  ramblocks: FileHeader['ramblocks'];
  /** Stream layout: one entry per packet. */
  packets: (InspectedPacket & { channel: number })[];
  channels: { id: number; packets: number; syncPackets: number; normalPages: number; zeroPages: number; payloadBytes: number }[];
  /** mapped-ram: pages present per block (from the bitmaps). */
  bitmaps: { name: string; pages: number; present: number }[];
  trailer: (FileTrailer & { at: number; valid: true }) | { valid: false; reason: string };
  /**
   * With a valid trailer: the file checked as `mfd recv --from` restores it
   * (every record, page coverage, packet counts, digests), nothing written.
   */
  check: { ok: true } | { ok: false; code: string; exitCode: number; message: string } | null;
  errors: { at: number; message: string }[];
}

/** True when the file holds an mfd migration file at `offset` (its magic is there). */
export function isMigrationFile(t: FileTarget): boolean {
  let fd = -1;
  try {
    // Opening a pipe for reading would wait for a writer: only a regular file can be one.
    if (!fs.statSync(t.path).isFile()) return false;
    fd = fs.openSync(t.path, 'r');
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, t.offset) === 4 && b.readUInt32BE(0) === FILE_MAGIC;
  } catch {
    return false;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

/** Byte offset an error message names ("at byte N", "record at byte N", ...), else `fallback`. */
export function atOf(e: unknown, fallback: number): number {
  const m = /byte (\d+)/.exec((e as Error).message);
  return m ? Number(m[1]) : fallback;
}

export async function inspectFile(t: FileTarget): Promise<FileReport> {
  const f = openForRestore(t);
  const report: FileReport = {
    file: t.path,
    offset: t.offset,
    bytes: f.size,
    header: null,
    ramblocks: [],
    packets: [],
    channels: [],
    bitmaps: [],
    trailer: { valid: false, reason: 'not read' },
    check: null,
    errors: [],
  };
  const err = (e: unknown, fallback: number): void => {
    const message = errorText(e);
    report.errors.push({ at: atOf(e, fallback), message });
  };
  const read = async (at: number, n: number): Promise<Buffer> => {
    const b = Buffer.alloc(n);
    await preadPieces(f.fd, [b], [t.offset + at]);
    return b;
  };
  try {
    let h: FileHeader;
    try {
      const hlen = peekHeader(await read(0, HEADER_FIXED_SIZE), t.offset);
      h = decodeHeader(await read(0, hlen), t.offset);
    } catch (e) {
      err(e, t.offset);
      return report;
    }
    const { ramblocks, ...rest } = h;
    report.header = rest;
    report.ramblocks = ramblocks;
    const room = f.size - t.offset;
    let trailer: FileTrailer | null = null;
    try {
      if (room < h.dataOffset + TAIL_SIZE) throw new Error(`the file ends at byte ${f.size}, before any trailer`);
      const length = decodeTail(await read(room - TAIL_SIZE, TAIL_SIZE), f.size, room - h.dataOffset);
      trailer = decodeTrailer(await read(room - length, length), t.offset + room - length, h);
      report.trailer = { ...trailer, at: t.offset + room - length, valid: true };
    } catch (e) {
      report.trailer = { valid: false, reason: (e as Error).message };
      err(e, f.size);
    }
    try {
      fileMethod(h);
    } catch (e) {
      err(e, t.offset);
      return report;
    }
    if (h.layout === 'stream') await inspectRecords(f.fd, t.offset, h, trailer, room, report, err);
    else await inspectBitmaps(h, trailer, read, report, err);
  } finally {
    fs.closeSync(f.fd);
  }
  // A delta file's pages are partly in its bases: it is checked by restoring it with them.
  if (report.trailer.valid && report.errors.length === 0 && !report.header?.delta) {
    try {
      await restoreFromFile({ source: t, verifyOnly: true, logger: silentLogger });
      report.check = { ok: true };
    } catch (e) {
      const m = asMfdError(e);
      report.check = { ok: false, code: m.code, exitCode: m.exitCode, message: errorText(m) };
      err(e, t.offset);
    }
  }
  return report;
}

async function inspectRecords(
  fd: number,
  base: number,
  h: FileHeader,
  trailer: FileTrailer | null,
  room: number,
  report: FileReport,
  err: (e: unknown, at: number) => void,
): Promise<void> {
  const hs = packetHeaderSize(h.pageSize);
  const perPacket = pageCount(h.pageSize);
  const method = methodByFlag(h.methodFlag)!;
  report.channels = Array.from({ length: h.channels }, (_, id) => ({
    id,
    packets: 0,
    syncPackets: 0,
    normalPages: 0,
    zeroPages: 0,
    payloadBytes: 0,
  }));
  const sizes = new Map(h.ramblocks.map((b) => [b.name, { size: b.size }]));
  const end = trailer ? trailer.dataEnd : room;
  try {
    for await (const rec of readRecords({
      fd,
      base,
      start: h.dataOffset,
      end,
      channels: h.channels,
      headerSize: hs,
      maxPacket: hs + method.maxPayload(perPacket, h.pageSize),
      endIs: trailer ? 'from the trailer' : 'the end of the file: no valid trailer',
    })) {
      // The header alone (it may span read buffers): the payload is not copied.
      const head = Buffer.alloc(hs);
      let got = 0;
      for (const piece of rec.packet) {
        if (got === hs) break;
        const n = Math.min(hs - got, piece.length);
        head.set(piece.subarray(0, n), got);
        got += n;
      }
      const p = decodePacketHeader(head, perPacket);
      try {
        checkPacketHeader(p, {
          channel: rec.channel,
          pageSize: h.pageSize,
          pageCount: perPacket,
          methodFlag: h.methodFlag,
          exactPayload: method.exactPayload,
          maxPayload: (n) => method.maxPayload(n, h.pageSize),
          lookupRamblock: (n) => sizes.get(n),
          deltaRefs: h.delta !== undefined,
        });
      } catch (e) {
        err(new Error(`record at byte ${rec.at}: ${errorText(e)}`), rec.at);
      }
      const flags = p.flags;
      const payload = rec.length - hs;
      const m = methodByFlag(flags & MULTIFD_FLAG_COMPRESSION_MASK);
      // A delta file's reference packet: its references (the record's CRC held, so the payload is what was saved).
      const refs =
        h.delta && isRefPacket(p) && payload % REF_ENTRY_SIZE === 0 ? summarizeRefs(Buffer.concat(rec.packet).subarray(hs)) : null;
      if (report.packets.length < MAX_LISTED_PACKETS)
        report.packets.push({
          at: rec.at,
          kind: 'ram',
          channel: rec.channel,
          packetNum: p.packetNum.toString(),
          flags: `${flags & MULTIFD_FLAG_SYNC ? 'SYNC|' : ''}${refs ? 'delta-ref' : (m?.name ?? '?')}`,
          method: refs ? 'delta-ref' : (m?.name ?? '?'),
          ramblock: ramblockName(p),
          normalPages: p.normalPages,
          zeroPages: p.zeroPages,
          payloadBytes: payload,
          ratio: p.normalPages ? Math.round((payload / (p.normalPages * h.pageSize)) * 1e4) / 1e4 : 0,
          ...(refs ? { references: refs } : {}),
        });
      const c = report.channels[rec.channel]!;
      c.packets++;
      if (flags & MULTIFD_FLAG_SYNC) c.syncPackets++;
      c.normalPages += p.normalPages;
      c.zeroPages += p.zeroPages;
      c.payloadBytes += payload;
    }
  } catch (e) {
    err(e, base + end);
  }
  if (trailer) {
    report.channels.forEach((c, i) => {
      if (c.packets !== trailer.packets[i])
        err(new Error(`channel ${i}: ${c.packets} packets in the file, the trailer counts ${trailer.packets[i]}`), base + end);
    });
  }
}

async function inspectBitmaps(
  h: FileHeader,
  trailer: FileTrailer | null,
  read: (at: number, n: number) => Promise<Buffer>,
  report: FileReport,
  err: (e: unknown, at: number) => void,
): Promise<void> {
  for (const [i, b] of h.ramblocks.entries()) {
    const pages = Math.ceil(b.size / h.pageSize);
    const n = bitmapBytes(b.size, h.pageSize);
    let present = 0;
    try {
      const map = n > 0 ? await read(b.bitmapOffset, n) : Buffer.alloc(0);
      for (let k = 0; k < n * 8; k++) {
        if (!(map[k >>> 3]! & (1 << (k & 7)))) continue;
        if (k >= pages)
          err(
            new Error(
              `bitmap of ram block "${b.name}" (byte ${report.offset + b.bitmapOffset + (k >>> 3)}): bit ${k} is set, past the block's ${pages} pages`,
            ),
            0,
          );
        else present++;
      }
    } catch (e) {
      err(e, report.offset + b.bitmapOffset);
    }
    report.bitmaps.push({ name: b.name, pages, present });
    if (trailer && trailer.blocks[i]!.normalPages !== present) {
      err(
        new Error(`ram block "${b.name}": bitmap has ${present} pages present, the trailer counts ${trailer.blocks[i]!.normalPages}`),
        report.offset + b.bitmapOffset,
      );
    }
  }
}

export function formatFileReport(r: FileReport): string {
  const lines = [`${r.file}: migration file at byte ${r.offset}, file of ${r.bytes} bytes`];
  const h = r.header;
  if (h) {
    lines.push(
      `  header: version ${h.version}, layout ${h.layout}, uuid ${h.uuid}, ${h.channels} channel(s), page size ${h.pageSize}, compression ${h.compression} ${JSON.stringify(h.methodParams)}, zero-page detection ${h.zeroPageDetection}, digest ${h.digest}, data at byte ${r.offset + h.dataOffset}`,
    );
    for (const b of r.ramblocks) {
      lines.push(
        `  ramblock ${printable(b.name)}: ${b.size} bytes${h.layout === 'mapped-ram' ? `, bitmap at byte ${r.offset + b.bitmapOffset}, pages at byte ${r.offset + b.regionOffset}` : ''}`,
      );
    }
  }
  for (const [i, b] of (h?.delta?.bases ?? []).entries())
    lines.push(`  base#${i} ${printable(b.name)}: ${b.size} bytes, sha256 ${b.sha256}, saved from ${printable(b.path)}`);
  if (r.packets.length > 0) {
    lines.push('  at          channel  packet_num  flags        ramblock              normal  zero  payload  ratio');
    for (const p of r.packets) {
      lines.push(
        `  ${String(p.at).padEnd(10)}  ${String(p.channel).padStart(7)}  ${p.packetNum.padStart(10)}  ${p.flags.padEnd(11)}  ${p.ramblock.slice(0, 20).padEnd(20)}  ${String(p.normalPages).padStart(6)}  ${String(p.zeroPages).padStart(4)}  ${String(p.payloadBytes).padStart(7)}  ${p.ratio.toFixed(3)}`,
      );
      const refs = p.references;
      if (refs) {
        lines.push(`              ${refs.count} reference(s) for ${refs.pages} page(s):`);
        for (const d of refs.first) lines.push(`                ${d}`);
        if (refs.first.length < refs.count) lines.push(`                ... ${refs.count - refs.first.length} more`);
      }
    }
  }
  for (const c of r.channels) {
    lines.push(
      `  channel ${c.id}: ${c.packets} packets (${c.syncPackets} SYNC), normal pages ${c.normalPages}, zero pages ${c.zeroPages}, payload ${c.payloadBytes} bytes`,
    );
  }
  for (const b of r.bitmaps)
    lines.push(`  bitmap ${printable(b.name)}: ${b.present} of ${b.pages} pages present, ${b.pages - b.present} zero (holes)`);
  const t = r.trailer;
  if (t.valid) {
    lines.push(`  trailer at byte ${t.at}: valid, data ends at byte ${r.offset + t.dataEnd}, packets per channel ${t.packets.join(' ')}`);
    r.ramblocks.forEach((b, i) => {
      const x = t.blocks[i]!;
      lines.push(
        `  ramblock ${printable(b.name)}: digest ${x.digest}, normal pages ${x.normalPages}, zero pages ${x.zeroPages}${x.referencedPages !== undefined ? `, referenced pages ${x.referencedPages}` : ''}`,
      );
    });
  } else lines.push(`  trailer: not valid: ${t.reason}`);
  if (r.check?.ok) lines.push('  check: every record, page, packet count and digest verified (as mfd recv --from)');
  else if (r.check) lines.push(`  check: failed [${r.check.code}]`);
  else if (h?.delta && t.valid)
    lines.push('  check: not run: a delta file is checked by restoring it with its bases (mfd recv --from ... --base)');
  for (const e of r.errors) lines.push(`  error at byte ${e.at}: ${e.message}`);
  return lines.join('\n');
}
