/**
 * `mfd send --to file:PATH[,offset=N]`: a migration into a self-describing
 * file (docs/file-format.md). The shared sender pipeline produces the packets
 * (any method, zero pages detected and recorded, never stored); the sinks
 * put them in the file:
 *
 *   stream layout   header -> records (channel id + packet + CRC) through a ring
 *                   of aligned buffers written asynchronously -> trailer
 *   mapped-ram      header -> pages written in parallel at their fixed places
 *                   -> bitmaps -> trailer
 *
 * With `delta` (a version 2 file, src/delta/at-rest.ts) the bases are
 * fingerprinted and digested first, and the reference packets go before the
 * data packets, as records like any other (stream layout only).
 *
 * Order of durability: every data write completes, fdatasync, then the
 * trailer (with packet counts and digests) is written, then fsync. A file
 * whose save was interrupted has no trailer and is refused on restore.
 */
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { FirstFailure, IoError, UsageError } from '../errors.js';
import { SendPipeline, type PipelineOptions, type SendBlock } from '../sender/pipeline.js';
import type { MethodName } from '../methods/index.js';
import { pwritePieces } from '../native/file-io.js';
import { DIGEST_ALGORITHM } from '../control/protocol.js';
import { MULTIFD_PACKET_SIZE } from '../wire/constants.js';
import { WriteGate } from '../io/write-gate.js';
import type { RunStats } from '../stats/stats.js';
import type { Logger } from '../log.js';
import {
  alignUp,
  encodeHeader,
  encodeTrailer,
  FILE_ALIGN,
  FILE_VERSION,
  FILE_VERSION_DELTA,
  HEADER_MAX,
  headerLength,
  type DeltaManifest,
  type FileHeader,
  type Layout,
} from './format.js';
import { openForSave, type FileTarget, type OpenFile } from './target.js';
import { syncDirectory } from '../io/sync-directory.js';
import {
  BufferRing,
  DEFAULT_BUFFER_COUNT,
  DEFAULT_BUFFER_SIZE,
  DEFAULT_DIRECT_BUFFER_COUNT,
  PerPacketWriter,
  writeError,
  type ByteWriter,
  type RingStats,
} from './writer.js';
import { streamSink, type BlockCounts } from './stream-layout.js';
import { mappedRamSink, PageBitmaps, planMappedRam } from './mapped-ram-layout.js';

/**
 * An extension of the save (delta files: src/delta/at-rest.ts's deltaSave),
 * wired in by whoever assembles the migration (src/migrate/). Contract: plan()
 * runs once the pipeline is open, before the file is; it may hand the
 * pipeline packets to send before any page (SendPipeline.sendFirst) and
 * returns what the header records (the bases: a version 2 file), what the
 * trailer counts per block, and what it adds to the run's statistics.
 * Stream layout only: with --mapped-ram it is refused before plan().
 */
export interface SaveExtension {
  plan(p: SendPipeline, log: Logger): Promise<SavePlan>;
}

export interface SavePlan {
  /** The header's `delta`: the bases the file's reference packets number. */
  manifest: DeltaManifest;
  /** The trailer's `referencedPages` of a block: the pages its packets sent first stand for. */
  referencedPages(b: SendBlock): number;
  stats(stats: RunStats, p: SendPipeline): void;
}

export interface SaveOptions<N extends MethodName = MethodName> extends PipelineOptions<N> {
  target: FileTarget;
  /** QEMU's mapped-ram: fixed regions per ramblock, positional page writes, no compression. */
  mappedRam?: boolean;
  /** Open the file with O_DIRECT (all writes are aligned for it). */
  directIo?: boolean;
  /**
   * Stream layout's writer: the ring (buffer size and count), or the plain
   * baseline of one synchronous write per packet ('per-packet', for benchmarks).
   */
  writer?: { bufferSize?: number; buffers?: number } | 'per-packet';
  /** A delta file (version 2): references to bases, and to pages earlier in the file (src/delta/at-rest.ts). */
  extension?: SaveExtension;
  signal?: AbortSignal;
}

export interface FileSummary {
  path: string;
  offset: number;
  layout: Layout;
  directIo: boolean;
  /** The migration's length in the file, header to trailer (the file ends at offset + bytes). */
  bytes: number;
  /** Where the trailer starts (relative). */
  trailerOffset: number;
  /** Stream layout: the ring's buffers and how often the filler waited for a write; or the baseline. */
  writer: RingStats | 'per-packet' | 'positional';
}

export interface SaveResult {
  stats: RunStats;
  file: FileSummary;
}

export async function saveToFile<N extends MethodName>(opts: SaveOptions<N>): Promise<SaveResult> {
  const startNs = process.hrtime.bigint();
  const log = opts.logger;
  const uuid = randomUUID();
  const layout: Layout = opts.mappedRam ? 'mapped-ram' : 'stream';
  const direct = opts.directIo ?? false;
  if (opts.writer === 'per-packet' && (direct || opts.mappedRam))
    throw new UsageError("the per-packet writer is the stream layout's buffered baseline: not with --direct-io or --mapped-ram");
  let pipeline: SendPipeline | null = null;
  let file: OpenFile | null = null;
  const gate = new WriteGate(`migration file "${opts.target.path}"`);
  const failure = new FirstFailure(opts.signal);
  const fail = failure.fail;
  try {
    pipeline = await SendPipeline.open(opts);
    const p = pipeline;
    // mapped-ram stores each page as it is at its own place: the payload must be the pages themselves.
    if (opts.mappedRam && !p.method.exactPayload) {
      throw new UsageError(
        `--mapped-ram stores pages uncompressed at fixed places in the file (as QEMU's mapped-ram, which refuses compression too): drop --compression ${p.method.name}, or save without --mapped-ram`,
      );
    }
    if (opts.mappedRam && opts.extension) {
      throw new UsageError(
        "--mapped-ram cannot hold delta references: its contract (QEMU's) is every page's bytes at the page's own place in the file, a clear bitmap bit meaning a zero page; a page held in a base is neither. Save the delta file in the stream layout (without --mapped-ram), where references are packets like any other",
      );
    }
    // Before the header: it records the bases' digests, taken while they are fingerprinted.
    const delta = opts.extension ? await opts.extension.plan(p, log) : null;
    file = openForSave(opts.target, direct);
    const f = file;
    const ramblocks = p.blocks.map((b) => ({ name: b.source.name, size: b.source.size }));
    const params = {
      compression: p.method.name,
      methodParams: p.params,
      zeroPageDetection: p.detector.name,
      digest: DIGEST_ALGORITHM,
      ...(delta ? { delta: delta.manifest } : {}),
    };
    const hlen = headerLength(
      Buffer.byteLength(JSON.stringify({ ...params })),
      p.blocks.map((b) => b.nameBytes.length),
    );
    if (hlen > HEADER_MAX)
      throw new UsageError(`the file's header would be ${hlen} bytes, more than ${HEADER_MAX}: fewer --base, or shorter paths`);
    const version = delta ? FILE_VERSION_DELTA : FILE_VERSION;
    const plan = opts.mappedRam ? planMappedRam(f.offset, hlen, ramblocks, opts.pageSize) : null;
    const header: FileHeader = {
      version,
      layout,
      pageSize: opts.pageSize,
      packetSize: MULTIFD_PACKET_SIZE,
      channels: opts.channels,
      methodFlag: p.method.flag,
      uuid,
      dataOffset: plan ? plan.bitmapStart : alignUp(hlen, FILE_ALIGN),
      ramblocks: plan ? plan.ramblocks : ramblocks.map((b) => ({ ...b, bitmapOffset: 0, regionOffset: 0 })),
      ...params,
    };
    const headerBytes = encodeHeader(header);
    if (headerBytes.length !== hlen) throw new Error(`file header is ${headerBytes.length} bytes, planned ${hlen}`);
    const padded = new Uint8Array(alignUp(hlen, FILE_ALIGN));
    padded.set(headerBytes);
    const counts: BlockCounts[] = p.blocks.map(() => ({ normalPages: 0, zeroPages: 0 }));
    log.info(
      { uuid, path: f.path, offset: f.offset, layout, direct, channels: opts.channels, compression: p.method.name },
      'saving to a migration file',
    );

    let writer: ByteWriter | null = null;
    let ring: BufferRing | null = null;
    let bitmaps: PageBitmaps | null = null;
    if (plan) {
      bitmaps = new PageBitmaps(plan, opts.pageSize);
      await pwritePieces(f.fd, [padded], [f.offset]).catch((e: unknown) => {
        throw writeError(f, e);
      });
    } else if (opts.writer === 'per-packet') {
      writer = new PerPacketWriter(f, 0);
    } else {
      const count = opts.writer?.buffers ?? (direct ? DEFAULT_DIRECT_BUFFER_COUNT : DEFAULT_BUFFER_COUNT);
      ring = new BufferRing(f, 0, opts.writer?.bufferSize ?? DEFAULT_BUFFER_SIZE, count, gate, fail);
      writer = ring;
    }
    if (writer) await writer.append([padded], false);
    for (let id = 0; id < opts.channels; id++) {
      await p.addChannel(id, (counters) =>
        plan ? mappedRamSink(f, gate, plan, bitmaps!, opts.pageSize, counters, counts) : streamSink(writer!, id, counters, counts),
      );
    }

    await p.run(fail, () => failure.error);
    if (failure.error) throw failure.error;

    let dataEnd: number;
    let trailerOffset: number;
    if (plan) {
      const area = bitmaps!.area();
      if (area.length > 0)
        await pwritePieces(f.fd, [area], [f.offset + plan.bitmapStart]).catch((e: unknown) => {
          throw writeError(f, e);
        });
      dataEnd = plan.dataEnd;
      trailerOffset = alignUp(dataEnd, FILE_ALIGN);
    } else {
      dataEnd = writer!.position;
      trailerOffset = await writer!.finish();
    }
    // Everything before the trailer is on disk before the trailer says it is complete.
    await sync(f, 'fdatasync');
    const trailer = encodeTrailer(
      {
        uuid,
        dataEnd,
        // mapped-ram writes no packets, only their pages: its counts leave out each channel's closing SYNC.
        packets: plan ? p.channels.map((c) => c.counters.packets - c.counters.syncPackets) : p.packetCounts(),
        blocks: p.blocks.map((b, i) => ({
          digest: b.digest.hex(),
          normalPages: counts[i]!.normalPages,
          zeroPages: counts[i]!.zeroPages,
          ...(delta ? { referencedPages: delta.referencedPages(b) } : {}),
        })),
      },
      version,
    );
    await pwritePieces(f.fd, [trailer], [f.offset + trailerOffset]).catch((e: unknown) => {
      throw writeError(f, e);
    });
    await sync(f, 'fsync');
    closeQuietly(f);
    file = null;
    await syncDirectory(f.path).catch((e: unknown) => log.warn({ err: (e as Error).message }, `could not sync the directory of ${f.path}`));
    const stats = p.stats(uuid, startNs);
    delta?.stats(stats, p);
    const summary: FileSummary = {
      path: f.path,
      offset: f.offset,
      layout,
      directIo: direct,
      bytes: trailerOffset + trailer.length,
      trailerOffset,
      writer: ring ? ring.stats : plan ? 'positional' : 'per-packet',
    };
    log.info({ ...summary }, 'migration file complete');
    return { stats, file: summary };
  } catch (e) {
    throw fail(e);
  } finally {
    failure.dispose();
    await gate.close();
    if (file) closeQuietly(file);
    await pipeline?.close();
  }
}

function sync(f: OpenFile, how: 'fsync' | 'fdatasync'): Promise<void> {
  return new Promise((resolve, reject) =>
    fs[how](f.fd, (e) =>
      e ? reject(new IoError(`ERR_${e.code ?? 'SYNC'}`, `${how} of migration file "${f.path}": ${e.message}`, e)) : resolve(),
    ),
  );
}

function closeQuietly(f: OpenFile): void {
  try {
    fs.closeSync(f.fd);
  } catch {
    /* already closed */
  }
}
