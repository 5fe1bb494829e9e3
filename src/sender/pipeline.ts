/**
 * The sender's per-packet pipeline, shared by every destination. Images are
 * cut into packet jobs handed out to N channels; per channel, packets flow
 * load (mapped image) -> analyse (zero pages + CRCs, off the event loop) ->
 * method.prepare -> header -> sink, with up to PIPELINE_DEPTH packets prepared
 * ahead of the one being written; a slab pool shared by the channels bounds memory. Offloaded
 * methods do load, analyse and prepare on the channel's compute worker, and on a sink that lets it
 * (ChannelSink.relay: a plain TCP channel, no rate limit) the header and the send as well.
 *
 * Where packets go is the ChannelSink: TCP sockets (sender.ts), or a
 * migration file (src/file/: a ring of aligned buffers for the stream layout,
 * positional page writes for mapped-ram).
 */
import { IoError, ProtocolError, UsageError, type MfdError } from '../errors.js';
import { digestRuns, imageSource, missingRuns, runPages } from '../image/resume.js';
import type { Logger } from '../log.js';
import {
  getMethod,
  listMethods,
  type CompressionMethod,
  type MethodChoice,
  type MethodName,
  type MethodParams,
  type MethodSender,
} from '../methods/index.js';
import { HOLE_PATH, getDetector, listDetectors, type ZeroPageDetector, type ZeroPageScanner } from '../zero-page/index.js';
import { native } from '../native/load.js';
import { PathTally } from '../offload/paths.js';
import { BlockDigest } from '../image/digest.js';
import { encodePacketHeader, encodePagesHeader } from '../wire/packet.js';
import { MULTIFD_FLAG_SYNC, MULTIFD_PACKET_SIZE, packetHeaderSize, pageCount } from '../wire/constants.js';
import type { BlockSpec } from '../image/ramblock.js';
import { ImageSource, type ImageAccess } from '../image/image-source.js';
import { slabPool, type Slab } from './slab-pool.js';
import type { BoundedPool } from '../io/bounded-pool.js';
import { pageRuns } from '../image/page-runs.js';
import { ComputePool, defaultPoolSize } from '../compute/pool.js';
import type { PacketReply } from '../compute/messages.js';
import { sendPagesPacket, type PacketSend } from '../compute/relay-send.js';
import { buildStats, newChannelCounters, type ChannelCounters, type RunStats } from '../stats/stats.js';
import { RateLimiter } from './rate-limit.js';

/** Packets read ahead of the one being written, per channel. */
const PIPELINE_DEPTH = 2;
/**
 * Packets in flight (read ahead, or handed to a sink and not yet done) across
 * all channels. Each holds its part of the image's mapped page cache, so with
 * many channels this bounds memory; with few, each channel has its full
 * PIPELINE_DEPTH + 2 (a packet being written, one queued behind it).
 */
const MAX_PACKETS_IN_FLIGHT = 64;

/** The pipeline's options; `compression` and `methodParams` (MethodChoice) are typed from the method registry. */
export interface PipelineOptions<N extends MethodName = MethodName> extends MethodChoice<N> {
  images: BlockSpec[];
  channels: number;
  pageSize: number;
  zeroPageDetection: string;
  /** Accelerator devices (QEMU's accel-path), e.g. dsa:/dev/dsa/wq0.0. */
  accelPaths?: string[];
  /** Any fallback from a hardware path is an error (--require-hardware). */
  requireHardware?: boolean;
  /** How the main thread gets the pages of a method that sends them as they are (ImageSource); default auto. */
  imageAccess?: ImageAccess;
  logger: Logger;
  /** Compute worker threads for offloaded methods (default: min(channels, cores)). */
  threads?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Bytes per second for the whole migration, all channels together (QEMU's max-bandwidth); 0 or absent: no limit. */
  maxBandwidth?: number;
  /**
   * False: zero pages stay out of the packets' headers (zero_pages 0, only the normal pages' offsets);
   * the sink places them from OutgoingPacket.offsets (send --qemu: ZERO records on the main channel,
   * which every QEMU reads, where 7.2 knows no zero_pages). Default true.
   */
  zeroPagesInPackets?: boolean;
}

/** One image being sent as a ramblock. */
export interface SendBlock {
  /** Position in the ramblock table. */
  index: number;
  source: ImageSource;
  nameBytes: Uint8Array;
  digest: BlockDigest;
  /** The sender's identity of the image (size, mtime, inode), for a resume's check. */
  sourceId: string;
  /** Pages the receiver already holds (a resume), as runs [start, count, ...]: not sent. */
  held: number[];
}

/** One packet handed to a sink, in channel order. */
export interface OutgoingPacket {
  /** The encoded packet header, then the payload chunks: what goes on the wire. */
  pieces: Uint8Array[];
  /** Bytes after the header (next_packet_size). */
  payloadBytes: number;
  /** The channel's closing SYNC packet (header only, no pages). */
  sync: boolean;
  /** The packet's ramblock; null on SYNC. */
  block: SendBlock | null;
  /** Byte offsets in the block: the normal pages (ascending), then the zero pages. */
  offsets: number[];
  normal: number;
  zeros: number;
  /** Call once the pieces are no longer needed (written, or copied elsewhere). */
  done(): void;
}

/** Where one channel's packets go. */
export interface ChannelSink {
  /** Takes one packet; resolves when the sink can take the next one (backpressure). */
  write(p: OutgoingPacket): Promise<void>;
  /** Every packet of the channel has been handed over (the SYNC last). */
  end(): Promise<void>;
  /** A plain TCP channel on its native thread: the channel's compute worker may send its packets itself. */
  relay?: RelaySink;
}

/**
 * A sink the channel's compute worker sends to (src/transport/native-channel.ts): the pipeline marks a
 * packet expected before it asks the worker (expect), hands on what the worker's send did (settle), and
 * gives the sink the packet's completion (sent), in channel order, as it would write() it.
 */
export interface RelaySink {
  /** The channel's number for the worker's native.socketChannelSend. */
  id: number;
  timeoutMs: number;
  /** The packet's pieces stay pinned, the socket open, until it is done; returns its token. */
  expect(pieces: Uint8Array[]): number;
  /** The worker's result: resolves when every byte is in the kernel; rejects as a send does. */
  settle(token: number, code: number, left: number): Promise<void>;
  /** The worker's call failed: the packet is done unless it was queued after all. */
  abandon(token: number): void;
  /** The packet (`bytes` on the wire) and its completion, in channel order; resolves when the sink can take the next. */
  sent(bytes: number, completion: Promise<void>, done: () => void): Promise<void>;
}

/** A packet of its own kind sent before the pages (delta references, src/delta/): header fields and payload. */
export interface FirstPacket {
  block: SendBlock;
  flags: number;
  payload: Uint8Array;
  /** Pages it stands for (progress). */
  pages: number;
}

export interface Job {
  block: SendBlock;
  /** Byte offset of the packet's first page in the block. */
  offset: number;
  pages: number;
  /**
   * The pages' indices in the block when they are scattered (a gathered job:
   * the pages between them are held by the receiver); absent when the job is
   * the `pages` consecutive pages at `offset`.
   */
  list?: Uint32Array;
}

interface PipelineChannel {
  id: number;
  sink: ChannelSink;
  /** The method's state when it runs inline; offloaded methods keep theirs in the channel's worker. */
  method: MethodSender | null;
  /** The zero-page scanner when it runs inline (else in the worker). */
  scanner: ZeroPageScanner | null;
  methodTally: PathTally;
  zeroTally: PathTally;
  counters: ChannelCounters;
  /** Packets handed to the channel's worker and not yet back (prepareOffloaded). */
  inWorker: number;
  /** Called when inWorker comes down to 0. */
  drained: (() => void)[];
}

export class SendPipeline {
  readonly channels: PipelineChannel[] = [];
  readonly headerSize: number;
  readonly totalBytes: number;
  private packetNum = 0n;
  /** CRC-32C of a zero page: every page of a packet wholly in holes (prepareHoles). */
  private readonly zeroPageCrc: number;
  private doneBytes = 0;
  /** Packet buffers, shared by the channels (MAX_PACKETS_IN_FLIGHT). */
  private readonly pool: BoundedPool<Slab>;
  private readonly logged = new Set<string>();
  /** Packets a worker is to send (RelaySink) whose call has not come back: close() lets them go. */
  private readonly relaying = new Set<() => void>();

  private readonly limiter: RateLimiter | null;
  /** Packets the channels send, in turn, before any page (sendFirst). */
  private readonly first: FirstPacket[] = [];
  /** The held pages are digested already (sendFirst). */
  private heldDigested = false;

  private constructor(
    private readonly opts: PipelineOptions,
    readonly method: CompressionMethod,
    readonly detector: ZeroPageDetector,
    readonly params: MethodParams,
    readonly compressionPath: string,
    readonly zeroPagePath: string,
    readonly blocks: SendBlock[],
    private readonly compute: ComputePool | null,
  ) {
    this.headerSize = packetHeaderSize(opts.pageSize);
    this.zeroPageCrc = native.crc32c(new Uint8Array(opts.pageSize));
    this.totalBytes = blocks.reduce((a, b) => a + b.source.size, 0);
    const slabs = Math.min(Math.max(1, opts.channels) * (PIPELINE_DEPTH + 2), MAX_PACKETS_IN_FLIGHT);
    const perPacket = pageCount(opts.pageSize);
    // Offloaded: the workers write each packet's analysis and payload into the slab (shared).
    const outSize = compute ? method.maxPayload(perPacket, opts.pageSize) : 0;
    this.pool = slabPool(slabs, MULTIFD_PACKET_SIZE, this.headerSize, perPacket, outSize);
    this.limiter = opts.maxBandwidth ? new RateLimiter(opts.maxBandwidth) : null;
  }

  /**
   * Checks method, detector and hardware flags (before anything connects or
   * writes), opens the images and, for offloaded methods, the compute pool.
   */
  static async open(opts: PipelineOptions): Promise<SendPipeline> {
    const method = getMethod(opts.compression);
    const detector = getDetector(opts.zeroPageDetection);
    const params = method.params(opts.methodParams ?? {});
    const accelPaths = opts.accelPaths ?? [];
    const requireHardware = opts.requireHardware ?? false;
    if (requireHardware && !method.hardware && !detector.hardware) {
      const hw = [
        ...listMethods()
          .filter((m) => getMethod(m).hardware)
          .map((m) => `--compression ${m}`),
        ...listDetectors()
          .filter((d) => getDetector(d).hardware)
          .map((d) => `--zero-page-detection ${d}`),
      ];
      throw new UsageError(`--require-hardware needs a backend that uses hardware: ${hw.join(', ')}`);
    }
    if (accelPaths.length > 0 && !detector.hardware)
      throw new UsageError(
        `--accel-path is for a hardware zero-page backend (${listDetectors()
          .filter((d) => getDetector(d).hardware)
          .join(', ')}), not --zero-page-detection ${detector.name}`,
      );
    // Which path each backend takes, decided (and refused under --require-hardware) before any page moves.
    const compressionPath = method.path({ params, requireHardware });
    const zeroPagePath = detector.check({ accelPaths, requireHardware });
    const sources: ImageSource[] = [];
    try {
      for (const spec of opts.images) sources.push(await ImageSource.open(spec, opts.imageAccess));
    } catch (e) {
      for (const s of sources) s.close();
      throw e;
    }
    const blocks = sources.map((s, index) => ({
      index,
      source: s,
      // Its own ArrayBuffer, not Node's 8 KiB pool: a packet the worker sends clones it (PacketSend.ramblock).
      nameBytes: new Uint8Array(Buffer.from(s.name, 'utf8')),
      digest: new BlockDigest(),
      sourceId: imageSource(s.fd),
      held: [],
    }));
    const compute = method.offload ? new ComputePool(opts.threads ?? defaultPoolSize(opts.channels)) : null;
    return new SendPipeline(opts, method, detector, params, compressionPath, zeroPagePath, blocks, compute);
  }

  get pageSize(): number {
    return this.opts.pageSize;
  }

  /** Sets up channel `id` (method and scanner state, inline or on its worker); `sink` gets its packets. */
  async addChannel(id: number, sink: (counters: ChannelCounters) => ChannelSink): Promise<void> {
    const { method, detector, params, compute, opts } = this;
    const accelPaths = opts.accelPaths ?? [];
    const requireHardware = opts.requireHardware ?? false;
    const counters = newChannelCounters(id);
    const methodTally = new PathTally(`${method.name} compression`, requireHardware);
    const zeroTally = new PathTally(`${detector.name} zero-page detection`, requireHardware);
    if (compute) {
      await compute.call(id, {
        op: 'send-setup',
        channel: id,
        channels: opts.channels,
        method: method.name,
        pageSize: opts.pageSize,
        params,
        detector: detector.name,
        accelPaths,
        requireHardware,
      });
    }
    // In id order whatever order the channels are added in (packetCounts() is by id).
    const at = this.channels.findIndex((c) => c.id > id);
    this.channels.splice(at < 0 ? this.channels.length : at, 0, {
      id,
      sink: sink(counters),
      method: compute
        ? null
        : method.sendSetup({ channel: id, channels: opts.channels, pageSize: opts.pageSize, params, tally: methodTally }),
      scanner: compute ? null : detector.open({ channel: id, accelPaths, requireHardware, tally: zeroTally }),
      methodTally,
      zeroTally,
      inWorker: 0,
      drained: [],
      counters,
    });
  }

  /**
   * Sends every packet of every image over the channels, then a SYNC packet
   * per channel, and ends each sink. `fail` records the first failure (and
   * returns it); `failed` tells a channel to stop.
   */
  async run(fail: (e: unknown) => MfdError, failed: () => MfdError | null): Promise<void> {
    const jobs = makeJobs(this.blocks, this.opts.pageSize);
    const ps = this.opts.pageSize;
    const held = (async () => {
      if (this.heldDigested) return;
      for (const b of this.blocks)
        await digestRuns(b.source.fd, b.source.size, ps, b.held, b.digest, `image "${b.source.path}"`, () => failed() !== null);
    })();
    try {
      await Promise.all(
        [...this.channels.map((ch) => this.runChannel(ch, jobs, failed)), held].map((p) =>
          p.catch((e) => {
            throw fail(e);
          }),
        ),
      );
    } catch (e) {
      // The read-back stops at its next read once the failure is recorded; close() must not close its fd under it.
      await held.catch(() => {});
      throw e;
    }
  }

  /**
   * A resume: the receiver holds `have` (ready.have). Those pages are not
   * sent; run() digests them, read from the image, beside the transfer, so
   * the digests still cover every page and the verdict still means
   * byte-identical.
   */
  resumeFrom(have: Record<string, number[]>): void {
    const ps = this.opts.pageSize;
    for (const name of Object.keys(have)) {
      if (!this.blocks.some((b) => b.source.name === name))
        throw new ProtocolError(
          'ERR_RESUME_HAVE',
          `control channel: ready.have names ram block "${name}", which this migration does not send`,
        );
    }
    for (const b of this.blocks) {
      const runs = have[b.source.name] ?? [];
      const pages = Math.ceil(b.source.size / ps);
      const last = runs.length > 0 ? runs[runs.length - 2]! + runs[runs.length - 1]! : 0;
      if (last > pages)
        throw new ProtocolError(
          'ERR_RESUME_HAVE',
          `control channel: ready.have for ram block "${b.source.name}" reaches page ${last}, expected at most ${pages} pages`,
        );
      b.held = runs;
      this.doneBytes += Math.min(runPages(runs) * ps, b.source.size);
    }
  }

  /**
   * Delta transfer (src/delta/sender.ts): `packets` go before any page, and
   * the pages `held` names per block are not sent as data; the caller has
   * digested them (run() does not read them back, as it does a resume's).
   */
  sendFirst(packets: FirstPacket[], held: (b: SendBlock) => number[]): void {
    this.first.push(...packets);
    this.heldDigested = true;
    for (const b of this.blocks) {
      b.held = held(b);
      this.doneBytes += Math.min(runPages(b.held) * this.opts.pageSize, b.source.size);
    }
  }

  /** Pages the receiver held at a resume, not sent. */
  get heldPages(): number {
    return this.blocks.reduce((a, b) => a + runPages(b.held), 0);
  }

  /** Packets (SYNC included) handed to each channel's sink, by channel id. */
  packetCounts(): number[] {
    return this.channels.map((c) => c.counters.packets);
  }

  digests(): Record<string, string> {
    return Object.fromEntries(this.blocks.map((b) => [b.source.name, b.digest.hex()]));
  }

  stats(uuid: string, startNs: bigint): RunStats {
    return buildStats(
      {
        side: 'send',
        uuid,
        compression: this.method.name,
        compressionPath: this.compressionPath,
        zeroPageDetection: this.detector.name,
        zeroPagePath: this.zeroPagePath,
        ...(this.compute ? {} : { imageAccess: this.imageAccess() }),
        paths: {
          compression: mergeTallies(this.channels.map((c) => c.methodTally)),
          zeroPage: mergeTallies(this.channels.map((c) => c.zeroTally)),
        },
        pageSize: this.opts.pageSize,
        ramblocks: this.blocks.map((b) => ({ name: b.source.name, size: b.source.size, path: b.source.path, digest: b.digest.hex() })),
      },
      this.channels.map((c) => c.counters),
      startNs,
    );
  }

  /** How the main thread got the images' pages (ImageSource.access): "map (why)", per image when there are several. */
  private imageAccess(): string {
    const each = this.blocks.map((b) => `${b.source.access.how} (${b.source.access.why})`);
    return new Set(each).size === 1 ? each[0]! : this.blocks.map((b, i) => `${b.source.name}: ${each[i]}`).join('; ');
  }

  /** Frees method state, workers and image mappings; also after a failure. */
  async close(): Promise<void> {
    for (const ch of this.channels) ch.method?.cleanup();
    await this.compute?.close();
    // A call the workers' end left without an answer: its packet is done, unless it was queued after all.
    for (const abandon of this.relaying) abandon();
    this.relaying.clear();
    for (const b of this.blocks) b.source.close();
  }

  private logFailures(): void {
    for (const f of this.detector.failures()) if (!this.logged.has(f) && this.logged.add(f)) this.opts.logger.warn(f);
  }

  /**
   * A job's packet: wholly in holes of its image (prepareHoles), else inline or on the channel's worker.
   * A packet the worker sends goes out as the worker finishes it, so one wholly in holes, sent from this
   * thread, waits for the channel's packets still on the worker, and `holds`: nothing more is handed out
   * before it (the channel's packets go out in the order they were handed out).
   */
  private prepare(ch: PipelineChannel, job: Job, slab: Slab): { prepared: Promise<Prepared>; holds: boolean } {
    const relay = this.compute ? this.relayOf(ch) : undefined;
    // The pages in holes (lseek), asked once here (undefined: not asked); inline, load() takes the answer.
    let holes: Uint8Array | null | undefined;
    try {
      if (this.detector.skipsHoles && !job.list) holes = job.block.source.holesIn(job.offset, job.pages, this.opts.pageSize);
    } catch (e) {
      return { prepared: Promise.reject(e), holds: false };
    }
    if (!holes || holes.includes(0)) {
      const prepared = this.compute ? this.prepareOffloaded(ch, job, slab) : this.prepareInline(ch, job, slab, holes);
      return { prepared, holds: false };
    }
    if (relay && ch.inWorker > 0) {
      const prepared = new Promise<void>((resolve) => ch.drained.push(resolve)).then(() => this.prepareHoles(ch, job, slab, relay));
      return { prepared, holds: true };
    }
    return { prepared: new Promise((resolve) => resolve(this.prepareHoles(ch, job, slab, relay))), holds: false };
  }

  /**
   * A packet wholly in holes of the image, with a detector that takes such pages as zero unread
   * (skipsHoles): all zero pages, nothing read or scanned, no hop to a worker. Where the channel's
   * worker sends the packets (`relay`), this one is numbered and sent now, from this thread, as the
   * worker would; else it is written in its turn (its header goes out from this thread too:
   * NativeChannel.send).
   */
  private prepareHoles(ch: PipelineChannel, job: Job, slab: Slab, relay: RelaySink | undefined): Prepared {
    slab.zero.fill(1, 0, job.pages);
    slab.crc.fill(this.zeroPageCrc, 0, job.pages);
    ch.zeroTally.add(HOLE_PATH, job.pages);
    const prepared: Prepared = { job, slab, zeros: job.pages, zero: slab.zero, crc: slab.crc, payload: () => [], release: () => {} };
    if (!relay) return prepared;
    const send = this.relaySend(relay, job, slab.header, [slab.header]);
    let r: { code: number; left: number };
    try {
      r = sendPagesPacket(send, this.opts.pageSize, job.offset, job.pages, undefined, slab.zero, job.pages, NO_PAYLOAD);
    } catch (e) {
      relay.abandon(send.token);
      throw e;
    }
    const completion = relay.settle(send.token, r.code, r.left);
    completion.catch(() => {}); // the sink reports it (writePacket)
    return { ...prepared, sent: { bytes: slab.header.length, completion } };
  }

  /** Where the channel's worker sends the packets it makes (its sink takes them), unless the rate limiter decides when each goes. */
  private relayOf(ch: PipelineChannel): RelaySink | undefined {
    return this.limiter ? undefined : ch.sink.relay;
  }

  /** A packet the thread that makes it sends (relay-send.ts): numbered now, its pieces pinned until it is done. */
  private relaySend(relay: RelaySink, job: Job, header: Uint8Array, pieces: Uint8Array[]): PacketSend {
    return {
      id: relay.id,
      token: relay.expect(pieces),
      timeoutMs: relay.timeoutMs,
      header,
      flags: this.method.flag,
      packetNum: this.packetNum++,
      ramblock: job.block.nameBytes,
      zeroPagesInPackets: this.opts.zeroPagesInPackets !== false,
    };
  }

  /**
   * Inline: map or read the pages, analyse them off the event loop; the method runs at write time.
   * `known`: the holes prepare() found (null: none; undefined: not asked).
   */
  private async prepareInline(ch: PipelineChannel, job: Job, slab: Slab, known?: Uint8Array | null): Promise<Prepared> {
    const ps = this.opts.pageSize;
    const src = job.block.source;
    const { pages, holes, release } = await src.load(job.offset, job.pages, ps, slab.data, job.list, this.detector.skipsHoles, known);
    let zeros: number;
    try {
      zeros = await ch.scanner!.analyse(pages, ps, job.pages, slab.zero, slab.crc, holes);
    } catch (e) {
      release();
      throw shrankOr(e, src, job.offset + pages.length);
    }
    const normal = job.pages - zeros;
    return {
      job,
      slab,
      zeros,
      zero: slab.zero,
      crc: slab.crc,
      payload: () => (normal > 0 ? ch.method!.prepare(pageRuns(pages, slab.zero, job.pages, ps), normal) : []),
      release,
    };
  }

  /**
   * Offloaded: the channel's worker loads, analyses and compresses, into the slab it shares with this
   * thread. On a sink the worker may send to (ChannelSink.relay), and without a rate limit, it also
   * encodes the header and sends the packet (RelaySink): what comes back is counts, the CRCs are in the
   * slab, and the packet number is given here, as the job is handed out (per channel in order).
   */
  private async prepareOffloaded(ch: PipelineChannel, job: Job, slab: Slab): Promise<Prepared> {
    const src = job.block.source;
    const relay = this.relayOf(ch);
    const send = relay ? this.relaySend(relay, job, slab.header, [slab.header, slab.out!]) : undefined;
    const abandon = (): void => relay!.abandon(send!.token);
    if (relay) this.relaying.add(abandon);
    // A gathered job's page indices go in the slab, which the worker shares, rather than in the message.
    if (job.list) slab.list!.set(job.list);
    let r: PacketReply;
    ch.inWorker++;
    try {
      r = await this.compute!.call<PacketReply>(ch.id, {
        op: 'packet',
        channel: ch.id,
        fd: src.fd,
        path: src.path,
        size: src.size,
        offset: job.offset,
        pages: job.pages,
        ...(job.list ? { listed: true } : {}),
        slab: slab.shared!,
        pagesPerPacket: slab.zero.length,
        ...(send ? { send } : {}),
      });
    } catch (e) {
      if (relay) {
        this.relaying.delete(abandon);
        abandon();
      }
      throw shrankOr(e, src, job.offset + job.pages * this.opts.pageSize);
    } finally {
      if (--ch.inWorker === 0) for (const f of ch.drained.splice(0)) f();
    }
    ch.methodTally.merge(r.paths.compression);
    ch.zeroTally.merge(r.paths.zeroPage);
    if (relay) {
      this.relaying.delete(abandon);
      // Settled now, whatever the pipeline does next: the socket waits for every packet handed out.
      const completion = relay.settle(send!.token, r.sent!.code, r.sent!.left);
      completion.catch(() => {}); // the sink reports it (writePacket)
      const sent = { bytes: slab.header.length + r.payloadBytes, completion };
      return { job, slab, zeros: r.zeros, zero: slab.zero, crc: slab.crc, payload: () => [], release: () => {}, sent };
    }
    const payload = r.payloadBytes > 0 ? [slab.out!.subarray(0, r.payloadBytes)] : [];
    return { job, slab, zeros: r.zeros, zero: slab.zero, crc: slab.crc, payload: () => payload, release: () => {} };
  }

  private async runChannel(ch: PipelineChannel, jobs: Iterator<Job>, failed: () => MfdError | null): Promise<void> {
    for (let x = this.first.shift(); x; x = this.first.shift()) {
      if (failed()) return;
      await this.writeFirst(ch, x);
    }
    const ahead: Promise<Prepared>[] = [];
    try {
      await this.runJobs(ch, jobs, failed, ahead);
    } finally {
      // Packets still being prepared (on a worker, from the image's mapping or fd, into a slab) are waited
      // for before the channel returns: after a failure the caller closes the image and the pool under them.
      await Promise.allSettled(ahead);
    }
    if (failed()) return;
    await this.writeSync(ch);
    await ch.sink.end();
  }

  /** The channel's packets, up to PIPELINE_DEPTH prepared ahead (in `ahead`), each written in order. */
  private async runJobs(
    ch: PipelineChannel,
    jobs: Iterator<Job>,
    failed: () => MfdError | null,
    ahead: Promise<Prepared>[],
  ): Promise<void> {
    let exhausted = false;
    // A packet ahead waits for the channel's worker, and nothing is handed out before it goes (prepare()).
    let holding: Promise<Prepared> | null = null;
    for (;;) {
      while (!exhausted && !holding && ahead.length < PIPELINE_DEPTH) {
        // The pool is shared: wait for a slab only with nothing ahead to write, so no
        // channel holds one slab while it waits for another (all of them could).
        const slab = ahead.length === 0 ? await this.pool.acquire() : this.pool.tryAcquire();
        if (!slab) break;
        // Let the other channels take their next job first: jobs go round the channels.
        if (ahead.length > 0) await Promise.resolve();
        const next = jobs.next();
        if (next.done) {
          this.pool.release(slab);
          exhausted = true;
          break;
        }
        const { prepared: p, holds } = this.prepare(ch, next.value, slab);
        p.catch(() => {}); // awaited below; avoid an unhandled rejection meanwhile
        ahead.push(p);
        if (holds) holding = p;
      }
      const p = ahead[0];
      if (!p) break;
      const prepared = await p;
      ahead.shift();
      if (p === holding) holding = null;
      if (failed()) return;
      await this.writePacket(ch, prepared, failed);
    }
  }

  private async writePacket(
    ch: PipelineChannel,
    { job, slab, zeros, zero, crc, payload, release, sent }: Prepared,
    failed: () => MfdError | null,
  ): Promise<void> {
    const ps = this.opts.pageSize;
    const normal = job.pages - zeros;
    const first = job.offset / ps;
    const list = job.list;
    for (let i = 0; i < job.pages; i++) job.block.digest.add(list ? list[i]! : first + i, crc[i]!);
    if (sent) {
      // Sent (or queued) by the worker already: the counters and progress, then its completion.
      this.logFailures();
      this.count(ch, job, normal, zeros);
      await ch.sink.relay!.sent(sent.bytes, sent.completion, () => this.pool.release(slab));
      return;
    }
    const chunks = await payload();
    let size = 0;
    for (const c of chunks) size += c.length;
    const offsets = new Array<number>(job.pages);
    encodePagesHeader(
      slab.header,
      this.headerSize,
      {
        flags: this.method.flag,
        pageSize: ps,
        packetNum: this.packetNum++,
        ramblock: job.block.nameBytes,
        pages: job.pages,
        first,
        list,
        zero,
        zeros,
        zeroPagesInHeader: this.opts.zeroPagesInPackets !== false,
        payloadBytes: size,
      },
      offsets,
    );
    this.logFailures();
    this.count(ch, job, normal, zeros);
    await this.limiter?.take(slab.header.length + size, failed);
    await ch.sink.write({
      pieces: [slab.header, ...chunks],
      payloadBytes: size,
      sync: false,
      block: job.block,
      offsets,
      normal,
      zeros,
      done: () => {
        release();
        this.pool.release(slab);
      },
    });
  }

  /** A packet's counts and the progress. */
  private count(ch: PipelineChannel, job: Job, normal: number, zeros: number): void {
    const ps = this.opts.pageSize;
    const c = ch.counters;
    c.packets++;
    c.normalPages += normal;
    c.zeroPages += zeros;
    const list = job.list;
    this.doneBytes += list
      ? job.pages * ps - Math.max(0, (list[job.pages - 1]! + 1) * ps - job.block.source.size)
      : Math.min(job.pages * ps, job.block.source.size - job.offset);
    this.opts.onProgress?.(this.doneBytes, this.totalBytes);
  }

  /** A packet of sendFirst(): its own flags and payload, no pages in the header. */
  private async writeFirst(ch: PipelineChannel, x: FirstPacket): Promise<void> {
    const slab = await this.pool.acquire();
    encodePacketHeader(slab.header, this.headerSize, {
      flags: x.flags,
      pagesAlloc: pageCount(this.opts.pageSize),
      normalPages: 0,
      zeroPages: 0,
      nextPacketSize: x.payload.length,
      packetNum: this.packetNum++,
      ramblock: x.block.nameBytes,
      offsets: [],
    });
    ch.counters.packets++;
    await ch.sink.write({
      pieces: [slab.header, x.payload],
      payloadBytes: x.payload.length,
      sync: false,
      block: x.block,
      offsets: [],
      normal: 0,
      zeros: 0,
      done: () => this.pool.release(slab),
    });
  }

  /** A SYNC packet on every channel, outside run() (send --qemu: one per RAM section or pass). */
  async sync(): Promise<void> {
    await Promise.all(this.channels.map((ch) => this.writeSync(ch)));
  }

  /** SYNC at the end of the pass: header only, pages_alloc 0 (QEMU 9.2+ layout). */
  private async writeSync(ch: PipelineChannel): Promise<void> {
    const slab = await this.pool.acquire();
    encodePacketHeader(slab.header, this.headerSize, {
      flags: MULTIFD_FLAG_SYNC,
      pagesAlloc: 0,
      normalPages: 0,
      zeroPages: 0,
      nextPacketSize: 0,
      packetNum: this.packetNum++,
      ramblock: new Uint8Array(0),
      offsets: [],
    });
    ch.counters.packets++;
    ch.counters.syncPackets++;
    await ch.sink.write({
      pieces: [slab.header],
      payloadBytes: 0,
      sync: true,
      block: null,
      offsets: [],
      normal: 0,
      zeros: 0,
      done: () => this.pool.release(slab),
    });
  }
}

/** A packet ready to be written: its page analysis and, at write time, its payload. */
interface Prepared {
  job: Job;
  slab: Slab;
  zeros: number;
  zero: Uint8Array;
  crc: Uint32Array;
  /** Called when the packet is written, in channel order (stream methods depend on it). */
  payload(): Uint8Array[] | Promise<Uint8Array[]>;
  release(): void;
  /** Sent by the channel's worker (RelaySink): its bytes on the wire and the send's completion. */
  sent?: { bytes: number; completion: Promise<void> };
}

/** The payload of a packet of zero pages only. */
const NO_PAYLOAD = new Uint8Array(0);

function mergeTallies(tallies: PathTally[]): PathTally['counts'] {
  const all = new PathTally('all channels');
  for (const t of tallies) all.merge(t.counts);
  return all.counts;
}

/**
 * All packets of all blocks, in block and offset order, handed out one at a
 * time: every page but those the receiver holds (a resume) or that travel as
 * delta references.
 *
 * A job is a packet's worth of consecutive pages, cut at packet boundaries (so
 * never across one of the image's mapped windows either). Where the held
 * pages leave only part of a packet's pages to send, those parts are gathered
 * into jobs of scattered pages (`list`) that fill whole packets: a multifd
 * packet names each page's offset, so its pages need not be neighbours, and
 * a page changed here and there does not cost a packet header of its own.
 */
export function makeJobs(blocks: readonly SendBlock[], pageSize: number): Iterator<Job> {
  const perPacket = pageCount(pageSize);
  return (function* () {
    for (const block of blocks) {
      const runs = missingRuns(block.held, Math.ceil(block.source.size / pageSize));
      const gathering = block.held.length > 0;
      const gathered: number[] = [];
      const flush = (): Job => {
        const list = Uint32Array.from(gathered);
        gathered.length = 0;
        return { block, offset: list[0]! * pageSize, pages: list.length, list };
      };
      for (let r = 0; r < runs.length; r += 2) {
        const end = runs[r]! + runs[r + 1]!;
        for (let page = runs[r]!; page < end;) {
          const next = Math.min(end, (Math.floor(page / perPacket) + 1) * perPacket);
          if (!gathering || next - page === perPacket) {
            // Offsets stay in increasing order: what was gathered before goes first.
            if (gathered.length > 0) yield flush();
            yield { block, offset: page * pageSize, pages: next - page };
          } else {
            for (let p = page; p < next; p++) {
              gathered.push(p);
              if (gathered.length === perPacket) yield flush();
            }
          }
          page = next;
        }
      }
      if (gathered.length > 0) yield flush();
    }
  })();
}

function shrankOr(e: unknown, src: ImageSource, end: number): unknown {
  // A NativeIoError here, also from a worker: the thread hop keeps its class and fields.
  if ((e as { code?: string }).code === 'ESHORTREAD') {
    return new IoError(
      'ERR_IMAGE_SHRANK',
      `image "${src.path}" shrank while sending: bytes before ${Math.min(end, src.size)} are gone, expected ${src.size} bytes`,
    );
  }
  return e;
}
