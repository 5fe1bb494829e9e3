/**
 * The sender path: control hello -> N data channels (init packet, then RAM
 * packets) -> SYNC on every channel -> completion with digests -> verdict.
 *
 * Per channel, packets flow load (mapped image) -> analyse (zero pages + CRCs,
 * off the event loop) -> method.prepare -> write, with up to PIPELINE_DEPTH
 * packets prepared ahead of the one being written; a fixed slab pool bounds
 * memory. Offloaded methods do load, analyse and prepare on the channel's
 * compute worker; the event loop only writes.
 */
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { ConnectionError, IoError, MfdError, RemoteError, asMfdError, InterruptedError, ProtocolError, UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { getMethod, listMethods, type CompressionMethod, type MethodParams, type MethodSender } from '../methods/index.js';
import { getDetector, listDetectors, type ZeroPageDetector, type ZeroPageScanner } from '../zero-page/index.js';
import { PathTally } from '../accel/paths.js';
import { BlockDigest } from '../digest.js';
import { CONTROL_VERSION, DIGEST_ALGORITHM, encodePreamble, type ControlMessage, type Hello } from '../control/protocol.js';
import { ControlChannel } from '../transport/control-channel.js';
import { connect, endSocket, PEER_REASON_GRACE_MS } from '../transport/connect.js';
import { encodeInitPacket, uuidFromString } from '../wire/init-packet.js';
import { encodePacketHeader } from '../wire/packet.js';
import { INIT_PACKET_SIZE, MULTIFD_FLAG_SYNC, MULTIFD_PACKET_SIZE, packetHeaderSize, pageCount } from '../wire/constants.js';
import type { BlockSpec } from '../image/ramblock.js';
import { ImageSource } from './image-source.js';
import { SlabPool, type Slab } from './slab-pool.js';
import { pageRuns } from './page-runs.js';
import { ComputePool, defaultPoolSize } from '../compute/pool.js';
import type { PacketReply } from '../compute/messages.js';
import { buildStats, newChannelCounters, type ChannelCounters, type RunStats } from '../stats.js';

/** Packets read ahead of the one being written, per channel. */
const PIPELINE_DEPTH = 2;

export interface SendOptions {
  host: string;
  port: number;
  images: BlockSpec[];
  channels: number;
  pageSize: number;
  compression: string;
  methodParams: MethodParams;
  zeroPageDetection: string;
  /** Accelerator devices (QEMU's accel-path), e.g. dsa:/dev/dsa/wq0.0. */
  accelPaths?: string[];
  /** Any fallback from a hardware path is an error (--require-hardware). */
  requireHardware?: boolean;
  logger: Logger;
  /** Compute worker threads for offloaded methods (default: min(channels, cores)). */
  threads?: number;
  connectTimeoutMs?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  signal?: AbortSignal;
}

export interface SendResult {
  stats: RunStats;
  /** The receiver's own statistics, from its verdict. */
  receiver: Record<string, unknown>;
}

interface Job {
  block: Block;
  /** Byte offset of the packet's first page in the block. */
  offset: number;
  pages: number;
}

interface Block {
  source: ImageSource;
  nameBytes: Uint8Array;
  digest: BlockDigest;
}

interface DataChannel {
  id: number;
  socket: Socket;
  /** The method's state when it runs inline; offloaded methods keep theirs in the channel's worker. */
  method: MethodSender | null;
  /** The zero-page scanner when it runs inline (else in the worker). */
  scanner: ZeroPageScanner | null;
  methodTally: PathTally;
  zeroTally: PathTally;
  counters: ChannelCounters;
  pool: SlabPool;
}

export async function send(opts: SendOptions): Promise<SendResult> {
  const startNs = process.hrtime.bigint();
  const log = opts.logger;
  const method = getMethod(opts.compression);
  const detector = getDetector(opts.zeroPageDetection);
  const params = method.params(opts.methodParams);
  const accelPaths = opts.accelPaths ?? [];
  const requireHardware = opts.requireHardware ?? false;
  if (requireHardware && !method.hardware && !detector.hardware) {
    const hw = [...listMethods().filter((m) => getMethod(m).hardware).map((m) => `--compression ${m}`), ...listDetectors().filter((d) => getDetector(d).hardware).map((d) => `--zero-page-detection ${d}`)];
    throw new UsageError(`--require-hardware needs a backend that uses hardware: ${hw.join(', ')}`);
  }
  if (accelPaths.length > 0 && !detector.hardware) throw new UsageError(`--accel-path is for a hardware zero-page backend (${listDetectors().filter((d) => getDetector(d).hardware).join(', ')}), not --zero-page-detection ${detector.name}`);
  // Which path each backend takes, decided (and refused under --require-hardware) before anything connects.
  const compressionPath = method.path({ params, requireHardware });
  const zeroPagePath = detector.check({ accelPaths, requireHardware });
  const uuid = randomUUID();
  const timeout = opts.connectTimeoutMs ?? 10_000;
  const sources: ImageSource[] = [];
  const sockets: Socket[] = [];
  const compute = method.offload ? new ComputePool(opts.threads ?? defaultPoolSize(opts.channels)) : null;
  const channels: DataChannel[] = [];
  let control: ControlChannel | null = null;
  let failure: MfdError | null = null;

  // First failure wins; everything else is torn down around it.
  const fail = (e: unknown): MfdError => {
    if (!failure) {
      failure = asMfdError(e);
      control?.send({ type: 'error', code: failure.code, message: failure.message });
      for (const s of sockets) s.destroy();
    }
    return failure;
  };
  // A dropped data channel is often the receiver hanging up after telling us
  // why on the control channel; give that reason a moment to arrive and win.
  const failSoon = (e: MfdError): void => {
    setTimeout(() => fail(e), PEER_REASON_GRACE_MS).unref();
  };
  const onAbort = (): void => {
    fail(new InterruptedError(String(opts.signal?.reason ?? 'abort')));
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    for (const spec of opts.images) sources.push(await ImageSource.open(spec));
    const totalBytes = sources.reduce((a, s) => a + s.size, 0);

    const ctlSock = await connect(opts.host, opts.port, timeout, 'control channel');
    sockets.push(ctlSock);
    control = new ControlChannel(ctlSock, `${opts.host}:${opts.port}`);
    const hello: Hello = {
      type: 'hello',
      version: CONTROL_VERSION,
      uuid,
      channels: opts.channels,
      pageSize: opts.pageSize,
      packetSize: MULTIFD_PACKET_SIZE,
      compression: method.name,
      methodParams: params,
      zeroPageDetection: detector.name,
      digest: DIGEST_ALGORITHM,
      ramblocks: sources.map((s) => ({ name: s.name, size: s.size })),
    };
    ctlSock.write(encodePreamble());
    control.send(hello);
    expectType(await control.next(), 'ready');
    log.info({ uuid, channels: opts.channels, compression: method.name }, 'receiver ready');
    // From here on, a message from the receiver outside next() is a failure report.
    control.onUnsolicited = (m) => fail(remoteOrUnexpected(m, 'while sending pages'));

    const uuidBytes = uuidFromString(uuid);
    const headerSize = packetHeaderSize(opts.pageSize);
    for (let id = 0; id < opts.channels; id++) {
      const socket = await connect(opts.host, opts.port, timeout, `channel ${id}`);
      sockets.push(socket);
      socket.on('error', (e) => failSoon(new ConnectionError('ERR_CHANNEL_CONNECTION', e.message, { channel: id }, e)));
      socket.on('close', () => {
        if (!socket.writableFinished) failSoon(new ConnectionError('ERR_CHANNEL_CLOSED', 'connection closed by the receiver', { channel: id }));
      });
      socket.write(encodeInitPacket(uuidBytes, id));
      const counters = newChannelCounters(id);
      counters.wireBytes += INIT_PACKET_SIZE;
      const methodTally = new PathTally(`${method.name} compression`, requireHardware);
      const zeroTally = new PathTally(`${detector.name} zero-page detection`, requireHardware);
      if (compute) {
        await compute.call(id, { op: 'send-setup', channel: id, method: method.name, pageSize: opts.pageSize, params, detector: detector.name, accelPaths, requireHardware });
      }
      channels.push({
        id,
        socket,
        method: compute ? null : method.sendSetup({ channel: id, pageSize: opts.pageSize, params, tally: methodTally }),
        scanner: compute ? null : detector.open({ channel: id, accelPaths, requireHardware, tally: zeroTally }),
        methodTally,
        zeroTally,
        counters,
        pool: new SlabPool(PIPELINE_DEPTH + 2, MULTIFD_PACKET_SIZE, headerSize, pageCount(opts.pageSize)),
      });
    }

    const blocks: Block[] = sources.map((s) => ({ source: s, nameBytes: Buffer.from(s.name, 'utf8'), digest: new BlockDigest() }));
    const jobs = makeJobs(blocks, opts.pageSize);
    const state: SendState = { packetNum: 0n, doneBytes: 0, totalBytes, failed: () => failure };
    const logged = new Set<string>();
    const logFailures = (): void => {
      for (const f of detector.failures()) if (!logged.has(f) && logged.add(f)) log.warn(f);
    };
    const ctx: PacketContext = { method, detector, compute, pageSize: opts.pageSize, headerSize, state, onProgress: opts.onProgress, logFailures };

    await Promise.all(channels.map((ch) => runChannel(ch, jobs, ctx).catch((e) => { throw fail(e); })));
    if (failure) throw failure;

    const complete: ControlMessage = {
      type: 'complete',
      packets: channels.map((c) => c.counters.packets),
      digests: Object.fromEntries(blocks.map((b) => [b.source.name, b.digest.hex()])),
    };
    control.onUnsolicited = null;
    control.send(complete);
    const verdict = await control.next();
    if (verdict.type !== 'verdict') throw remoteOrUnexpected(verdict, 'waiting for the verdict');
    control.close();
    const stats = buildStats(
      {
        side: 'send',
        uuid,
        compression: method.name,
        compressionPath,
        zeroPageDetection: detector.name,
        zeroPagePath,
        paths: { compression: mergeTallies(channels.map((c) => c.methodTally)), zeroPage: mergeTallies(channels.map((c) => c.zeroTally)) },
        pageSize: opts.pageSize,
        ramblocks: blocks.map((b) => ({ name: b.source.name, size: b.source.size, path: b.source.path, digest: b.digest.hex() })),
      },
      channels.map((c) => c.counters),
      startNs,
    );
    return { stats, receiver: verdict.stats };
  } catch (e) {
    throw fail(e);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    for (const ch of channels) ch.method?.cleanup();
    await compute?.close();
    for (const s of sources) s.close();
    for (const s of sockets) if (failure) s.destroy();
  }
}

function mergeTallies(tallies: PathTally[]): PathTally['counts'] {
  const all = new PathTally('all channels');
  for (const t of tallies) all.merge(t.counts);
  return all.counts;
}

function expectType(m: ControlMessage, type: ControlMessage['type']): void {
  if (m.type !== type) throw remoteOrUnexpected(m, `waiting for ${type}`);
}

function remoteOrUnexpected(m: ControlMessage, when: string): MfdError {
  if (m.type === 'error') return new RemoteError('receiver', m.code, m.message);
  return new ProtocolError('ERR_CONTROL_UNEXPECTED', `control channel: received "${m.type}" ${when}`);
}

/** All packets of all blocks, in block and offset order, handed out one at a time. */
function makeJobs(blocks: Block[], pageSize: number): Iterator<Job> {
  const perPacket = pageCount(pageSize);
  return (function* () {
    for (const block of blocks) {
      const size = block.source.size;
      for (let offset = 0; offset < size; offset += MULTIFD_PACKET_SIZE) {
        yield { block, offset, pages: Math.min(perPacket, Math.ceil((size - offset) / pageSize)) };
      }
    }
  })();
}

interface SendState {
  packetNum: bigint;
  doneBytes: number;
  totalBytes: number;
  failed: () => MfdError | null;
}

interface PacketContext {
  method: CompressionMethod;
  detector: ZeroPageDetector;
  compute: ComputePool | null;
  pageSize: number;
  headerSize: number;
  state: SendState;
  onProgress: ((done: number, total: number) => void) | undefined;
  /** Logs each device failure once. */
  logFailures: () => void;
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
}

/** Inline: map or read the pages, analyse them off the event loop; the method runs at write time. */
async function prepareInline(ch: DataChannel, job: Job, slab: Slab, ctx: PacketContext): Promise<Prepared> {
  const src = job.block.source;
  const { pages, release } = await src.load(job.offset, job.pages, ctx.pageSize, slab.data);
  let zeros: number;
  try {
    zeros = await ch.scanner!.analyse(pages, ctx.pageSize, job.pages, slab.zero, slab.crc);
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
    payload: () => (normal > 0 ? ch.method!.prepare(pageRuns(pages, slab.zero, job.pages, ctx.pageSize), normal) : []),
    release,
  };
}

/** Offloaded: the channel's worker loads, analyses and compresses; the payload comes back transferred. */
async function prepareOffloaded(ch: DataChannel, job: Job, slab: Slab, ctx: PacketContext): Promise<Prepared> {
  const src = job.block.source;
  let r: PacketReply;
  try {
    r = await ctx.compute!.call<PacketReply>(ch.id, { op: 'packet', channel: ch.id, fd: src.fd, path: src.path, size: src.size, offset: job.offset, pages: job.pages });
  } catch (e) {
    throw shrankOr(e, src, job.offset + job.pages * ctx.pageSize);
  }
  ch.methodTally.merge(r.paths.compression);
  ch.zeroTally.merge(r.paths.zeroPage);
  return { job, slab, zeros: r.zeros, zero: r.zero, crc: r.crc, payload: () => r.payload, release: () => {} };
}

function shrankOr(e: unknown, src: ImageSource, end: number): unknown {
  // PacketIoError here; the worker's copy of it across the thread hop keeps the code.
  if ((e as { code?: string }).code === 'ESHORTREAD') {
    return new IoError('ERR_IMAGE_SHRANK', `image "${src.path}" shrank while sending: bytes before ${Math.min(end, src.size)} are gone, expected ${src.size} bytes`);
  }
  return e;
}

async function runChannel(ch: DataChannel, jobs: Iterator<Job>, ctx: PacketContext): Promise<void> {
  const ahead: Promise<Prepared>[] = [];
  const prepare = ctx.compute ? prepareOffloaded : prepareInline;
  let exhausted = false;
  for (;;) {
    while (!exhausted && ahead.length < PIPELINE_DEPTH) {
      const next = jobs.next();
      if (next.done) {
        exhausted = true;
        break;
      }
      const slab = await ch.pool.acquire();
      const p = prepare(ch, next.value, slab, ctx);
      p.catch(() => {}); // awaited below; avoid an unhandled rejection meanwhile
      ahead.push(p);
    }
    const p = ahead.shift();
    if (!p) break;
    const prepared = await p;
    if (ctx.state.failed()) return;
    await writePacket(ch, prepared, ctx);
  }
  await writeSync(ch, ctx);
  await endSocket(ch.socket);
}

async function writePacket(ch: DataChannel, { job, slab, zeros, zero, crc, payload, release }: Prepared, ctx: PacketContext): Promise<void> {
  const { pageSize } = ctx;
  const normal = job.pages - zeros;
  const offsets = new Array<number>(job.pages);
  const pageIndex0 = job.offset / pageSize;
  let n = 0;
  let z = normal;
  for (let i = 0; i < job.pages; i++) {
    job.block.digest.add(pageIndex0 + i, crc[i]!);
    offsets[zero[i] ? z++ : n++] = job.offset + i * pageSize;
  }
  const chunks = await payload();
  let size = 0;
  for (const c of chunks) size += c.length;
  encodePacketHeader(slab.header, ctx.headerSize, {
    flags: ctx.method.flag,
    pagesAlloc: pageCount(pageSize),
    normalPages: normal,
    zeroPages: zeros,
    nextPacketSize: size,
    packetNum: ctx.state.packetNum++,
    ramblock: job.block.nameBytes,
    offsets,
  });
  ctx.logFailures();
  const c = ch.counters;
  c.packets++;
  c.normalPages += normal;
  c.zeroPages += zeros;
  c.wireBytes += ctx.headerSize + size;
  ctx.state.doneBytes += Math.min(job.pages * pageSize, job.block.source.size - job.offset);
  ctx.onProgress?.(ctx.state.doneBytes, ctx.state.totalBytes);
  await write(ch, [slab.header, ...chunks], () => {
    release();
    ch.pool.release(slab);
  });
}

/** SYNC at the end of the pass: header only, pages_alloc 0 (QEMU 9.2+ layout). */
async function writeSync(ch: DataChannel, ctx: PacketContext): Promise<void> {
  const slab = await ch.pool.acquire();
  encodePacketHeader(slab.header, ctx.headerSize, {
    flags: MULTIFD_FLAG_SYNC,
    pagesAlloc: 0,
    normalPages: 0,
    zeroPages: 0,
    nextPacketSize: 0,
    packetNum: ctx.state.packetNum++,
    ramblock: new Uint8Array(0),
    offsets: [],
  });
  ch.counters.packets++;
  ch.counters.syncPackets++;
  ch.counters.wireBytes += ctx.headerSize;
  await write(ch, [slab.header], () => ch.pool.release(slab));
}

/**
 * Writes the pieces as one corked batch (one writev). `done` runs once the
 * bytes have left our buffers; the promise resolves when the socket can take
 * more (backpressure).
 */
function write(ch: DataChannel, pieces: Uint8Array[], done: () => void): Promise<void> {
  const s = ch.socket;
  s.cork();
  for (let i = 0; i < pieces.length - 1; i++) s.write(pieces[i]!);
  s.write(pieces[pieces.length - 1]!, () => done());
  s.uncork();
  if (!s.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const ok = (): void => {
      s.off('close', ok);
      s.off('drain', ok);
      resolve();
    };
    s.once('drain', ok);
    s.once('close', ok);
  });
}
