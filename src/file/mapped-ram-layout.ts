/**
 * The mapped-ram layout, after QEMU's capability of that name: each ramblock
 * has a fixed region in the file (page i at region + i x page size, the
 * region at a 1 MiB-aligned file offset) and a bitmap of the pages present.
 * Channels write their normal pages in parallel with positional writes (one
 * call per packet); zero pages are never written and stay holes, so the file
 * never grows past the image sizes plus alignment and metadata. The bitmaps
 * are written once at the end, as QEMU does. Restore reads runs of present
 * pages in parallel and writes them to the outputs.
 */
import { ProtocolError, VerifyError, NativeIoError, nativeIoFailure } from '../errors.js';
import { native } from '../native/load.js';
import { preadPieces, pwritePieces } from '../native/file-io.js';
import { writePacket } from '../native/packet-io.js';
import type { ChannelSink, OutgoingPacket } from '../sender/pipeline.js';
import type { ChannelCounters } from '../stats/stats.js';
import type { TargetBlock } from '../receiver/data-channel.js';
import {
  alignUp,
  bitmapBytes,
  FILE_ALIGN,
  fileError,
  REGION_ALIGN,
  type FileHeader,
  type FileRamblock,
  type FileTrailer,
} from './format.js';
import type { BlockCounts } from './stream-layout.js';
import { writeError } from './writer.js';
import type { WriteGate } from '../io/write-gate.js';
import type { OpenFile } from './target.js';
import { BoundedPool } from '../io/bounded-pool.js';

export interface MappedRamPlan {
  ramblocks: FileRamblock[];
  /** Start of the bitmaps (the header's data offset). */
  bitmapStart: number;
  /** End of the last region (the trailer's data end). */
  dataEnd: number;
}

/**
 * Places bitmaps and regions after a header of `headerLength` bytes, for a
 * migration starting at byte `base`: bitmaps from the next 4 KiB boundary,
 * 8-byte words each; regions at 1 MiB-aligned absolute file offsets, one after
 * the other, each pages x page size long.
 */
export function planMappedRam(
  base: number,
  headerLength: number,
  blocks: { name: string; size: number }[],
  pageSize: number,
): MappedRamPlan {
  const bitmapStart = alignUp(headerLength, FILE_ALIGN);
  let at = bitmapStart;
  const bitmaps = blocks.map((b) => {
    const o = at;
    at += bitmapBytes(b.size, pageSize);
    return o;
  });
  let end = alignUp(at, FILE_ALIGN);
  const ramblocks = blocks.map((b, i) => {
    const regionOffset = alignUp(base + end, REGION_ALIGN) - base;
    end = regionOffset + Math.ceil(b.size / pageSize) * pageSize;
    return { name: b.name, size: b.size, bitmapOffset: bitmaps[i]!, regionOffset };
  });
  return { ramblocks, bitmapStart, dataEnd: end };
}

/** Bitmaps of present pages, one per block, as QEMU lays them out on a little-endian host: bit i = byte i/8, bit i%8. */
export class PageBitmaps {
  readonly maps: Uint8Array[];
  constructor(
    private readonly plan: MappedRamPlan,
    pageSize: number,
  ) {
    this.maps = plan.ramblocks.map((b) => new Uint8Array(bitmapBytes(b.size, pageSize)));
  }

  /** The bitmap area (bitmap start to the next 4 KiB boundary) as one zero-padded buffer, for one aligned write. */
  area(): Uint8Array {
    const p = this.plan;
    const last = p.ramblocks.length > 0 ? p.ramblocks[p.ramblocks.length - 1]! : null;
    const end = last ? last.bitmapOffset + this.maps[this.maps.length - 1]!.length : p.bitmapStart;
    const out = new Uint8Array(alignUp(end, FILE_ALIGN) - p.bitmapStart);
    p.ramblocks.forEach((b, i) => out.set(this.maps[i]!, b.bitmapOffset - p.bitmapStart));
    return out;
  }
}

/** Channel `channel`'s normal pages, written straight to their places in the file: one positional write per packet. */
export function mappedRamSink(
  file: OpenFile,
  gate: WriteGate,
  plan: MappedRamPlan,
  bitmaps: PageBitmaps,
  pageSize: number,
  counters: ChannelCounters,
  blocks: BlockCounts[],
): ChannelSink {
  return {
    async write(p: OutgoingPacket): Promise<void> {
      try {
        if (!p.block) return; // a SYNC packet: mapped-ram has no packets in the file
        const b = p.block.index;
        blocks[b]!.normalPages += p.normal;
        blocks[b]!.zeroPages += p.zeros;
        if (p.normal === 0) return;
        const region = file.offset + plan.ramblocks[b]!.regionOffset;
        // The payload is the normal pages as they are (no compression here), in runs of
        // consecutive pages: each run goes to its first page's place.
        const runs = p.pieces.slice(1);
        const positions: number[] = [];
        let j = 0;
        for (const run of runs) {
          positions.push(region + p.offsets[j]!);
          j += run.length / pageSize;
        }
        if (j !== p.normal) throw new Error(`mapped-ram: payload holds ${j} pages, expected ${p.normal}`);
        try {
          await gate.run(() => pwritePieces(file.fd, runs, positions, !file.direct));
        } catch (e) {
          throw writeError(file, e);
        }
        const map = bitmaps.maps[b]!;
        for (let k = 0; k < p.normal; k++) {
          const i = p.offsets[k]! / pageSize;
          map[i >>> 3]! |= 1 << (i & 7);
        }
        counters.wireBytes += p.normal * pageSize;
      } finally {
        p.done();
      }
    },
    end: async () => {},
  };
}

/**
 * Checks the regions and bitmaps the header places: inside the data, no
 * overlaps, regions aligned to the page size (QEMU's check) and long enough
 * for the block; nothing past the trailer.
 */
export function checkMappedRamGeometry(h: FileHeader, base: number, trailerOffset: number): void {
  const spans: { from: number; to: number; what: string }[] = [];
  for (const b of h.ramblocks) {
    const regionLength = Math.ceil(b.size / h.pageSize) * h.pageSize;
    if ((base + b.regionOffset) % h.pageSize !== 0) {
      throw fileError(
        'ERR_FILE_LAYOUT',
        `ram block "${b.name}": region at byte ${base + b.regionOffset} has bad alignment (expected a multiple of the page size ${h.pageSize})`,
      );
    }
    spans.push({ from: b.bitmapOffset, to: b.bitmapOffset + bitmapBytes(b.size, h.pageSize), what: `bitmap of ram block "${b.name}"` });
    spans.push({ from: b.regionOffset, to: b.regionOffset + regionLength, what: `region of ram block "${b.name}"` });
  }
  spans.sort((a, b) => a.from - b.from);
  let prev = { to: h.dataOffset, what: 'the header' };
  for (const s of spans) {
    if (s.from === s.to) continue;
    if (s.from < prev.to)
      throw fileError(
        'ERR_FILE_LAYOUT',
        `${s.what} (bytes ${base + s.from}..${base + s.to - 1}) overlaps ${prev.what} (ending at byte ${base + prev.to - 1})`,
      );
    prev = s;
  }
  if (prev.to > trailerOffset)
    throw fileError('ERR_FILE_LAYOUT', `${prev.what} ends at byte ${base + prev.to - 1}, past the trailer at byte ${base + trailerOffset}`);
}

/** Pages per restore read: runs of present pages inside this many pages go out in one read and one write call. */
const RESTORE_CHUNK_BYTES = 4 << 20;
/** Chunks read and written at once (the libuv pool runs them in parallel). */
const RESTORE_PARALLEL = 4;

export interface MappedRamRestore {
  file: OpenFile;
  header: FileHeader;
  trailer: FileTrailer;
  blocks: Map<string, TargetBlock>;
  inPlace: boolean;
  onPages(bytes: number): void;
  failed(): boolean;
}

/**
 * Reads every block's bitmap (bits past the last page must be clear; the
 * present pages must be the trailer's count), then the runs of present pages,
 * RESTORE_PARALLEL chunks at a time: one read of the chunk's runs, one
 * writePacket (CRC-32C per page, positional writes; with in-place outputs,
 * zeros for the absent pages). Coverage and digests go to the targets.
 */
export async function restoreMappedRam(r: MappedRamRestore): Promise<void> {
  const { header: h, file } = r;
  const ps = h.pageSize;
  const zeroCrc = native.crc32c(new Uint8Array(ps));
  const perChunk = Math.max(1, RESTORE_CHUNK_BYTES / ps);
  const buffers = new BoundedPool(RESTORE_PARALLEL, () => new Uint8Array(RESTORE_CHUNK_BYTES));
  const inFlight = new Set<Promise<void>>();
  let failure: unknown = null;

  for (const [bi, b] of h.ramblocks.entries()) {
    const target = r.blocks.get(b.name)!;
    const pages = Math.ceil(b.size / ps);
    const map = new Uint8Array(bitmapBytes(b.size, ps));
    if (map.length > 0) await readAt(file, map, b.bitmapOffset, `bitmap of ram block "${b.name}"`);
    let present = 0;
    for (let i = 0; i < map.length * 8; i++) {
      if (!(map[i >>> 3]! & (1 << (i & 7)))) continue;
      if (i >= pages)
        throw fileError(
          'ERR_FILE_BITMAP_BITS',
          `bitmap of ram block "${b.name}" (byte ${file.offset + b.bitmapOffset + (i >>> 3)}): bit ${i} is set, past the block's ${pages} pages`,
        );
      present++;
    }
    const want = r.trailer.blocks[bi]!.normalPages;
    if (present !== want)
      throw new VerifyError('ERR_FILE_BITMAP', `ram block "${b.name}": bitmap has ${present} pages present, the trailer counts ${want}`);
    for (let first = 0; first < pages; first += perChunk) {
      if (failure || r.failed()) break;
      const buf = await buffers.acquire();
      const count = Math.min(perChunk, pages - first);
      const job = restoreChunk(r, b, target, map, first, count, buf, zeroCrc)
        .catch((e: unknown) => {
          failure ??= e;
        })
        .finally(() => {
          inFlight.delete(job);
          buffers.release(buf);
        });
      inFlight.add(job);
    }
    if (failure) break;
  }
  await Promise.all(inFlight);
  if (failure) throw failure;
}

async function restoreChunk(
  r: MappedRamRestore,
  b: FileRamblock,
  target: TargetBlock,
  map: Uint8Array,
  first: number,
  count: number,
  buf: Uint8Array,
  zeroCrc: number,
): Promise<void> {
  const ps = r.header.pageSize;
  const offsets = new Float64Array(count);
  let normal = 0;
  for (let i = first; i < first + count; i++) if (map[i >>> 3]! & (1 << (i & 7))) offsets[normal++] = i * ps;
  let z = normal;
  for (let i = first; i < first + count; i++) if (!(map[i >>> 3]! & (1 << (i & 7)))) offsets[z++] = i * ps;
  // Runs of present pages, packed into buf in order: one read call for the chunk.
  const pieces: Uint8Array[] = [];
  const positions: number[] = [];
  for (let j = 0; j < normal;) {
    let k = j + 1;
    while (k < normal && offsets[k] === offsets[k - 1]! + ps) k++;
    pieces.push(buf.subarray(j * ps, k * ps));
    positions.push(b.regionOffset + offsets[j]!);
    j = k;
  }
  if (pieces.length > 0) await readAt(r.file, pieces, positions, `pages of ram block "${b.name}"`);
  const crc = new Uint32Array(normal);
  if (normal > 0 || r.inPlace) {
    try {
      await target.output.use((fd) =>
        writePacket({
          fd,
          pages: normal > 0 ? [buf.subarray(0, normal * ps)] : [],
          pageSize: ps,
          offsets,
          normal,
          zero: count - normal,
          blockSize: b.size,
          writeZeros: r.inPlace,
          crc,
        }),
      );
    } catch (e) {
      if (!(e instanceof NativeIoError)) throw e;
      if (e.code === 'EPADDING') {
        throw new ProtocolError(
          'ERR_PAGE_PAST_END',
          `migration file: page at offset ${offsets[e.badPage!]} runs past the end of ram block "${b.name}" (size ${b.size}) with non-zero bytes`,
        );
      }
      throw nativeIoFailure(e, { subject: `ram block "${b.name}" to "${target.output.writePath}"` });
    }
  }
  for (let j = 0; j < count; j++) target.digest.add(offsets[j]! / ps, j < normal ? crc[j]! : zeroCrc);
  for (let i = first; i < first + count; i++) target.seen.set(i);
  r.onPages(count * ps);
}

/** Positional read(s) relative to the migration's start; the file ending early is a truncated file. */
async function readAt(file: OpenFile, pieces: Uint8Array | Uint8Array[], positions: number | number[], what: string): Promise<void> {
  const list = Array.isArray(pieces) ? pieces : [pieces];
  const pos = (Array.isArray(positions) ? positions : [positions]).map((p) => file.offset + p);
  try {
    await preadPieces(file.fd, list, pos);
  } catch (e) {
    if (!(e instanceof NativeIoError)) throw e;
    if (e.code === 'ESHORTREAD')
      throw fileError('ERR_FILE_TRUNCATED', `${what}: the file ends at byte ${e.at! + e.moved!}, before byte ${e.at! + e.asked! - 1}`);
    throw nativeIoFailure(e, { subject: `migration file "${file.path}"` });
  }
}
