/**
 * `mfd recv --from file:PATH[,offset=N]`: restores a migration file into
 * outputs, as strictly as a network receiver. The header and the trailer are
 * read and checked first: a file without a valid trailer (a save that did not
 * finish, or a file cut short) is refused before any output is created. Then:
 *
 *   stream layout   records are read in order (two large reads in flight),
 *                   checked (magic, channel, length, CRC) and fed to that
 *                   channel's receiver (DataChannel: every header check,
 *                   coverage, decode on the channel's compute worker,
 *                   CRC + pwritev on the libuv pool)
 *   mapped-ram      bitmaps are checked, runs of present pages read and
 *                   written several chunks at a time on the libuv pool
 *
 * and finally packet counts, page coverage and digests are verified against
 * the trailer before any output takes its final name. A delta file's bases
 * (src/delta/at-rest.ts, through RestoreExtension) are opened and checked
 * (size, SHA-256) before any output is created; its reference packets are
 * applied by the same extension as a network receiver's.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { FirstFailure, MfdError, ProtocolError, UsageError, NativeIoError, nativeIoFailure } from '../errors.js';
import type { PacketHeader } from '../wire/packet.js';
import type { Logger } from '../log.js';
import { getMethod, type CompressionMethod, type MethodParams, type MethodReceiver } from '../methods/index.js';
import { native } from '../native/load.js';
import { preadPieces } from '../native/file-io.js';
import { DIGEST_ALGORITHM } from '../control/protocol.js';
import { packetHeaderSize, pageCount, hex } from '../wire/constants.js';
import { buildStats, newChannelCounters, type ChannelCounters, type RunStats } from '../stats/stats.js';
import { ComputePool, defaultPoolSize } from '../compute/pool.js';
import { PathTally, emptyPathCounts } from '../offload/paths.js';
import { DataChannel, packetChecks, type ChannelHost, type Decoder, type TargetBlock } from '../receiver/data-channel.js';
import { Output } from '../receiver/output.js';
import { createDecoder } from '../receiver/decoder.js';
import { openTargets, targetBlock, verifyBlocks, verifyChannels } from '../receiver/targets.js';
import {
  alignUp,
  decodeHeader,
  decodeTail,
  decodeTrailer,
  fileError,
  FILE_ALIGN,
  HEADER_FIXED_SIZE,
  incomplete,
  peekHeader,
  TAIL_SIZE,
  type FileHeader,
  type FileTrailer,
  type Layout,
} from './format.js';
import { openForRestore, type FileTarget, type OpenFile } from './target.js';
import { readRecords } from './stream-layout.js';
import { checkMappedRamGeometry, restoreMappedRam } from './mapped-ram-layout.js';
import type { PacketExtension } from '../receiver/extension.js';

/**
 * An extension of the restore (delta files: src/delta/at-rest.ts's
 * deltaRestore), wired in by whoever assembles the migration (src/migrate/).
 * Contract: open() is called once the header and trailer of the file at
 * `path` are checked, before any output is created; it refuses what it cannot
 * restore (throws), and returns the handler of the file's extension packets
 * (a version 2 file's reference packets), or null for a file without them.
 */
export interface RestoreExtension {
  open(h: FileHeader, path: string, blocks: Map<string, TargetBlock>, log: Logger): Promise<PacketExtension | null>;
}

export interface RestoreOptions {
  source: FileTarget;
  outputDir?: string;
  outputMap?: Map<string, string>;
  inPlace?: boolean;
  fsync?: boolean;
  /** Compute worker threads for decompression (default: min(channels, cores)). */
  threads?: number;
  requireHardware?: boolean;
  logger: Logger;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  signal?: AbortSignal;
  /** Check the file (every record, page coverage, packet counts, digests) without writing any output (`mfd inspect`). */
  verifyOnly?: boolean;
  /** Delta files (src/delta/at-rest.ts): where their bases are, `--base NAME=PATH`, `--base-dir DIR`. */
  extension?: RestoreExtension;
}

/** The migration file a restore read, as its summary reports it. */
export interface RestoredFile {
  path: string;
  offset: number;
  layout: Layout;
  bytes: number;
  records?: number;
}

export interface RestoreResult {
  stats: RunStats;
  file: RestoredFile;
}

/** A checked header and trailer, and where the trailer is. */
export interface Envelope {
  header: FileHeader;
  trailer: FileTrailer;
  /** Relative offset of the trailer block. */
  trailerOffset: number;
  /** The migration's length (header to the end of the trailer). */
  length: number;
}

/** Reads `n` bytes at relative `at`; the file ending first means it was cut short. */
async function readBytes(f: OpenFile, at: number, n: number, what: string): Promise<Buffer> {
  const buf = Buffer.alloc(n);
  try {
    await preadPieces(f.fd, [buf], [f.offset + at]);
  } catch (e) {
    if (!(e instanceof NativeIoError)) throw e;
    if (e.code === 'ESHORTREAD')
      throw incomplete(`${what} at byte ${f.offset + at}: the file ends at byte ${e.at! + e.moved!}, expected ${n} bytes`);
    throw nativeIoFailure(e, { subject: `migration file "${f.path}"` });
  }
  return buf;
}

/**
 * Header (magic, version, CRC, every field), then the tail and trailer (end
 * magic, CRC, uuid and counts against the header, place after the data).
 */
export async function readEnvelope(f: OpenFile, size: number): Promise<Envelope> {
  if (size < f.offset + HEADER_FIXED_SIZE) {
    throw incomplete(`"${f.path}" is ${size} bytes, too short for a header at byte ${f.offset} (${HEADER_FIXED_SIZE} bytes at least)`);
  }
  const fixed = await readBytes(f, 0, HEADER_FIXED_SIZE, 'header');
  const hlen = peekHeader(fixed, f.offset);
  const header = decodeHeader(await readBytes(f, 0, hlen, 'header'), f.offset);
  const room = size - f.offset;
  if (room < header.dataOffset + FILE_ALIGN) {
    throw incomplete(
      `"${f.path}" ends at byte ${size}, before any trailer (the data starts at byte ${f.offset + header.dataOffset}): the save did not finish, or the file was cut short`,
    );
  }
  const length = decodeTail(await readBytes(f, room - TAIL_SIZE, TAIL_SIZE, 'tail'), size, room - header.dataOffset);
  const trailerOffset = room - length;
  const trailer = decodeTrailer(await readBytes(f, trailerOffset, length, 'trailer'), f.offset + trailerOffset, header);
  if (trailer.dataEnd < header.dataOffset || alignUp(trailer.dataEnd, FILE_ALIGN) !== trailerOffset) {
    throw fileError(
      'ERR_FILE_TRAILER',
      `trailer at byte ${f.offset + trailerOffset} says the data ends at byte ${f.offset + trailer.dataEnd}, so it should start at byte ${f.offset + alignUp(trailer.dataEnd, FILE_ALIGN)} (and the data after byte ${f.offset + header.dataOffset})`,
    );
  }
  return { header, trailer, trailerOffset, length: room };
}

/** The method a file names, checked as a receiver checks a hello's. */
export function fileMethod(header: FileHeader): { method: CompressionMethod; params: MethodParams } {
  let method: CompressionMethod;
  let params: MethodParams;
  try {
    method = getMethod(header.compression);
    params = method.params(header.methodParams);
  } catch (e) {
    throw new ProtocolError('ERR_FILE_METHOD', `migration file header: ${(e as Error).message}`);
  }
  if (method.flag !== header.methodFlag) {
    throw new ProtocolError(
      'ERR_FILE_METHOD',
      `migration file header: method flag ${hex(header.methodFlag)}, expected ${hex(method.flag)} for ${method.name}`,
    );
  }
  if (header.digest !== DIGEST_ALGORITHM)
    throw new ProtocolError('ERR_FILE_DIGEST', `migration file header: digest "${header.digest}", expected "${DIGEST_ALGORITHM}"`);
  if (header.layout === 'mapped-ram' && !method.exactPayload) {
    throw new ProtocolError(
      'ERR_FILE_METHOD',
      `migration file header: mapped-ram layout with compression ${method.name}; mapped-ram stores pages uncompressed`,
    );
  }
  return { method, params };
}

/** One channel's records, as the 'data' events its DataChannel reads; the reader waits while it is paused. */
class RecordSource extends EventEmitter {
  paused = false;
  private waiting: (() => void) | null = null;
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
    this.waiting?.();
    this.waiting = null;
  }
  destroy(): void {
    this.resume();
  }
  /** Resolves when the channel takes data again. */
  ready(): Promise<void> {
    if (!this.paused) return Promise.resolve();
    return new Promise((resolve) => (this.waiting = resolve));
  }
}

export async function restoreFromFile(opts: RestoreOptions): Promise<RestoreResult> {
  const startNs = process.hrtime.bigint();
  const log = opts.logger;
  const f = openForRestore(opts.source);
  const outputs: Output[] = [];
  const receivers: MethodReceiver[] = [];
  let compute: ComputePool | null = null;
  const failure = new FirstFailure(opts.signal);
  const fail = failure.fail;
  let delta: PacketExtension | null = null;
  try {
    const env = await readEnvelope(f, f.size);
    const { header: h, trailer } = env;
    const { method, params } = fileMethod(h);
    if (h.layout === 'mapped-ram') checkMappedRamGeometry(h, f.offset, env.trailerOffset);
    const blocks = new Map<string, TargetBlock>();
    if (h.delta) {
      if (opts.verifyOnly)
        throw new UsageError('a delta migration file is checked by restoring it with its bases (mfd recv --from ... --base)');
      if (opts.inPlace)
        throw new UsageError('a delta migration file is not restored --in-place: a base must never be written while it is read');
    }
    // A delta file's bases: every one verified (size, SHA-256) before any output is created or any page read from it.
    delta = (await opts.extension?.open(h, f.path, blocks, log)) ?? null;
    if (h.delta && !delta)
      throw new UsageError(
        `"${f.path}" is a delta migration file: restore it with its bases (migrateIncoming(), mfd recv --from ... --base)`,
      );
    const requireHardware = opts.requireHardware ?? false;
    const compressionPath = method.path({ params, requireHardware, receiving: true });
    const tally = new PathTally(`${method.name} decompression`, requireHardware);
    if (opts.verifyOnly) {
      for (const b of h.ramblocks) {
        const output = Output.discard(b.name, b.size);
        outputs.push(output);
        blocks.set(b.name, targetBlock(output, b.size, h.pageSize));
      }
    } else
      await openTargets(h.ramblocks, h.pageSize, { ...opts, inPlace: opts.inPlace ?? false }, 'migration file header', blocks, outputs);
    const totalBytes = h.ramblocks.reduce((a, b) => a + b.size, 0);
    let doneBytes = 0;
    const onPages = (bytes: number): void => {
      doneBytes += bytes;
      opts.onProgress?.(Math.min(doneBytes, totalBytes), totalBytes);
    };
    log.info(
      { path: f.path, offset: f.offset, layout: h.layout, uuid: h.uuid, channels: h.channels, compression: method.name },
      'restoring a migration file',
    );
    const counters = Array.from({ length: h.channels }, (_, i) => newChannelCounters(i));
    let records: number | undefined;
    const digests = Object.fromEntries(h.ramblocks.map((b, i) => [b.name, trailer.blocks[i]!.digest]));

    if (h.layout === 'stream') {
      if (method.offload) compute = new ComputePool(opts.threads ?? defaultPoolSize(h.channels));
      const pool = compute;
      const channels = await restoreStream({
        file: f,
        header: h,
        trailer,
        method,
        inPlace: opts.inPlace ?? false,
        blocks,
        counters,
        decoder: (channel) => createDecoder({ channel, method, pageSize: h.pageSize, params, tally, compute: pool, receivers, fail }),
        onPages,
        fail,
        failed: () => failure.error,
        delta,
      });
      if (failure.error) throw failure.error;
      records = channels.records;
      verifyChannels(channels.channels, trailer.packets);
      // Copies of pages earlier in the file, now that every channel has written its pages.
      await delta?.finish();
    } else {
      await restoreMappedRam({
        file: f,
        header: h,
        trailer,
        blocks,
        inPlace: opts.inPlace ?? false,
        onPages,
        failed: () => failure.error !== null,
      });
      if (failure.error) throw failure.error;
      // No packets in this layout: the pages read count as channel 0's.
      for (const b of trailer.blocks) {
        counters[0]!.normalPages += b.normalPages;
        counters[0]!.zeroPages += b.zeroPages;
        counters[0]!.wireBytes += b.normalPages * h.pageSize;
      }
    }
    verifyBlocks(h.ramblocks, blocks, h.pageSize, digests);
    await Promise.all(outputs.map((o) => o.commit(opts.fsync ?? false)));
    const stats = buildStats(
      {
        side: 'recv',
        uuid: h.uuid,
        compression: method.name,
        compressionPath,
        zeroPageDetection: h.zeroPageDetection,
        zeroPagePath: 'sender',
        paths: { compression: tally.counts, zeroPage: emptyPathCounts() },
        pageSize: h.pageSize,
        ramblocks: h.ramblocks.map((b) => ({
          name: b.name,
          size: b.size,
          path: blocks.get(b.name)!.output.finalPath,
          digest: blocks.get(b.name)!.digest.hex(),
        })),
      },
      counters,
      startNs,
    );
    delta?.stats(stats);
    return {
      stats,
      file: { path: f.path, offset: f.offset, layout: h.layout, bytes: env.length, ...(records !== undefined ? { records } : {}) },
    };
  } catch (e) {
    const err = fail(e);
    await Promise.allSettled(outputs.map((o) => o.abort()));
    throw err;
  } finally {
    failure.dispose();
    delta?.close();
    for (const r of receivers) r.cleanup();
    await compute?.close();
    try {
      fs.closeSync(f.fd);
    } catch {
      /* already closed */
    }
  }
}

interface StreamRestore {
  file: OpenFile;
  header: FileHeader;
  trailer: FileTrailer;
  method: CompressionMethod;
  inPlace: boolean;
  blocks: Map<string, TargetBlock>;
  counters: ChannelCounters[];
  decoder(channel: number): Decoder;
  onPages(bytes: number): void;
  fail(e: unknown): MfdError;
  failed(): MfdError | null;
  /** A delta file: its reference packets' pages are copied by the network receiver's code. */
  delta: PacketExtension | null;
}

/**
 * Feeds every record to its channel's DataChannel and waits until all have
 * drained; returns the channels (for the packet-count and SYNC checks) and
 * the number of records.
 */
async function restoreStream(r: StreamRestore): Promise<{ channels: DataChannel[]; records: number }> {
  const { file: f, header: h, method } = r;
  const headerSize = packetHeaderSize(h.pageSize);
  const perPacket = pageCount(h.pageSize);
  let idleWaiter: (() => void) | null = null;
  const channels: DataChannel[] = [];
  const host: ChannelHost = {
    pageSize: h.pageSize,
    headerSize,
    check: { ...packetChecks(method, h.pageSize, r.blocks), deltaRefs: r.delta !== null },
    ...(r.delta ? { refs: (ph: PacketHeader, payload: Uint8Array[], channel: number) => r.delta!.apply(ph, payload, channel) } : {}),
    blocks: r.blocks,
    zeroPageCrc: native.crc32c(new Uint8Array(h.pageSize)),
    inPlace: r.inPlace,
    onPages: r.onPages,
    onIdle: () => {
      if (channels.every((c) => c.idle)) idleWaiter?.();
    },
    fail: (e) => {
      r.fail(e);
      idleWaiter?.();
      for (const s of sources) s.resume();
    },
  };
  const sources = Array.from({ length: h.channels }, () => new RecordSource());
  for (let id = 0; id < h.channels; id++)
    channels.push(new DataChannel(id, sources[id]!, Buffer.alloc(0), r.decoder(id), r.counters[id]!, host));
  const allIdle = new Promise<void>((resolve) => (idleWaiter = resolve));
  let records = 0;
  for await (const rec of readRecords({
    fd: f.fd,
    base: f.offset,
    start: h.dataOffset,
    end: r.trailer.dataEnd,
    channels: h.channels,
    headerSize,
    maxPacket: headerSize + method.maxPayload(perPacket, h.pageSize),
  })) {
    if (r.failed()) break;
    records++;
    const src = sources[rec.channel]!;
    for (const piece of rec.packet) src.emit('data', piece);
    await src.ready();
  }
  if (!r.failed()) for (const s of sources) s.emit('end');
  if (!r.failed() && !channels.every((c) => c.idle)) await allIdle;
  return { channels, records };
}
