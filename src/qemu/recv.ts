/**
 * `mfd recv --qemu`: stands in for a QEMU migration destination. Accepts the
 * main channel ("QEVM") and the multifd channels (0x11223344 + init packet),
 * told apart by their first 4 bytes, in any order; reads them all at once;
 * writes each ramblock to DIR/<name made safe> and everything after the RAM END
 * section to DIR/device-state, with DIR/manifest.json beside them.
 *
 * Order: QEMU separates passes by multifd syncs (one SYNC packet per channel at
 * each RAM section's EOS in QEMU <= 8.0, at each MULTIFD_FLUSH record in 8.1+).
 * Every page carries the number of sync points before it on its channel (its
 * epoch); a page is written unless the page already holds data of a later
 * epoch. That is the order QEMU's barrier enforces, without making a channel
 * wait for the others. Writes are synchronous, so check and write cannot be
 * overtaken.
 *
 * The multifd channels are read by the receiver's channel reader
 * (receiver/data-channel.ts) with the QEMU-tolerant profile and native reads;
 * only the placement of their pages (QemuPages) is QEMU's own.
 */
import net from 'node:net';
import path from 'node:path';
import {
  ConnectionError,
  MfdError,
  ProtocolError,
  UnsupportedStreamError,
  VerifyError,
  asMfdError,
  InterruptedError,
  errorText,
} from '../errors.js';
import type { Logger } from '../log.js';
import { largestPayload, methodByFlag, type CompressionMethod, type MethodReceiver } from '../methods/index.js';
import { PathTally } from '../offload/paths.js';
import { ByteQueue } from '../transport/byte-queue.js';
import { NativeChannel } from '../transport/native-channel.js';
import { decodeInitPacket, uuidToString } from '../wire/init-packet.js';
import { ramblockName, type PacketHeader } from '../wire/packet.js';
import {
  INIT_PACKET_SIZE,
  MULTIFD_FLAG_SYNC,
  MULTIFD_MAGIC,
  MULTIFD_VERSION,
  hex,
  packetHeaderSize,
  pageCount,
} from '../wire/constants.js';
import { newChannelCounters, type ChannelCounters } from '../stats/stats.js';
import { Output } from '../receiver/output.js';
import { createDecoder } from '../receiver/decoder.js';
import { DataChannel, readPool, type ChannelHost, type Decoder, type PagePlacer } from '../receiver/data-channel.js';
import { QEMU_VM_FILE_MAGIC } from './format.js';
import { ramblockFileName } from '../image/ramblock.js';
import {
  MAPPED_RAM,
  MAX_DEVICE_STATE,
  StreamReader,
  type MainReader,
  parseMainChannel,
  type MainOptions,
  type MainSummary,
  type RamBlockInfo,
  type RamSectionInfo,
} from './main-channel.js';
import type { FileTarget } from '../file/target.js';
import { openQemuFile, type QemuFile } from './file.js';
import { EpochBudget, PageEpochs } from './page-epochs.js';
import { DEVICE_STATE_FILE, MANIFEST_FILE, MANIFEST_FORMAT, writeManifest, type QemuManifest } from './manifest.js';
import { BlockDigest } from '../image/digest.js';
import { native } from '../native/load.js';
import { createHash, type Hash } from 'node:crypto';

const PAGE_SIZE = 4096;
/** Connections at a time: the main channel, 256 multifd channel ids and a few that are being refused. */
const MAX_CONNECTIONS = 264;
/** Longest file name of a ramblock (after making it safe): the temporary name adds 13 bytes to it, and file names end at 255. */
const MAX_FILE_NAME = 240;

export interface QemuRecvOptions {
  host: string;
  port: number;
  outputDir: string;
  fsync?: boolean;
  timeoutMs?: number;
  /**
   * The source's multifd-channels (--channels; QEMU's destination is given the same): exactly this many
   * multifd channels, ids 0..N-1, must connect (0: none). Absent: as many as connect, ids without gaps,
   * so a missing highest channel that carried no pages cannot be told from a smaller count.
   */
  channels?: number;
  logger: Logger;
  onListening?: (address: net.AddressInfo) => void;
  signal?: AbortSignal;
  /** Most bytes of device state accepted (default MAX_DEVICE_STATE, 1 GiB). */
  maxDeviceStateBytes?: number;
  /** Read a file QEMU wrote (migrate file:PATH[,offset=N]) instead of listening (file.ts). */
  from?: FileTarget;
}

export interface QemuRecvResult {
  manifest: QemuManifest;
  manifestPath: string;
  totalTimeMs: number;
}

interface Block {
  name: string;
  size: number;
  file: string;
  output: Output;
  epochs: PageEpochs;
  /** crc32c-pages-v1 of what the file holds, kept up to date as pages are written (rewritten ones taken back first). */
  digest: BlockDigest;
}

export function receiveQemu(opts: QemuRecvOptions): Promise<QemuRecvResult> {
  return new Promise((resolve, reject) => new QemuMigration(opts, resolve, reject).start());
}

class QemuMigration {
  private readonly log: Logger;
  private readonly server = net.createServer({ noDelay: true });
  private readonly sockets = new Set<net.Socket>();
  private readonly startNs = process.hrtime.bigint();
  private readonly timeoutMs: number;
  private main: { bytesRead: number } | null = null;
  private file: QemuFile | null = null;
  private summary: MainSummary | null = null;
  private configuration: Buffer | null = null;
  private ramSection: RamSectionInfo | null = null;
  readonly blocks = new Map<string, Block>();
  private readonly outputs: Output[] = [];
  private deviceState: Output | null = null;
  private readonly channels = new Map<number, QemuChannel>();
  private uuid: Uint8Array | null = null;
  method: CompressionMethod | null = null;
  readonly receivers: MethodReceiver[] = [];
  readonly tally = new PathTally('decompression');
  stalePages = 0;
  private settled = false;
  private finishing = false;
  private readonly zeros = Buffer.alloc(PAGE_SIZE);
  private readonly zeroCrc = native.crc32c(this.zeros);
  /** A page read back before it is rewritten; the CRCs of a packet's pages. */
  private readonly old = Buffer.alloc(PAGE_SIZE);
  private readonly crcs = new Uint32Array(pageCount(PAGE_SIZE));
  /** SHA-256 of the device state, as it is written. */
  private readonly deviceStateHash: Hash = createHash('sha256');
  private readonly epochBudget = new EpochBudget();
  /** The output being created, if any: a failure waits for it before it rejects. */
  private creating: Promise<Output> | null = null;
  /** Runs from the first multifd channel while no main channel has connected. */
  private mainTimer: NodeJS.Timeout | null = null;
  /** Runs while the main channel has ended and pages are still missing (maybeFinish). */
  private lateTimer: NodeJS.Timeout | null = null;
  /** Connections accepted that have not yet said whether they are the main channel or a multifd channel. */
  private unidentified = 0;

  constructor(
    private readonly opts: QemuRecvOptions,
    private readonly resolve: (r: QemuRecvResult) => void,
    private readonly reject: (e: MfdError) => void,
  ) {
    this.log = opts.logger;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  start(): void {
    if (this.opts.from) return this.readFile(this.opts.from);
    this.server.on('connection', (s) => this.accept(s));
    this.server.on('error', (e: NodeJS.ErrnoException) =>
      this.fail(
        new ConnectionError(`ERR_${e.code ?? 'LISTEN'}`, `cannot listen on ${this.opts.host}:${this.opts.port}: ${e.message}`, {}, e),
      ),
    );
    this.server.listen({ host: this.opts.host, port: this.opts.port }, () => {
      const addr = this.server.address() as net.AddressInfo;
      this.log.info({ address: addr.address, port: addr.port }, `waiting for a QEMU migration on ${addr.address}:${addr.port}`);
      this.opts.onListening?.(addr);
    });
    this.opts.signal?.addEventListener('abort', () => this.fail(new InterruptedError(String(this.opts.signal?.reason ?? 'abort'))), {
      once: true,
    });
  }

  /** The first 4 bytes tell the main channel ("QEVM") from a multifd channel (0x11223344). */
  private accept(sock: net.Socket): void {
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    if (this.settled) return void sock.destroy();
    if (this.sockets.size >= MAX_CONNECTIONS) {
      this.log.warn({ peer }, `connection from ${peer} refused: ${MAX_CONNECTIONS} connections are open already`);
      return void sock.destroy();
    }
    this.sockets.add(sock);
    // Counted until it says what it is: a migration does not finish while one may be a multifd channel.
    let pending = true;
    this.unidentified++;
    const settle = (): void => {
      if (!pending) return;
      pending = false;
      this.unidentified--;
    };
    sock.on('close', () => {
      this.sockets.delete(sock);
      if (pending) {
        settle();
        this.maybeFinish();
      }
    });
    sock.on('error', () => {});
    // A connection that never says what it is (a port scan, a stray client) is dropped, not the
    // migration; once it is a main or multifd channel, going quiet fails the migration.
    sock.setTimeout(this.timeoutMs, () => {
      this.log.warn({ peer }, `connection from ${peer} dropped: nothing identified it as a QEMU channel within ${this.timeoutMs} ms`);
      sock.destroy();
    });
    const identified = (): void => {
      settle();
      sock.removeAllListeners('timeout');
      sock.setTimeout(this.timeoutMs, () =>
        this.fail(new ConnectionError('ERR_CHANNEL_TIMEOUT', `connection from ${peer}: nothing received for ${this.timeoutMs} ms`)),
      );
    };
    const q = new ByteQueue();
    const onData = (c: Buffer): void => {
      q.push(c);
      const magic = q.peekUInt32BE();
      if (magic === null) return;
      if (magic === QEMU_VM_FILE_MAGIC) {
        sock.off('data', onData);
        identified();
        return this.onMain(sock, peer, q);
      }
      if (magic !== MULTIFD_MAGIC) {
        sock.off('data', onData);
        this.log.warn(
          { peer },
          `connection from ${peer} refused: first bytes ${hex(magic)}, expected "QEVM" (main channel) or ${hex(MULTIFD_MAGIC)} (multifd)`,
        );
        return void sock.destroy();
      }
      if (q.length < INIT_PACKET_SIZE) return;
      sock.off('data', onData);
      identified();
      this.onMultifd(sock, peer, q);
    };
    sock.on('data', onData);
  }

  private onMain(sock: net.Socket, peer: string, q: ByteQueue): void {
    if (this.main) {
      this.log.warn({ peer }, `second main channel from ${peer} refused`);
      return void sock.destroy();
    }
    this.main = sock;
    this.log.info({ peer }, 'main channel connected');
    this.parseMain(new StreamReader(sock, `main channel from ${peer}`, q.take(q.length)!), `main channel from ${peer}`);
  }

  /** A QEMU migration file: its main channel, with the pages of a mapped-ram file inside it, and no multifd channels. */
  private readFile(from: FileTarget): void {
    this.opts.signal?.addEventListener('abort', () => this.fail(new InterruptedError(String(this.opts.signal?.reason ?? 'abort'))), {
      once: true,
    });
    try {
      this.file = openQemuFile(from, PAGE_SIZE);
      // The migration's bytes in the file (mapped-ram regions included), for the manifest's wireBytes.
      this.main = { bytesRead: this.file.size - from.offset };
    } catch (e) {
      return this.fail(e);
    }
    this.log.info({ file: from.path, offset: from.offset }, `reading QEMU migration file ${from.path} from byte ${from.offset}`);
    this.parseMain(this.file.reader, this.file.where, { mappedRam: this.file.mappedRam });
  }

  private parseMain(reader: MainReader, where: string, o: MainOptions = {}): void {
    parseMainChannel(
      reader,
      {
        onConfiguration: (machine, raw) => {
          this.configuration = raw;
          this.log.info({ machine }, `machine type ${machine}`);
        },
        onRamStart: (info, list) => this.setupBlocks(info, list),
        onZero: (block, offset, fill, epoch) => this.applyPage(this.blocks.get(block)!, offset / PAGE_SIZE, epoch, null, fill),
        onPage: (block, offset, data, epoch) => this.applyPage(this.blocks.get(block)!, offset / PAGE_SIZE, epoch, data, 0),
        onDeviceState: (chunk) => this.writeDeviceState(chunk),
      },
      where,
      PAGE_SIZE,
      this.opts.maxDeviceStateBytes ?? MAX_DEVICE_STATE,
      o,
    ).then(
      (s) => {
        this.summary = s;
        this.maybeFinish();
      },
      (e) => this.fail(e),
    );
  }

  private async setupBlocks(info: RamSectionInfo, list: RamBlockInfo[]): Promise<void> {
    this.ramSection = info;
    const files = new Set([MANIFEST_FILE, DEVICE_STATE_FILE]);
    for (const b of list) {
      const file = ramblockFileName(b.name);
      if (files.has(file))
        throw new ProtocolError(
          'ERR_QEMU_BLOCKS',
          `ramblock "${b.name}" would be written to ${file}, which another file of the migration uses`,
        );
      if (file.length > MAX_FILE_NAME)
        throw new ProtocolError(
          'ERR_QEMU_BLOCKS',
          `ramblock "${b.name}" makes a file name of ${file.length} bytes, expected at most ${MAX_FILE_NAME}`,
        );
      files.add(file);
      const output = await this.createOutput(b.name, b.size, file);
      this.blocks.set(b.name, {
        name: b.name,
        size: b.size,
        file,
        output,
        epochs: new PageEpochs(b.name, b.size / PAGE_SIZE, this.epochBudget),
        digest: new BlockDigest(),
      });
    }
    this.deviceState = await this.createOutput('device state', 0, DEVICE_STATE_FILE);
    this.ready = true;
    this.log.info({ ramblocks: list }, `RAM section: ${list.length} ramblocks`);
    for (const ch of this.channels.values()) this.startReading(ch);
  }

  /** What the channel reader asks of a QEMU migration: the QEMU-tolerant profile, the method learned from the packets. */
  private channelHost(): ChannelHost {
    return (this.host ??= {
      pageSize: PAGE_SIZE,
      headerSize: packetHeaderSize(PAGE_SIZE),
      profile: 'qemu',
      methodFor: (flag, channel, packetNum) => this.methodFor(flag, channel, packetNum),
      check: {
        pageSize: PAGE_SIZE,
        pageCount: pageCount(PAGE_SIZE),
        // The method's fields are methodFor()'s.
        methodFlag: 0,
        exactPayload: true,
        maxPayload: (n) => largestPayload(n, PAGE_SIZE),
        lookupRamblock: (name) => this.blocks.get(name),
      },
      // The receiver's targets are unused: QemuPages places the pages.
      blocks: new Map(),
      zeroPageCrc: 0,
      inPlace: false,
      readTimeoutMs: this.timeoutMs,
      readPool: readPool(),
      onPages: () => {},
      onIdle: () => this.maybeFinish(),
      fail: (e) => this.fail(e),
    });
  }

  private host: ChannelHost | null = null;

  /** Hands a channel to the channel reader, once the block list is in: its native thread (or its paused socket) starts reading. */
  private startReading(ch: QemuChannel): void {
    if (this.settled || ch.reader) return;
    // The method is known from the first packet with normal pages, before its payload is decoded.
    const decoder: Decoder = {
      decode: (payload, normal, packetNum) => (ch.decoder ??= this.decoder(ch.id, this.method!)).decode(payload, normal, packetNum),
      done: (pages) => ch.decoder?.done?.(pages),
    };
    ch.reader = new DataChannel(ch.id, ch.native ?? ch.sock, ch.initial, decoder, ch.counters, this.channelHost(), ch.pages);
    if (!ch.native) ch.sock.resume();
  }

  /**
   * An output in the output directory, aborted by fail() with the others; one
   * that was being created while the migration failed is aborted here (fail()
   * did not see it), so no temporary file outlives a failure.
   */
  private async createOutput(name: string, size: number, file: string): Promise<Output> {
    const creating = Output.create(name, size, path.join(this.opts.outputDir, file), false);
    this.creating = creating;
    const output = await creating;
    this.creating = null;
    if (this.settled) {
      // fail() aborts it too (abort is idempotent) and reports only once both are done.
      await output.abort();
      throw new InterruptedError('the migration failed while its outputs were being created');
    }
    this.outputs.push(output);
    return output;
  }

  /** The block list is in and every output exists: pages can be placed. */
  ready = false;

  /** Writes page `i` of `b` unless it already holds data of a later epoch. */
  applyPage(b: Block, i: number, epoch: number, data: Uint8Array | null, fill: number): void {
    const prev = b.epochs.get(i);
    if (prev > epoch) {
      this.stalePages++;
      return;
    }
    const at = i * PAGE_SIZE;
    const what = `ramblock "${b.name}"`;
    if (prev >= 0) this.takeBack(b, i);
    const page = data ?? (fill !== 0 ? Buffer.alloc(PAGE_SIZE, fill) : null);
    if (page) b.output.writeSync(what, page, at, PAGE_SIZE);
    // A fresh output reads as zeros: only a page written before needs zeroing.
    else if (prev >= 0) b.output.writeSync(what, this.zeros, at, PAGE_SIZE);
    b.digest.add(i, page ? native.crc32c(page.subarray(0, PAGE_SIZE)) : this.zeroCrc);
    b.epochs.set(i, epoch);
  }

  /** Takes page `i` of `b`, written before and about to be rewritten, out of the block's digest (its bytes read back). */
  private takeBack(b: Block, i: number): void {
    const got = b.output.readSync(`ramblock "${b.name}"`, this.old, i * PAGE_SIZE);
    this.old.fill(0, got);
    b.digest.remove(i, native.crc32c(this.old));
  }

  /**
   * A multifd packet's pages (`data`: the normal ones, in offset order), each
   * applied as applyPage() would, with runs of adjacent normal pages written
   * in one call (QEMU sends a block's dirty pages in order, so a packet is
   * mostly one run).
   */
  applyPacket(b: Block, offsets: ArrayLike<number>, normal: number, pages: number, epoch: number, data: Uint8Array): void {
    const crc = this.crcs;
    if (normal > 0) native.analysePagesSync(data, PAGE_SIZE, normal, null, crc);
    let run = -1; // first page of the run not yet written
    const flush = (end: number): void => {
      if (run < 0) return;
      b.output.writeSync(`ramblock "${b.name}"`, data.subarray(run * PAGE_SIZE, end * PAGE_SIZE), offsets[run]!);
      for (let j = run; j < end; j++) {
        b.epochs.set(offsets[j]! / PAGE_SIZE, epoch);
        b.digest.add(offsets[j]! / PAGE_SIZE, crc[j]!);
      }
      run = -1;
    };
    for (let j = 0; j < normal; j++) {
      if (run >= 0 && offsets[j] !== offsets[j - 1]! + PAGE_SIZE) flush(j);
      // After that flush: a page the packet repeats holds the earlier copy by now.
      const prev = b.epochs.get(offsets[j]! / PAGE_SIZE);
      if (prev > epoch) {
        flush(j);
        this.stalePages++;
        continue;
      }
      // A page written before leaves the digest (read back) before its run rewrites it.
      if (prev >= 0) this.takeBack(b, offsets[j]! / PAGE_SIZE);
      if (run < 0) run = j;
    }
    flush(normal);
    for (let j = normal; j < pages; j++) this.applyPage(b, offsets[j]! / PAGE_SIZE, epoch, null, 0);
  }

  private writeDeviceState(chunk: Buffer): void {
    this.deviceState!.writeSync('the device state', chunk, null);
    this.deviceStateHash.update(chunk);
  }

  private onMultifd(sock: net.Socket, peer: string, q: ByteQueue): void {
    const raw = q.take(INIT_PACKET_SIZE, Buffer.alloc)!;
    const init = decodeInitPacket(raw);
    const where = `multifd channel from ${peer}`;
    try {
      if (init.version !== MULTIFD_VERSION)
        throw new ProtocolError('ERR_INIT_VERSION', `${where}: received packet version ${init.version}, expected ${MULTIFD_VERSION}`);
      if (this.uuid && Buffer.compare(Buffer.from(init.uuid), Buffer.from(this.uuid)) !== 0) {
        throw new ProtocolError(
          'ERR_INIT_UUID',
          `${where}: received uuid '${uuidToString(init.uuid)}', expected '${uuidToString(this.uuid)}' (the other channels')`,
        );
      }
      if (this.channels.has(init.id))
        throw new ProtocolError('ERR_INIT_DUPLICATE', `${where}: received id ${init.id}, which is already set up`);
      const expected = this.opts.channels;
      if (expected !== undefined && init.id >= expected)
        throw new ProtocolError(
          'ERR_INIT_CHANNEL_ID',
          `${where}: received channel id ${init.id}, expected less than ${expected} (--channels ${expected}, the source's multifd-channels)`,
        );
    } catch (e) {
      return this.fail(e);
    }
    this.uuid ??= init.uuid;
    this.mainTimer ??= setTimeout(() => {
      if (!this.main)
        this.fail(
          new ConnectionError(
            'ERR_QEMU_MAIN_MISSING',
            `multifd channels connected, but no main channel within ${this.timeoutMs} ms (a source connects it first)`,
          ),
        );
    }, this.timeoutMs);
    // A plain socket goes to a native reader now, in the handler that identified it (libuv reads no
    // further, so an end that follows stays for that reader); it starts reading once the block list is
    // in, as the socket (when it cannot be handed over) waits paused. The native reader keeps the timeout itself.
    const rest = q.take(q.length) ?? Buffer.alloc(0);
    const attached = NativeChannel.attach(sock, true);
    if (attached) sock.setTimeout(0);
    else sock.pause();
    const ch = new QemuChannel(init.id, sock, attached?.channel ?? null, Buffer.concat([rest, ...(attached?.buffered ?? [])]), this);
    ch.counters.wireBytes += INIT_PACKET_SIZE;
    this.channels.set(init.id, ch);
    this.log.debug({ channel: init.id, peer }, 'multifd channel connected');
    if (this.ready) this.startReading(ch);
  }

  /** The method of the first packet with pages decides; every later one must have it. */
  methodFor(flag: number, channel: number, packetNum: bigint): CompressionMethod {
    if (this.method) {
      if (this.method.flag !== flag) {
        throw new ProtocolError(
          'ERR_PACKET_METHOD',
          `flags received ${hex(flag)}, expected ${hex(this.method.flag)} (${this.method.name}, the method of earlier packets)`,
          { channel, packetNum },
        );
      }
      return this.method;
    }
    const m = methodByFlag(flag);
    if (!m || !m.qemuCompatible)
      throw new UnsupportedStreamError(`compression flags ${hex(flag)} name no QEMU method mfd knows`, 'ERR_PACKET_METHOD', {
        channel,
        packetNum,
      });
    this.method = m;
    this.log.info({ method: m.name }, `multifd compression ${m.name}`);
    return m;
  }

  decoder(channel: number, method: CompressionMethod): Decoder {
    return createDecoder({
      channel,
      method,
      pageSize: PAGE_SIZE,
      params: method.params({}),
      tally: this.tally,
      compute: null,
      receivers: this.receivers,
      fail: (e) => this.fail(e),
    });
  }

  maybeFinish(): void {
    if (this.settled || this.finishing || !this.summary) return;
    for (const ch of this.channels.values()) if (!ch.idle) return;
    // The main channel can end before a multifd channel is accepted or has said what it is (a small
    // migration sits whole in the socket buffers, read in any order), and a channel can carry no pages
    // at all, only its SYNCs: while one is owed, wait for it, up to --timeout; finish() then names
    // what never came.
    if (this.owed()) {
      this.lateTimer ??= setTimeout(() => {
        if (this.settled || this.finishing) return;
        this.finishing = true;
        this.finish(this.summary!).catch((e) => this.fail(e));
      }, this.timeoutMs);
      return;
    }
    if (this.lateTimer) clearTimeout(this.lateTimer);
    this.finishing = true;
    this.finish(this.summary).catch((e) => this.fail(e));
  }

  /**
   * Whether the migration still waits for a channel (every connected one has ended when this is asked):
   * pages missing, a channel id below the highest not connected, a connection not yet identified, fewer
   * channels than --channels.
   */
  private owed(): boolean {
    if ([...this.blocks.values()].some((b) => b.epochs.count !== b.size / PAGE_SIZE)) return true;
    if (this.unidentified > 0) return true;
    if (this.channels.size > 0 && Math.max(...this.channels.keys()) + 1 !== this.channels.size) return true;
    return this.opts.channels !== undefined && this.channels.size < this.opts.channels;
  }

  private async finish(s: MainSummary): Promise<void> {
    const ids = [...this.channels.keys()].sort((a, b) => a - b);
    ids.forEach((id, i) => {
      if (id !== i) throw new VerifyError('ERR_CHANNEL_MISSING', `multifd channels ${ids.join(', ')} connected: channel ${i} never did`);
    });
    const expected = this.opts.channels;
    if (expected !== undefined && ids.length < expected)
      throw new VerifyError(
        'ERR_CHANNEL_MISSING',
        `multifd channels ${ids.length > 0 ? ids.join(', ') : 'none'} connected, expected ${expected} (--channels): channel ${ids.length} never did`,
      );
    for (const ch of this.channels.values()) {
      if (ch.syncs !== s.syncPoints) {
        const per = s.syncMode === 'round' ? 'MULTIFD_FLUSH record' : 'RAM section';
        throw new VerifyError(
          'ERR_QEMU_SYNC_COUNT',
          `received ${ch.syncs} SYNC packets, expected ${s.syncPoints} (one per ${per} on the main channel)`,
          { channel: ch.id },
        );
      }
    }
    for (const b of this.blocks.values()) {
      const pages = b.size / PAGE_SIZE;
      if (b.epochs.count !== pages) {
        throw new VerifyError(
          'ERR_PAGES_MISSING',
          `ramblock "${b.name}": received ${b.epochs.count} of ${pages} pages (first missing at offset ${b.epochs.firstMissing() * PAGE_SIZE})`,
        );
      }
    }
    // The digests were kept as the files were written; the final names, then the manifest last: a
    // failure anywhere before leaves nothing that looks like a finished capture.
    const dir = this.opts.outputDir;
    const counters = [...this.channels.values()].sort((a, b) => a.id - b.id).map((c) => c.counters);
    const manifest: QemuManifest = {
      format: MANIFEST_FORMAT,
      version: 1,
      qemu: {
        version: null,
        versionNote: `QEMU does not send its version; machine type ${s.machine ?? '(none)'}, ${s.syncMode === 'round' ? 'multifd syncs per pass (QEMU 8.1 or later)' : 'multifd syncs per RAM section (QEMU 8.0 or earlier, or an 8.0 machine type)'}`,
        machineType: s.machine,
        fileVersion: s.fileVersion,
      },
      configuration: (this.configuration ?? Buffer.alloc(0)).toString('hex'),
      ramSection: this.ramSection!,
      syncMode: s.syncMode,
      switchoverStart: s.switchoverStart,
      capabilities: s.capabilities,
      ...(this.opts.from
        ? { file: { path: this.opts.from.path, offset: this.opts.from.offset, mappedRam: s.capabilities.includes(MAPPED_RAM) } }
        : {}),
      uuid: uuidToString(this.uuid ?? new Uint8Array(16)),
      pageSize: PAGE_SIZE,
      multifd: this.channels.size > 0,
      channels: this.channels.size,
      method: this.channels.size === 0 ? null : (this.method?.name ?? 'unknown: no multifd packet carried data'),
      ramblocks: [],
      deviceState: {
        file: DEVICE_STATE_FILE,
        size: s.deviceStateBytes,
        vmDescription: s.vmDescription,
        sha256: this.deviceStateHash.digest('hex'),
      },
      counts: {
        ramSections: s.ramSections,
        flushRecords: s.flushes,
        zeroRecords: s.zeroRecords,
        pageRecords: s.pageRecords,
        multifdPackets: counters.reduce((a, c) => a + c.packets, 0),
        syncPackets: counters.reduce((a, c) => a + c.syncPackets, 0),
        multifdNormalPages: counters.reduce((a, c) => a + c.normalPages, 0),
        multifdZeroPages: counters.reduce((a, c) => a + c.zeroPages, 0),
        stalePages: this.stalePages,
        wireBytes: counters.reduce((a, c) => a + c.wireBytes, 0) + (this.mainBytes ?? 0),
      },
    };
    // In the stream's order: the map was filled in it (names are unique, the parser refuses a repeat).
    for (const b of this.blocks.values()) manifest.ramblocks.push({ name: b.name, size: b.size, file: b.file, digest: b.digest.hex() });
    await Promise.all(this.outputs.map((o) => o.commit(this.opts.fsync ?? false)));
    if (this.settled) return;
    const manifestPath = path.join(dir, MANIFEST_FILE);
    writeManifest(manifestPath, manifest);
    this.settle();
    this.resolve({ manifest, manifestPath, totalTimeMs: Math.round(Number(process.hrtime.bigint() - this.startNs) / 1e5) / 10 });
  }

  private get mainBytes(): number | undefined {
    return this.main?.bytesRead;
  }

  fail(e: unknown): void {
    if (this.settled) return;
    const err = asMfdError(e);
    // At info: the command reports its failure once, as its last line.
    this.log.info({ code: err.code, channel: err.channel }, `migration failed: ${errorText(err)}`);
    this.settle();
    for (const s of this.sockets) s.destroy();
    // An output being created is not in `outputs` yet: abort it once it exists (createOutput does too).
    const creating = this.creating?.then((o) => o.abort());
    void Promise.allSettled([...this.outputs.map((o) => o.abort()), creating]).then(() => this.reject(err));
  }

  private settle(): void {
    this.settled = true;
    if (this.mainTimer) clearTimeout(this.mainTimer);
    if (this.lateTimer) clearTimeout(this.lateTimer);
    for (const r of this.receivers) r.cleanup();
    for (const s of this.sockets) s.destroy();
    this.file?.close();
    this.server.close();
  }
}

/**
 * One multifd channel from QEMU. Until the main channel's block list is in,
 * nothing reads it (nothing could be placed); then the receiver's channel
 * reader (DataChannel, QEMU-tolerant profile, on the socket's native thread)
 * reads it, and its pages are placed by epoch (QemuPages).
 */
class QemuChannel {
  readonly counters: ChannelCounters;
  readonly pages = new QemuPages(this);
  reader: DataChannel | null = null;
  decoder: Decoder | null = null;

  constructor(
    readonly id: number,
    readonly sock: net.Socket,
    /** The socket on its native thread; null when it has no plain fd (read as a stream then). */
    readonly native: NativeChannel | null,
    /** Bytes read after the init packet, before the reader started. */
    readonly initial: Buffer,
    readonly host: QemuMigration,
  ) {
    this.counters = newChannelCounters(id);
  }

  /** SYNC packets so far: the epoch of the next packet's pages. */
  get syncs(): number {
    return this.pages.syncs;
  }

  get idle(): boolean {
    return this.reader?.idle ?? false;
  }
}

/**
 * A QEMU channel's page placement: every page carries the number of SYNC
 * packets before it on its channel (its epoch), and is written unless its
 * page already holds data of a later epoch (QemuMigration.applyPacket).
 */
class QemuPages implements PagePlacer {
  syncs = 0;

  constructor(private readonly ch: QemuChannel) {}

  claim(h: PacketHeader): ((data: Uint8Array[]) => void) | null {
    const epoch = this.syncs;
    if (h.flags & MULTIFD_FLAG_SYNC) this.syncs++;
    const pages = h.normalPages + h.zeroPages;
    if (pages === 0) return null;
    const host = this.ch.host;
    const block = host.blocks.get(ramblockName(h))!;
    const offsets = h.offsets; // this header's own array
    const normal = h.normalPages;
    return (data) => host.applyPacket(block, offsets, normal, pages, epoch, data.length === 1 ? data[0]! : Buffer.concat(data));
  }
}
