/**
 * The receiver's side of delta transfer. Its bases (each output's earlier
 * version, `--base NAME=PATH`, the files of `--base-dir DIR`) are opened
 * read-only and fingerprinted before `ready`; the fingerprints go to the
 * sender as they are made (`fingerprints` frames), so the receiver keeps none
 * (an output's earlier version: 5 bytes a page, its clone's CRC and whether it is zero).
 * An output's earlier version is written into its temporary output as it is
 * fingerprinted (a clone, from the bytes hashed): a reference to the same page
 * of it needs no copy. Other references' pages are copied: from a base at
 * once, from a page of this migration once every channel has drained (its
 * source is then written). Each copied page is digested as it is written, so a collision, a
 * base changed meanwhile or a bad reference fails the digest, never the image;
 * a base that shrank fails the read.
 *
 * Bases are never written, but for an output written in place (`mfd recv
 * --delta --in-place`): its existing file is then both its base and its
 * target, with no clone and no temporary file. A reference to the same page of
 * it is no write at all (its CRC from the fingerprint pass), a zero page is
 * written only where that page was not zero, and a page it refers to for
 * another page is copied from the file as it is then, or from the stash. The
 * offer says which bases are written in place (`inPlace`), and the sender
 * refers to a page of one for another page only while that page stays as it
 * is, or once the receiver has copied it into its stash (`stash` frames after
 * `ready`, answered before any channel connects: a file beside the output,
 * removed by close()); a sender that does not (an older one, a hostile one)
 * copies a page overwritten meanwhile, whose CRC (of the bytes read and
 * written) then fails the digest, and so does a stash that does not hold what
 * it should. Other bases are never written.
 */
import fs from 'node:fs';
import path from 'node:path';
import { IoError, ProtocolError, RemoteError, UsageError, NativeIoError, nativeIoFailure } from '../errors.js';
import type { Logger } from '../log.js';
import type { ControlMessage, Hello, Ready } from '../control/protocol.js';
import type { ControlChannel } from '../transport/control-channel.js';
import { writePacket } from '../native/packet-io.js';
import { native } from '../native/load.js';
import { ramblockName, type PacketHeader } from '../wire/packet.js';
import type { TargetBlock } from '../receiver/data-channel.js';
import type { OpenExtension, RecvExtension } from '../receiver/extension.js';
import { PageStateLimitError } from '../receiver/page-bitmap.js';
import {
  ENTRY_SIZE,
  FINGERPRINT_BATCH,
  entryIndex,
  partOf,
  fingerprintFile,
  fingerprintSample,
  matchEntries,
  decodeEntries,
  releaseBuffers,
  tableBuffer,
  requireDelta,
  sortEntries,
} from './fingerprint.js';
import { preadPieces, pwritePieces } from '../native/file-io.js';
import { BoundedPool } from '../io/bounded-pool.js';
import {
  MAX_BASE_PAGES,
  MAX_BASES,
  MAX_FINGERPRINTS_PER_FRAME,
  decodeStashPages,
  type ReadyDelta,
  type Sample,
  type Stash,
} from '../control/delta.js';
import { stashPathFor } from '../receiver/targets.js';
import { createFreshSync } from '../io/no-follow.js';
import { SOURCE_MIGRATION, SOURCE_ZERO, checkRef, decodeRefs, type PageRef } from '../wire/delta-ref.js';
import type { DeltaCounts, RunStats } from '../stats/stats.js';

export interface DeltaRecvOptions {
  /** `--base NAME=PATH`. */
  bases: { name: string; path: string }[];
  /** `--base-dir DIR`: each regular file in it whose name does not start with a dot. */
  dirs: string[];
  /** Test hook: sees (and may change) each frame's entries before they are sent. */
  onFingerprints?: (entries: Buffer) => void;
  /** Test hook: runs once the fingerprints are sent, before `ready`; may change what `ready.delta` says (`offer`). */
  afterOffer?: (offer: ReadyDelta) => void | Promise<void>;
  /** Test hook: runs once the sender's stash is copied (its page count), before `stashed` answers. */
  afterStash?: (pages: number) => void | Promise<void>;
}

/** An open base: references number them in this order. */
export interface DeltaBase {
  name: string;
  path: string;
  fd: number;
  size: number;
  pages: number;
  /** The ram block whose earlier version this base is (its output's file): cloned into its temporary output, or written in place. */
  block?: TargetBlock;
  /** The block's output is this very file, written in place: the index of its ram block in the hello. */
  inPlace?: number;
}

/**
 * A block's clone of its earlier version: while fingerprinting that base, the
 * receiver writes each batch's non-zero pages into the block's temporary
 * output at the same offsets, so a reference to the same page of that base
 * (the common case: a page unchanged since) needs no copy. Only the clone's
 * bytes are trusted, never the base's later ones: the fingerprints and CRCs
 * are those of the very bytes written.
 */
interface Clone {
  base: number;
  /** The base is the block's own output, written in place: nothing is cloned, the file holds the pages already. */
  inPlace: boolean;
  /** Pages 0..pages-1 were cloned: whole pages of both the base and the block. */
  pages: number;
  /** Each cloned page's CRC-32C (the digest's for a reference to it). */
  crc: Uint32Array;
  /** 1 where the clone wrote a non-zero page: a zero page there must be written. */
  nonzero: Uint8Array;
}

/** Pages copied per batch: reads at once, then one write (1 MiB of 4 KiB pages). */
const COPY_PAGES = 256;
/** Copy buffers at most, across the channels' reference packets. */
const COPY_BUFFERS = 8;

/** Pages to copy: `count` from page `src` of the file `fd` (`size` bytes; `what` names it) to page `dst`. */
interface Segment {
  fd: number;
  size: number;
  what: string;
  src: number;
  dst: number;
  count: number;
}

/**
 * Delta transfer for the network receiver (its RecvExtension, wired in by
 * src/migrate/): a hello with `delta` is offered `opts`' bases and each
 * output's earlier version; their fingerprints go before `ready`, which names
 * them; the reference packets are applied by DeltaReceiver.
 */
export function deltaReceiver(opts: DeltaRecvOptions): RecvExtension {
  return {
    open: ({ hello, finals, blocks, headerSize, log, onWritten }) =>
      hello.delta ? DeltaReceiver.open(opts, hello, finals, blocks, headerSize, log, onWritten) : null,
    checkTargets: (hello, finals, inPlace) => {
      if (!hello.delta || !inPlace) return;
      const outputs = new Map<string, number>();
      finals.forEach((f, i) => {
        const st = fs.statSync(f, { throwIfNoEntry: false });
        if (st) outputs.set(`${st.dev}:${st.ino}`, i);
      });
      for (const b of opts.bases) {
        const st = fs.statSync(b.path, { throwIfNoEntry: false });
        const i = st ? outputs.get(`${st.dev}:${st.ino}`) : undefined;
        if (i !== undefined) throw inPlaceBase(b.name, b.path, finals[i]!, hello.ramblocks[i]!.name);
      }
    },
  };
}

/** A `--base` that is an output written in place: refused (it is that block's base already, and its pages change). */
function inPlaceBase(name: string, file: string, output: string, block: string): UsageError {
  return new UsageError(
    `--base ${name}=${file} is the output "${output}" of ram block "${block}", written in place (--in-place): it is that block's base already, and no other's, since its pages change as the migration goes; give another file or drop the --base`,
  );
}

export class DeltaReceiver implements OpenExtension {
  private readonly deferred: { block: TargetBlock; name: string; ref: PageRef }[] = [];
  private basePages = 0;
  private zeroPages = 0;
  private readonly zeroCrc: number;
  private migrationPages = 0;
  private refPackets = 0;
  private refBytes = 0;
  private readonly clones = new Map<TargetBlock, Clone>();
  private zeroPage: Uint8Array | null = null;
  /** The stash (`stash` frames): its pages' table indices, ascending (page i of the stash file is the i-th); null until complete. */
  private stashed: Uint32Array | null = null;
  private stashFd = -1;
  private stashFile: string | null = null;
  private stashPages = 0;

  private constructor(
    private readonly bases: DeltaBase[],
    private readonly hello: Pick<Hello, 'pageSize' | 'ramblocks' | 'deltaSample' | 'deltaSampleOffer'>,
    private readonly blocks: Map<string, TargetBlock>,
    private readonly headerSize: number,
    private readonly onWritten: ((block: TargetBlock, offsets: ArrayLike<number>, count: number) => void) | undefined,
  ) {
    this.zeroCrc = native.crc32c(new Uint8Array(hello.pageSize));
  }

  /**
   * Opens the bases: each output's existing file (`finals`, the outputs'
   * final paths), then `--base`, then `--base-dir`'s files; a file met twice
   * (same device and inode) counts once, and the outputs' temporary files never.
   * An output written in place is its own block's base only: a `--base` that
   * is the same file is refused (it would not stay as it was read), a
   * `--base-dir` file that is skipped.
   */
  static open(
    opts: DeltaRecvOptions,
    hello: Hello,
    finals: string[],
    blocks: Map<string, TargetBlock>,
    headerSize: number,
    log: Logger,
    onWritten?: (block: TargetBlock, offsets: ArrayLike<number>, count: number) => void,
  ): DeltaReceiver {
    requireDelta('mfd recv --delta');
    const seen = new Set<string>();
    // Outputs written in place, by device and inode: each its own block's base, and no other.
    const inPlace = new Map<string, TargetBlock>();
    for (const b of blocks.values()) {
      const st = fs.statSync(b.output.writePath, { throwIfNoEntry: false });
      if (st && b.output.inPlace) inPlace.set(`${st.dev}:${st.ino}`, b);
      else if (st) seen.add(`${st.dev}:${st.ino}`);
    }
    const bases: DeltaBase[] = [];
    const add = (name: string, file: string, required: boolean, noFollow = false, own: TargetBlock | null = null): void => {
      let fd: number;
      try {
        // Non-blocking: a FIFO in a --base-dir must not hold the open (it is then refused as not a file).
        // A link found in a --base-dir is not followed (ELOOP, skipped): whoever can write into the
        // folder must not make a root receiver read, and copy pages of, a file the operator never named.
        fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | (noFollow ? fs.constants.O_NOFOLLOW : 0));
      } catch (e) {
        if (!required) return;
        throw new IoError(`ERR_${(e as NodeJS.ErrnoException).code ?? 'OPEN'}`, `base "${name}" (${file}): ${(e as Error).message}`, e);
      }
      const st = fs.fstatSync(fd);
      const key = `${st.dev}:${st.ino}`;
      const target = inPlace.get(key);
      if (target && target !== own && required) {
        fs.closeSync(fd);
        throw inPlaceBase(name, file, target.output.writePath, target.output.name);
      }
      if (!st.isFile() || seen.has(key) || (target && target !== own)) {
        fs.closeSync(fd);
        if (required && !st.isFile()) throw new IoError('ERR_DELTA_BASE', `base "${name}" (${file}) is not a regular file`);
        return;
      }
      seen.add(key);
      bases.push({ name, path: file, fd, size: st.size, pages: Math.ceil(st.size / hello.pageSize) });
    };
    try {
      hello.ramblocks.forEach((b, i) => {
        const n = bases.length;
        const block = blocks.get(b.name)!;
        add(`output:${b.name}`, finals[i]!, false, false, block);
        if (bases.length === n) return;
        bases[n]!.block = block;
        if (block.output.inPlace) bases[n]!.inPlace = i;
      });
      for (const b of opts.bases) add(b.name, b.path, true);
      for (const dir of opts.dirs) {
        let names: string[];
        try {
          names = fs.readdirSync(dir).sort();
        } catch (e) {
          throw new IoError(`ERR_${(e as NodeJS.ErrnoException).code ?? 'READDIR'}`, `--base-dir "${dir}": ${(e as Error).message}`, e);
        }
        for (const f of names) if (!f.startsWith('.')) add(f, path.join(dir, f), false, true);
      }
      if (bases.length > MAX_BASES) throw new UsageError(`delta: ${bases.length} bases, expected at most ${MAX_BASES}`);
      const pages = bases.reduce((a, b) => a + b.pages, 0);
      if (pages > MAX_BASE_PAGES) throw new UsageError(`delta: the bases hold ${pages} pages, expected at most ${MAX_BASE_PAGES}`);
    } catch (e) {
      for (const b of bases) fs.closeSync(b.fd);
      throw e;
    }
    log.info({ bases: bases.map((b) => ({ name: b.name, path: b.path, size: b.size })) }, 'delta: bases');
    const r = new DeltaReceiver(bases, hello, blocks, headerSize, onWritten);
    r.onFingerprintsHook = opts.onFingerprints;
    r.log = log;
    r.afterOfferHook = opts.afterOffer;
    r.afterStashHook = opts.afterStash;
    return r;
  }

  /**
   * The bases of a delta migration file (src/delta/at-rest.ts: opened and
   * verified by the restore), for its reference packets; closed by close().
   */
  static forFile(
    bases: DeltaBase[],
    layout: Pick<Hello, 'pageSize' | 'ramblocks'>,
    blocks: Map<string, TargetBlock>,
    headerSize: number,
  ): DeltaReceiver {
    return new DeltaReceiver(bases, layout, blocks, headerSize, undefined);
  }

  /** Fingerprints every base and sends the entries (`fingerprints` frames); what `ready` says of them (`delta`). */
  async offer(ctl: ControlChannel): Promise<Pick<Ready, 'delta'>> {
    // Like a copy, the fingerprinting holds the bases open until it ends (close() waits).
    if (this.closing) throw new IoError('ERR_DELTA_CLOSED', 'delta: fingerprinting after the migration stopped');
    this.active++;
    let delta: ReadyDelta;
    try {
      // A sample offered is asked for (its sender never sends one unasked); one announced (deltaSample, the earlier form) comes unasked.
      if (this.hello.deltaSampleOffer && !this.hello.deltaSample) ctl.send({ type: 'sampleRequest' });
      const sample = this.sampled ? await this.awaitSample(ctl) : null;
      const matched = sample ? await this.sampleMatches(sample) : true;
      const sampled = sample ? sample.entries.length / ENTRY_SIZE : 0;
      releaseBuffers(sample?.entries);
      if (sample && !matched) {
        this.log?.info(
          { sampled, stride: sample.stride, run: sample.run },
          "delta: no page of the bases' sample matched the sender's: no fingerprints, every page comes as data",
        );
        delta = { bases: this.offered(), fingerprints: 0, skipped: true };
      } else delta = await this.fingerprintBases(ctl);
    } finally {
      if (--this.active === 0 && this.closing) this.closeBases();
    }
    await this.afterOfferHook?.(delta);
    return { delta };
  }

  /** Whether this migration takes a sample: one the hello announced (`deltaSample`) or offered (`deltaSampleOffer`). */
  private get sampled(): boolean {
    return this.hello.deltaSample === true || this.hello.deltaSampleOffer === true;
  }

  /** The `sample` frame the hello announced, or offered and was asked for. */
  private async awaitSample(ctl: ControlChannel): Promise<{ entries: Buffer; stride: number; run: number }> {
    const m = await ctl.next();
    if (m.type !== 'sample')
      throw new ProtocolError(
        'ERR_CONTROL_UNEXPECTED',
        `control channel: received "${m.type}", expected "sample" (the hello said ${this.hello.deltaSample ? 'deltaSample' : 'deltaSampleOffer'})`,
      );
    const s = m as Sample;
    return { entries: decodeEntries(s.entries), stride: s.stride, run: s.run };
  }

  /**
   * Whether any page of the bases at the sample's places (pages p with p %
   * stride < run; every page of bases smaller than a sample's stride) has a
   * fingerprint of the sender's sample. Stops at the first.
   */
  private async sampleMatches(sample: { entries: Buffer; stride: number; run: number }): Promise<boolean> {
    const n = sample.entries.length / ENTRY_SIZE;
    if (n === 0) return false;
    await sortEntries(sample.entries, n);
    const ps = this.hello.pageSize;
    // Bases within one stride: all of their pages (one run as long as the stride).
    const whole = this.bases.reduce((a, b) => a + b.pages, 0) <= sample.stride;
    const stride = whole ? FINGERPRINT_BATCH : sample.stride;
    const run = whole ? FINGERPRINT_BATCH : sample.run;
    let found = false;
    let found32: Uint32Array | null = null;
    for (const b of this.bases) {
      await fingerprintSample(b.fd, b.size, ps, 0, stride, run, `base "${b.name}" (${b.path})`, (e, count) => {
        if (!found32 || found32.length < count) found32 = new Uint32Array(count);
        found = matchEntries(sample.entries, n, e, count, found32) > 0;
        return found;
      });
      if (found) return true;
    }
    return false;
  }

  private async fingerprintBases(ctl: ControlChannel): Promise<ReadyDelta> {
    const frame = tableBuffer(MAX_FINGERPRINTS_PER_FRAME * ENTRY_SIZE);
    let n = 0;
    let total = 0;
    const flush = async (): Promise<void> => {
      if (n === 0) return;
      const entries = frame.subarray(0, n * ENTRY_SIZE);
      this.onFingerprintsHook?.(entries);
      ctl.send({ type: 'fingerprints', entries: entries.toString('base64') });
      total += n;
      n = 0;
      const s = ctl.socket;
      if (s.writableNeedDrain) await new Promise<void>((resolve) => (s.once('drain', resolve), s.once('close', resolve)));
    };
    let first = 0;
    const ps = this.hello.pageSize;
    for (const [i, b] of this.bases.entries()) {
      const own = b.inPlace !== undefined;
      const clone: Clone | null = b.block
        ? {
            base: i,
            inPlace: own,
            // In place the base is the block's file (its size already the block's): every page, the last one too.
            pages: own ? b.pages : Math.min(Math.floor(b.size / ps), Math.floor(b.block.size / ps)),
            crc: new Uint32Array(b.pages),
            nonzero: new Uint8Array(b.pages),
          }
        : null;
      // The data channels then write a zero page where the clone wrote (or, in place, the file holds) a non-zero one.
      if (clone) b.block!.nonzero = clone.nonzero;
      const where = `base "${b.name}" (${b.path})`;
      const onBatch = async (entries: Uint8Array, count: number, pages: Uint8Array, page: number): Promise<void> => {
        if (this.closing) throw new IoError('ERR_DELTA_CLOSED', 'delta: fingerprinting after the migration stopped');
        if (clone?.inPlace) markNonzero(clone, entries, count, first);
        else if (clone) await this.cloneBatch(b.block!, clone, entries, count, pages, page, first);
        for (let i = 0; i < count;) {
          const k = Math.min(count - i, MAX_FINGERPRINTS_PER_FRAME - n);
          frame.set(entries.subarray(i * ENTRY_SIZE, (i + k) * ENTRY_SIZE), n * ENTRY_SIZE);
          n += k;
          i += k;
          if (n === MAX_FINGERPRINTS_PER_FRAME) await flush();
        }
        // After a sample, the first entries go at once: the sender fingerprints its images from them on.
        if (this.sampled && total === 0) await flush();
      };
      // Only a clone written from the bytes hashed needs them: otherwise the addon maps and hashes a range a call.
      const pages = clone !== null && !clone.inPlace;
      await fingerprintFile(b.fd, b.size, ps, first, where, onBatch, clone?.crc ?? null, null, null, { pages });
      if (clone) this.clones.set(b.block!, clone);
      first += b.pages;
    }
    await flush();
    releaseBuffers(frame);
    return { bases: this.offered(), fingerprints: total };
  }

  /** The bases as `ready.delta` names them: those written in place say so (`inPlace`, their ram block). */
  private offered(): ReadyDelta['bases'] {
    return this.bases.map((b) => ({ name: b.name, pages: b.pages, ...(b.inPlace !== undefined ? { inPlace: b.inPlace } : {}) }));
  }

  /**
   * Writes a batch's non-zero pages below `clone.pages` (runs of them, one
   * call) into the block's temporary output; `entries` name them (indices from `first`).
   */
  private async cloneBatch(
    block: TargetBlock,
    clone: Clone,
    entries: Uint8Array,
    count: number,
    pages: Uint8Array,
    page: number,
    first: number,
  ): Promise<void> {
    const ps = this.hello.pageSize;
    const pieces: Uint8Array[] = [];
    const positions: number[] = [];
    let run = -1;
    let end = -1;
    const push = (): void => {
      if (run < 0) return;
      pieces.push(pages.subarray((run - page) * ps, (end - page) * ps));
      positions.push(run * ps);
    };
    for (let i = 0; i < count; i++) {
      const p = entryIndex(entries, i) - first;
      if (p >= clone.pages) break;
      clone.nonzero[p] = 1;
      if (p !== end) {
        push();
        run = p;
      }
      end = p + 1;
    }
    push();
    if (pieces.length === 0) return;
    try {
      await block.output.use((fd) => pwritePieces(fd, pieces, positions));
    } catch (e) {
      if (!(e instanceof NativeIoError)) throw e;
      throw nativeIoFailure(e, { subject: `the earlier version into "${block.output.writePath}"` });
    }
  }

  /**
   * The sender's stash (`first` and the `stash` frames after it, up to the
   * one with `last`): the pages of bases written in place that its references
   * copy while their own page is overwritten. Each frame's pages are checked
   * (in a base written in place, ascending, each once, no more than those
   * bases' pages), then copied into a file beside the output (created
   * afresh, never through a link; removed by close()), before any page is
   * written: the sender connects its channels only once `stashed` answers.
   * References to those pages then read them from the stash.
   */
  async stash(ctl: ControlChannel, first: Stash): Promise<void> {
    const own = this.bases.filter((b) => b.inPlace !== undefined);
    if (own.length === 0)
      throw new ProtocolError(
        'ERR_CONTROL_UNEXPECTED',
        'control channel: received "stash", but no base of this migration is written in place',
      );
    if (this.closing) throw new IoError('ERR_DELTA_CLOSED', 'delta: stash after the migration stopped');
    const starts = this.baseStarts();
    const total = starts.at(-1)! + this.bases.at(-1)!.pages;
    const limit = own.reduce((a, b) => a + b.pages, 0);
    this.active++;
    try {
      const file = stashPathFor(own[0]!.block!.output.writePath);
      try {
        this.stashFd = createFreshSync(file, fs.constants.O_RDWR, 0o600);
      } catch (e) {
        throw new IoError(
          `ERR_${(e as NodeJS.ErrnoException).code ?? 'OPEN'}`,
          `delta: creating the stash "${file}": ${(e as Error).message}`,
          e,
        );
      }
      this.stashFile = file;
      let list = new Uint32Array(Math.min(limit, 65536));
      let n = 0;
      for (let m: ControlMessage = first; ; m = await ctl.next()) {
        if (m.type === 'error') throw new RemoteError('sender', m.code, m.message);
        if (m.type !== 'stash')
          throw new ProtocolError(
            'ERR_CONTROL_UNEXPECTED',
            `control channel: received "${m.type}", expected "stash" (until the one with last)`,
          );
        const pages = decodeStashPages(m.pages);
        if (n + pages.length > limit)
          throw new ProtocolError(
            'ERR_CONTROL_MESSAGE',
            `control channel: stash received ${n + pages.length} pages, expected at most ${limit} (the pages of the bases written in place)`,
          );
        for (let i = 0; i < pages.length; i++) {
          const t = pages[i]!;
          const prev = n + i > 0 ? (i > 0 ? pages[i - 1]! : list[n - 1]!) : -1;
          if (t >= total)
            throw new ProtocolError(
              'ERR_CONTROL_MESSAGE',
              `control channel: stash page ${n + i} received base page ${t}, expected below ${total} (the bases' pages)`,
            );
          const base = this.bases[partOf(starts, t)]!;
          if (base.inPlace === undefined)
            throw new ProtocolError(
              'ERR_CONTROL_MESSAGE',
              `control channel: stash page ${n + i} received base page ${t}, of base "${base.name}", expected a page of a base written in place`,
            );
          if (t <= prev)
            throw new ProtocolError(
              'ERR_CONTROL_MESSAGE',
              `control channel: stash page ${n + i} received base page ${t} after ${prev}, expected ascending pages, each once`,
            );
        }
        if (n + pages.length > list.length) {
          const grown = new Uint32Array(Math.min(limit, Math.max(n + pages.length, 2 * list.length)));
          grown.set(list.subarray(0, n));
          list = grown;
        }
        list.set(pages, n);
        n += pages.length;
        if (m.last) break;
      }
      // Copied once every frame is read: the frames never queue up unread (the control channel's flood limit).
      await this.stashCopy(list.subarray(0, n), 0, starts);
      this.stashPages = n;
      this.stashed = list.subarray(0, n);
      this.log?.info({ pages: n, file }, 'delta: stashed the pages of the output written in place that references copy elsewhere');
      await this.afterStashHook?.(n);
      ctl.send({ type: 'stashed', pages: n });
    } finally {
      if (--this.active === 0 && this.closing) this.closeBases();
    }
  }

  /** Each base's first page in the table's numbering. */
  private baseStarts(): number[] {
    const starts: number[] = [];
    let a = 0;
    for (const b of this.bases) {
      starts.push(a);
      a += b.pages;
    }
    return starts;
  }

  /** Copies `pages` (table indices, ascending) into the stash from its page `at` on: batches of COPY_PAGES, one read call per base and one write per batch. */
  private async stashCopy(pages: Uint32Array, at: number, starts: number[]): Promise<void> {
    const ps = this.hello.pageSize;
    this.copyBuffers ??= new BoundedPool<Buffer>(COPY_BUFFERS, () => Buffer.allocUnsafeSlow(COPY_PAGES * ps));
    const buf = await this.copyBuffers.acquire();
    try {
      for (let i = 0; i < pages.length; i += COPY_PAGES) {
        if (this.closing) throw new IoError('ERR_DELTA_CLOSED', 'delta: stash after the migration stopped');
        const k = Math.min(COPY_PAGES, pages.length - i);
        const reads = new Map<DeltaBase, { pieces: Uint8Array[]; positions: number[] }>();
        for (let j = 0; j < k;) {
          const t = pages[i + j]!;
          const part = partOf(starts, t);
          const base = this.bases[part]!;
          // A run of consecutive pages of one base: one piece.
          let e = j + 1;
          while (e < k && pages[i + e] === t + (e - j) && t + (e - j) < starts[part]! + base.pages) e++;
          const into = buf.subarray(j * ps, e * ps);
          const pos = (t - starts[part]!) * ps;
          // A base's last page may be partial: what the file holds, then zeros (as a copy reads it).
          const want = Math.max(0, Math.min(into.length, base.size - pos));
          into.fill(0, want);
          if (want > 0) {
            let r = reads.get(base);
            if (!r) reads.set(base, (r = { pieces: [], positions: [] }));
            r.pieces.push(into.subarray(0, want));
            r.positions.push(pos);
          }
          j = e;
        }
        for (const [base, r] of reads) {
          try {
            await preadPieces(base.fd, r.pieces, r.positions);
          } catch (e) {
            if (!(e instanceof NativeIoError)) throw e;
            if (e.code === 'ESHORTREAD')
              throw new IoError(
                'ERR_DELTA_BASE_SHORT',
                `delta: stashing base "${base.name}" (${base.path}): ${e.moved} of ${e.asked} bytes at offset ${e.at}: it shrank`,
              );
            throw nativeIoFailure(e, { subject: `delta: stashing base "${base.name}" (${base.path})` });
          }
        }
        try {
          await pwritePieces(this.stashFd, [buf.subarray(0, k * ps)], [(at + i) * ps]);
        } catch (e) {
          if (!(e instanceof NativeIoError)) throw e;
          throw nativeIoFailure(e, { subject: `the delta stash "${this.stashFile}"` });
        }
      }
    } finally {
      this.copyBuffers.release(buf);
    }
  }

  /**
   * The copies of pages `src`..`src+count-1` of base `source` to `dst`..: from
   * the stash where it holds them, else from the base.
   */
  private copiesOf(source: number, src: number, dst: number, count: number): Segment[] {
    const base = this.bases[source]!;
    const fromBase = (s: number, d: number, c: number): Segment => ({
      fd: base.fd,
      size: base.size,
      what: `base "${base.name}" (${base.path})`,
      src: s,
      dst: d,
      count: c,
    });
    const list = this.stashed;
    if (!list || list.length === 0 || base.inPlace === undefined) return [fromBase(src, dst, count)];
    const ps = this.hello.pageSize;
    const first = this.baseStarts()[source]!;
    const out: Segment[] = [];
    let j = 0;
    while (j < count) {
      const at = findPage(list, first + src + j);
      let e = j + 1;
      if (at < 0) {
        while (e < count && findPage(list, first + src + e) < 0) e++;
        out.push(fromBase(src + j, dst + j, e - j));
      } else {
        // Consecutive base pages stashed are consecutive stash pages.
        while (e < count && list[at + (e - j)] === first + src + e) e++;
        out.push({
          fd: this.stashFd,
          size: this.stashPages * ps,
          what: `the delta stash (${this.stashFile})`,
          src: at,
          dst: dst + j,
          count: e - j,
        });
      }
      j = e;
    }
    return out;
  }

  /** Set by open(): the migration's logger. */
  private log: Logger | null = null;
  /** Set by open() from DeltaRecvOptions.onFingerprints and afterOffer. */
  private onFingerprintsHook: ((entries: Buffer) => void) | undefined;
  private afterOfferHook: ((offer: ReadyDelta) => void | Promise<void>) | undefined;
  private afterStashHook: ((pages: number) => void | Promise<void>) | undefined;

  /**
   * A reference packet (header checked): checks each reference, marks its
   * pages received, copies base pages now and defers pages of this
   * migration to finish(). Resolves with the pages it stood for.
   */
  async apply(h: PacketHeader, payload: Uint8Array[], channel: number): Promise<number> {
    const name = ramblockName(h);
    const block = this.blocks.get(name)!;
    const ps = this.hello.pageSize;
    const place = { channel, packetNum: h.packetNum };
    const limits = { basePages: this.bases.map((b) => b.pages), blockPages: this.hello.ramblocks.map((b) => Math.ceil(b.size / ps)) };
    const refs = decodeRefs(payload.length === 1 ? payload[0]! : Buffer.concat(payload));
    const pages = Math.ceil(block.size / ps);
    let total = 0;
    refs.forEach((r, i) => {
      checkRef(r, i, pages, limits, name, place);
      for (let p = r.dst; p < r.dst + r.count; p++) {
        let fresh: boolean;
        try {
          fresh = block.seen.set(p);
        } catch (e) {
          throw e instanceof PageStateLimitError ? e.at(name, place) : e;
        }
        if (!fresh)
          throw new ProtocolError(
            'ERR_PAGE_REPEATED',
            `page at offset ${p * ps} of ram block "${name}" received twice (delta reference ${i})`,
            place,
          );
      }
      total += r.count;
    });
    this.refPackets++;
    this.refBytes += this.headerSize + refs.length * 24;
    const copies: Segment[] = [];
    const clone = this.clones.get(block);
    const zeros: number[] = [];
    const same: number[] = [];
    for (const r of refs) {
      if (r.source === SOURCE_ZERO) {
        // A temporary output is a fresh file: its zero pages need no write, but where the clone wrote a
        // non-zero page. An output written in place: where its page was not zero (all of them, unknown).
        const inPlace = block.output.inPlace;
        for (let p = r.dst; p < r.dst + r.count; p++) {
          block.digest.add(p, this.zeroCrc);
          if (clone && p < clone.pages ? clone.nonzero[p] : inPlace) zeros.push(p * ps);
        }
        this.zeroPages += r.count;
        continue;
      }
      if ((r.source & SOURCE_MIGRATION) !== 0) {
        this.deferred.push({ block, name, ref: r });
        this.migrationPages += r.count;
        continue;
      }
      this.basePages += r.count;
      // The same pages of the block's earlier version: the clone (in place, the file itself) holds them, and its CRCs prove them.
      const cloned = clone && clone.base === r.source && r.src === r.dst ? Math.max(0, Math.min(r.count, clone.pages - r.dst)) : 0;
      for (let p = r.dst; p < r.dst + cloned; p++) {
        block.digest.add(p, clone!.crc[p]!);
        same.push(p * ps);
      }
      if (cloned < r.count) copies.push(...this.copiesOf(r.source, r.src + cloned, r.dst + cloned, r.count - cloned));
    }
    if (same.length > 0) this.onWritten?.(block, same, same.length);
    if (zeros.length > 0) await this.writeZeros(block, name, zeros);
    await this.copy(block, name, copies);
    return total;
  }

  /** Writes zero pages at `offsets` of the block's output (over pages its clone wrote, or that it held in place). */
  private async writeZeros(block: TargetBlock, name: string, offsets: number[]): Promise<void> {
    const z = (this.zeroPage ??= new Uint8Array(this.hello.pageSize));
    try {
      await block.output.use((fd) =>
        pwritePieces(
          fd,
          Array.from(offsets, () => z),
          offsets,
        ),
      );
    } catch (e) {
      if (!(e instanceof NativeIoError)) throw e;
      throw nativeIoFailure(e, { subject: `ram block "${name}" to "${block.output.writePath}"` });
    }
    this.onWritten?.(block, offsets, offsets.length);
  }

  /** Copies the pages of this migration that references named: every channel has drained, so their sources are written. */
  async finish(): Promise<void> {
    const fds = new Map<string, number>();
    try {
      const byBlock = new Map<TargetBlock, { name: string; segments: Segment[] }>();
      for (const { block, name, ref } of this.deferred.splice(0)) {
        const srcName = this.hello.ramblocks[ref.source & ~SOURCE_MIGRATION]!.name;
        const src = this.blocks.get(srcName)!;
        let fd = fds.get(srcName);
        if (fd === undefined) fds.set(srcName, (fd = fs.openSync(src.output.writePath, 'r')));
        let to = byBlock.get(block);
        if (!to) byBlock.set(block, (to = { name, segments: [] }));
        to.segments.push({
          fd,
          size: src.size,
          what: `ram block "${srcName}" (${src.output.writePath})`,
          src: ref.src,
          dst: ref.dst,
          count: ref.count,
        });
      }
      for (const [block, { name, segments }] of byBlock) await this.copy(block, name, segments);
    } finally {
      for (const fd of fds.values()) fs.closeSync(fd);
    }
  }

  private active = 0;
  private closing = false;
  /** The copies' buffers (COPY_PAGES pages each), reused: channels copy at once, each a batch at a time. */
  private copyBuffers: BoundedPool<Buffer> | null = null;

  /**
   * Copies `segments` into `block`: in batches of at most COPY_PAGES pages,
   * each batch's reads at once, then one write (and its CRCs) for the batch.
   */
  private async copy(block: TargetBlock, name: string, segments: Segment[]): Promise<void> {
    // close() waits for the copies in flight: a descriptor closed under a read could be another file's by then.
    if (this.closing) throw new IoError('ERR_DELTA_CLOSED', 'delta: copy after the migration stopped');
    this.active++;
    try {
      let batch: Segment[] = [];
      let n = 0;
      for (const seg of segments) {
        for (let done = 0; done < seg.count;) {
          const k = Math.min(seg.count - done, COPY_PAGES - n);
          batch.push({ ...seg, src: seg.src + done, dst: seg.dst + done, count: k });
          n += k;
          done += k;
          if (n === COPY_PAGES) {
            await this.copyBatch(block, name, batch, n);
            batch = [];
            n = 0;
          }
        }
      }
      if (n > 0) await this.copyBatch(block, name, batch, n);
    } finally {
      if (--this.active === 0 && this.closing) this.closeBases();
    }
  }

  private async copyBatch(block: TargetBlock, name: string, batch: Segment[], n: number): Promise<void> {
    if (this.closing) throw new IoError('ERR_DELTA_CLOSED', 'delta: copy after the migration stopped');
    this.copyBuffers ??= new BoundedPool<Buffer>(COPY_BUFFERS, () => Buffer.allocUnsafeSlow(COPY_PAGES * this.hello.pageSize));
    const buf = await this.copyBuffers.acquire();
    try {
      await this.copyInto(buf, block, name, batch, n);
    } finally {
      this.copyBuffers.release(buf);
    }
  }

  /** Reads the batch's pages into `buf` (one positional read call per base), then writes and digests them. */
  private async copyInto(buf: Buffer, block: TargetBlock, name: string, batch: Segment[], n: number): Promise<void> {
    const ps = this.hello.pageSize;
    const offsets = new Float64Array(n);
    const reads = new Map<number, { pieces: Uint8Array[]; positions: number[]; segs: Segment[] }>();
    let pos = 0;
    for (const seg of batch) {
      const into = buf.subarray(pos * ps, (pos + seg.count) * ps);
      for (let j = 0; j < seg.count; j++) offsets[pos + j] = (seg.dst + j) * ps;
      pos += seg.count;
      const at = seg.src * ps;
      // A base's last page may be partial: what the file holds, then zeros (the buffer is reused).
      const want = Math.max(0, Math.min(seg.count * ps, seg.size - at));
      into.fill(0, want);
      if (want === 0) continue;
      let r = reads.get(seg.fd);
      if (!r) reads.set(seg.fd, (r = { pieces: [], positions: [], segs: [] }));
      r.pieces.push(into.subarray(0, want));
      r.positions.push(at);
      r.segs.push(seg);
    }
    // Every read settles before the batch fails: none may still be filling the buffer after.
    const results = await Promise.allSettled(
      [...reads].map(async ([fd, r]) => {
        try {
          await preadPieces(fd, r.pieces, r.positions);
        } catch (e) {
          if (!(e instanceof NativeIoError)) throw e;
          const at = e.at!;
          const i = r.positions.findIndex((p, k) => at >= p && at < p + r.pieces[k]!.length);
          const seg = r.segs[Math.max(0, i)]!;
          if (e.code === 'ESHORTREAD')
            throw new IoError(
              'ERR_DELTA_BASE_SHORT',
              `delta: reading ${seg.what}: ${e.moved} of ${e.asked} bytes at offset ${e.at}: it shrank during the migration`,
            );
          throw nativeIoFailure(e, { subject: `delta ${seg.what}` });
        }
      }),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const crc = new Uint32Array(n);
    try {
      await block.output.use((out) =>
        writePacket({
          fd: out,
          pages: [buf.subarray(0, n * ps)],
          pageSize: ps,
          offsets,
          normal: n,
          zero: 0,
          blockSize: block.size,
          writeZeros: false,
          crc,
        }),
      );
    } catch (e) {
      if (!(e instanceof NativeIoError)) throw e;
      if (e.code === 'EPADDING') {
        throw new IoError(
          'ERR_DELTA_PAST_END',
          `delta: the page copied to offset ${offsets[e.badPage!]} of ram block "${name}" has non-zero bytes past the block's end (size ${block.size}): its source is not what the sender took it for`,
        );
      }
      throw nativeIoFailure(e, { subject: `ram block "${name}" to "${block.output.writePath}"` });
    }
    for (let j = 0; j < n; j++) block.digest.add(offsets[j]! / ps, crc[j]!);
    this.onWritten?.(block, offsets, n);
  }

  /** The run's `delta`: `dataPages` and `zeroPages` from the channels' counters, the rest from the references. */
  stats(stats: RunStats): void {
    stats.delta = this.counts(stats.normalPages, stats.zeroPages);
  }

  private counts(dataPages: number, zeroPages: number): DeltaCounts {
    return {
      dataPages,
      zeroPages: zeroPages + this.zeroPages,
      basePages: this.basePages,
      migrationPages: this.migrationPages,
      refPackets: this.refPackets,
      refBytes: this.refBytes,
      bytesSaved: (this.basePages + this.migrationPages) * this.hello.pageSize - this.refBytes,
    };
  }

  /** Closes the bases once no copy is in flight. */
  close(): void {
    this.closing = true;
    if (this.active === 0) this.closeBases();
  }

  private closeBases(): void {
    for (const b of this.bases.splice(0)) fs.closeSync(b.fd);
    if (this.stashFd >= 0) fs.closeSync(this.stashFd);
    this.stashFd = -1;
    if (this.stashFile) fs.rmSync(this.stashFile, { force: true });
    this.stashFile = null;
    this.stashed = null;
  }
}

/** In place: marks the batch's non-zero pages (`entries`, indices from `first`) in `clone.nonzero`; nothing is written. */
function markNonzero(clone: Clone, entries: Uint8Array, count: number, first: number): void {
  for (let i = 0; i < count; i++) {
    const p = entryIndex(entries, i) - first;
    if (p < clone.pages) clone.nonzero[p] = 1;
  }
}

/** Where table page `t` is in the stash (`list`, ascending): its index, or -1. */
function findPage(list: Uint32Array, t: number): number {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = list[mid]!;
    if (v === t) return mid;
    if (v < t) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
