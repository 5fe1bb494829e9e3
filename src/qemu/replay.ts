/**
 * `mfd send --qemu`: replays a migration saved by `mfd recv --qemu` into a QEMU
 * destination started with `-incoming` (same machine type and devices). The
 * main channel goes first (QEMU 7.2 takes the first connection as main): header
 * and configuration section as received, then the RAM section: START with the
 * same block list, one PART with every page (zero pages as ZERO records on the
 * main channel, the others in multifd packets, or as PAGE records on the main
 * channel without multifd), an empty END, each ended by a multifd sync; then the
 * saved device state verbatim. The pages go through the sender's pipeline
 * (src/sender/pipeline.ts: reads, zero-page scans and compression off the
 * event loop, each multifd channel's socket on its native thread, channels
 * in parallel). The destination's sync shape (per RAM section, or
 * per pass marked by MULTIFD_FLUSH) and whether it takes SWITCHOVER_START cannot
 * be read off the wire: the options or the manifest choose them (replayShape),
 * and a stall's hint names them. With `file`, the main channel goes to a QEMU migration file
 * instead (file-save.ts: QEMU's stream or mapped-ram layout, no multifd channels).
 */
import fs from 'node:fs';
import type net from 'node:net';
import {
  ConnectionError,
  InterruptedError,
  IoError,
  UsageError,
  asMfdError,
  type MfdError,
  type NativeIoError,
  nativeIoFailure,
} from '../errors.js';
import type { Logger } from '../log.js';
import { getMethod, type MethodChoice, type MethodName } from '../methods/index.js';
import { connect } from '../transport/connect.js';
import { NativeChannel } from '../transport/native-channel.js';
import { encodeInitPacket, uuidFromString } from '../wire/init-packet.js';
import { INIT_PACKET_SIZE } from '../wire/constants.js';
import { SendPipeline, type ChannelSink, type OutgoingPacket } from '../sender/pipeline.js';
import { nativeSink } from '../sender/sender.js';
import {
  MIG_CMD_SWITCHOVER_START,
  QEMU_VM_COMMAND,
  QEMU_VM_FILE_MAGIC,
  QEMU_VM_FILE_VERSION,
  QEMU_VM_SECTION_END,
  QEMU_VM_SECTION_FOOTER,
  QEMU_VM_SECTION_PART,
  QEMU_VM_SECTION_START,
  RAM_IDSTR,
  RAM_SAVE_FLAG_CONTINUE,
  RAM_SAVE_FLAG_EOS,
  RAM_SAVE_FLAG_MEM_SIZE,
  RAM_SAVE_FLAG_MULTIFD_FLUSH,
  RAM_SAVE_FLAG_PAGE,
  RAM_SAVE_FLAG_ZERO,
  Writer,
  type SyncMode,
} from './format.js';
import { checkDigest, readManifest, replayShape } from './manifest.js';
import { configurationWith } from './file.js';
import { QemuFileSink, type QemuFileOutput } from './file-save.js';
import path from 'node:path';

export interface QemuSendOptions<N extends MethodName = MethodName> extends MethodChoice<N> {
  host: string;
  port: number;
  /** The directory mfd recv --qemu wrote. */
  dir: string;
  /** The destination's multifd-channels; 0: the destination has multifd off. */
  channels: number;
  /** compression, methodParams: the destination's multifd-compression and its level. */
  connectTimeoutMs: number;
  /** How long the destination may stop reading, or take to close the main channel after the last byte (default 60 s). */
  stallTimeoutMs?: number;
  /** QEMU's multifd-flush-after-each-section of the destination (on: a sync per RAM section, as 7.2; off: per pass with MULTIFD_FLUSH); default from the manifest (replayShape). */
  flushAfterEachSection?: boolean;
  /** Zero pages in the multifd packets (multifd: a QEMU 9.0+ destination) or as ZERO records on the main channel (legacy); default from the manifest. */
  zeroPageDetection?: 'multifd' | 'legacy';
  /** Send MIG_CMD_SWITCHOVER_START (QEMU's send-switchover-start; a QEMU before 10.0 refuses it); default from the manifest. */
  switchoverStart?: boolean;
  logger: Logger;
  signal?: AbortSignal;
  /** Write a QEMU migration file instead (file-save.ts; host and port unused, channels 0). */
  file?: QemuFileOutput;
}

export interface QemuSendResult {
  totalTimeMs: number;
  channels: number;
  compression: string | null;
  machineType: string | null;
  ramblocks: { name: string; size: number }[];
  normalPages: number;
  zeroPages: number;
  multifdPackets: number;
  deviceStateBytes: number;
  wireBytes: number;
  /** The shape sent: sync per RAM section or per pass, switchover-start or not, and why. */
  syncMode: SyncMode;
  switchoverStart: boolean;
  /** Where the zero pages went: multifd packets (multifd) or ZERO records on the main channel (legacy). */
  zeroPageDetection: 'multifd' | 'legacy';
  shape: string;
}

/** Main-channel bytes gathered before a write. */
const FLUSH_AT = 1 << 20;

/** What to check when a QEMU destination stops reading or hangs up; `shape` says what was sent. */
const mismatchHint = (shape: string): string =>
  "is --channels the destination's multifd-channels (0 with multifd off), --compression its multifd-compression, and its machine and devices the source's? " +
  `The stream's sync shape cannot be read off the wire and may not be what the destination expects: sent ${shape}; ` +
  'a QEMU 8.1+ destination with an unversioned or 8.1+ machine type waits for --multifd-flush-after-each-section off, a QEMU 7.2 one needs on and --send-switchover-start off. ' +
  'Its query-migrate error-desc says what it refused';

/** Writes to one socket, waiting for 'drain' when the kernel buffer is full; the socket's failure rejects. */
class Sink {
  private failed: Error | null = null;
  closed = false;
  bytes = 0;
  constructor(
    readonly sock: net.Socket,
    private readonly what: string,
    private readonly stallMs: number,
    /** Set when the user interrupted: then that, not the closed socket, is the failure. */
    private readonly interrupted: () => InterruptedError | null,
    private readonly hint: string,
  ) {
    sock.on('error', (e) => (this.failed = e));
    sock.on('close', () => (this.closed = true));
  }

  private check(): void {
    const stop = this.interrupted();
    if (stop) throw stop;
    if (this.failed)
      throw new ConnectionError('ERR_QEMU_DESTINATION', `${this.what}: ${this.failed.message} (${this.hint})`, {}, this.failed);
    if (this.closed) throw new ConnectionError('ERR_QEMU_DESTINATION', `${this.what}: connection closed by the destination (${this.hint})`);
  }

  /** Resolves on `event` (or the socket's close); rejects after stallMs. */
  private wait(event: string, why: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.sock.off(event, done);
        this.sock.off('close', done);
        resolve();
      };
      const timer = setTimeout(() => {
        this.sock.off(event, done);
        this.sock.off('close', done);
        reject(new ConnectionError('ERR_QEMU_DESTINATION_STALLED', `${this.what}: ${why} for ${this.stallMs} ms (${this.hint})`));
      }, this.stallMs);
      this.sock.on(event, done);
      this.sock.on('close', done);
    });
  }

  async write(chunks: Uint8Array[]): Promise<void> {
    for (const c of chunks) {
      this.check();
      this.bytes += c.length;
      if (!this.sock.write(c)) await this.wait('drain', 'the destination has not read');
    }
    this.check();
  }

  /** Ends the stream, then waits for the destination to close the connection (QEMU closes its incoming main channel after loading). */
  async finish(): Promise<void> {
    this.sock.end();
    if (!this.closed) await this.wait('close', 'the whole stream was sent, but the destination has not closed the connection');
    // Closing is what the destination should do now; an error is not.
    const stop = this.interrupted();
    if (stop) throw stop;
    if (this.failed) this.check();
  }
}

export async function sendQemu<N extends MethodName>(o: QemuSendOptions<N>): Promise<QemuSendResult> {
  const t0 = process.hrtime.bigint();
  const m = await readManifest(o.dir, true);
  const shape = replayShape(m, o.flushAfterEachSection, o.switchoverStart, o.zeroPageDetection);
  // Zero pages in the packets only with multifd channels to carry them.
  const zerosInPackets = o.channels > 0 && shape.zeroPageDetection === 'multifd';
  const hint = mismatchHint(shape.why);
  const ps = m.pageSize;
  if (ps !== 4096) throw new UsageError(`${o.dir}: page size ${ps}; mfd replays 4 KiB target pages only`);
  if (o.file && o.channels !== 0)
    throw new UsageError('a QEMU migration file has no multifd channels (channels 0): multifd writes into mapped-ram regions');
  if (o.channels > 0 && !getMethod(o.compression).qemuCompatible)
    throw new UsageError(`--compression ${o.compression} is mfd's own; a QEMU destination cannot read it`);
  const log = o.logger;
  // The sender's pipeline reads, scans and compresses the pages (off the event loop; offloaded
  // methods on the compute pool), channels in parallel. Without multifd, one pipeline channel feeds
  // the main channel's PAGE records. Zero pages go as ZERO records on the main channel either way.
  const pipeline = await SendPipeline.open({
    images: m.ramblocks.map((b) => ({ name: b.name, path: path.join(o.dir, path.basename(b.file)) })),
    channels: Math.max(1, o.channels),
    pageSize: ps,
    compression: o.channels > 0 ? o.compression : 'none',
    methodParams: o.channels > 0 ? (o.methodParams ?? {}) : {},
    zeroPageDetection: 'multifd',
    zeroPagesInPackets: zerosInPackets,
    logger: log,
  });
  const sockets: net.Socket[] = [];
  const result: QemuSendResult = {
    totalTimeMs: 0,
    channels: o.channels,
    compression: o.channels > 0 ? pipeline.method.name : null,
    machineType: m.qemu.machineType,
    ramblocks: m.ramblocks.map((b) => ({ name: b.name, size: b.size })),
    normalPages: 0,
    zeroPages: 0,
    multifdPackets: 0,
    deviceStateBytes: m.deviceState.size,
    wireBytes: 0,
    syncMode: shape.syncMode,
    switchoverStart: shape.switchoverStart,
    zeroPageDetection: zerosInPackets ? 'multifd' : 'legacy',
    shape: shape.why,
  };
  let fileSink: QemuFileSink | null = null;
  let interrupted: InterruptedError | null = null;
  const stopped = (): InterruptedError | null => interrupted;
  const abort = (): void => {
    interrupted = new InterruptedError(String(o.signal?.reason ?? 'abort'));
    sockets.forEach((s) => s.destroy());
  };
  o.signal?.addEventListener('abort', abort, { once: true });
  // The first failure (an interruption wins over the hang-ups it causes); the pipeline stops on it.
  let failure: MfdError | null = null;
  const fail = (e: unknown): MfdError => (failure ??= interrupted ?? asMfdError(e));
  const failed = (): MfdError | null => interrupted ?? failure;
  // A connect in progress when the signal came: its socket is destroyed as soon as it is ours.
  const connected = (sock: net.Socket): net.Socket => {
    sockets.push(sock);
    if (interrupted) {
      sock.destroy();
      throw interrupted;
    }
    return sock;
  };
  /** Channel sinks that are native (their end() flushes and closes the thread and socket). */
  const closers: (() => Promise<void>)[] = [];
  try {
    for (const b of pipeline.blocks) {
      const want = m.ramblocks[b.index]!.size;
      if (b.source.size < want)
        throw new IoError('ERR_SHORT_READ', `ramblock "${b.source.name}": ${b.source.path} is shorter than ${want} bytes`);
      if (b.source.size > want)
        throw new IoError(
          'ERR_QEMU_RAMBLOCK_SIZE',
          `ramblock "${b.source.name}": ${b.source.path} has ${b.source.size} bytes, the manifest ${want}`,
        );
    }
    const where = o.file ? `file:${o.file.target.path}` : `${o.host}:${o.port}`;
    const stallMs = o.stallTimeoutMs ?? 60_000;
    const main: Pick<Sink, 'write' | 'finish' | 'bytes'> = o.file
      ? (fileSink = QemuFileSink.open(o.file, stopped))
      : new Sink(
          connected(await connect(o.host, o.port, o.connectTimeoutMs, 'QEMU main channel')),
          `main channel to ${where}`,
          stallMs,
          stopped,
          hint,
        );
    const mappedRam = o.file?.mappedRam ? fileSink : null;
    const w = new Writer();
    // The capabilities listed must be the destination's: mapped-ram for a mapped-ram file only.
    w.u32(QEMU_VM_FILE_MAGIC)
      .u32(QEMU_VM_FILE_VERSION)
      .bytes(await configurationWith(Buffer.from(m.configuration, 'hex'), mappedRam !== null));
    // The header is on its way before any multifd channel connects: QEMU 7.2 takes the first connection as main.
    await main.write([w.take()]);

    let current: string | null = null;
    /** Main-channel record header: the block name only when it changes (else CONTINUE). */
    const record = (name: string, offset: number, flag: number): void => {
      if (name === current) w.u64(offset + flag + RAM_SAVE_FLAG_CONTINUE);
      else {
        w.u64(offset + flag).str(name);
        current = name;
      }
    };
    /** A packet's zero pages (and, without multifd, its normal pages) as main-channel records. */
    const records = async (p: OutgoingPacket, pages: boolean): Promise<void> => {
      const name = p.block!.source.name;
      for (let j = p.normal; j < p.normal + p.zeros; j++) {
        record(name, p.offsets[j]!, RAM_SAVE_FLAG_ZERO);
        w.u8(0);
      }
      result.zeroPages += p.zeros;
      if (pages) {
        // The payload (method none): the normal pages, in runs of whole pages.
        let j = 0;
        for (const run of p.pieces.slice(1)) {
          for (let at = 0; at < run.length; at += ps) {
            record(name, p.offsets[j++]!, RAM_SAVE_FLAG_PAGE);
            w.bytes(run.subarray(at, at + ps));
          }
        }
        result.normalPages += p.normal;
      }
      if (w.length >= FLUSH_AT) await main.write([w.take()]);
    };
    const nativeFailed = (what: string) => (e: NativeIoError) =>
      fail(
        e.code === 'ESTALLED'
          ? new ConnectionError('ERR_QEMU_DESTINATION_STALLED', `${what}: the destination has not read for ${stallMs} ms (${hint})`)
          : nativeIoFailure(e, { code: 'ERR_QEMU_DESTINATION', subject: what, hint }),
      );

    const uuid = uuidFromString(m.uuid);
    if (o.channels === 0) {
      // Without multifd: the pages go as PAGE records on the main channel.
      await pipeline.addChannel(0, () => ({
        async write(p) {
          try {
            if (!p.sync) await records(p, true);
          } finally {
            p.done();
          }
        },
        end: async () => {},
      }));
    }
    // The multifd channels connect and set up side by side (the main channel's header went first).
    const multifdChannel = async (i: number): Promise<void> => {
      const what = `multifd channel ${i} to ${where}`;
      const s = connected(await connect(o.host, o.port, o.connectTimeoutMs, `QEMU multifd channel ${i}`));
      s.on('error', () => {});
      // The init packet is in the kernel before the native thread writes behind it.
      await new Promise<void>((resolve) => s.write(encodeInitPacket(uuid, i), () => resolve()));
      const attached = NativeChannel.attach(s, false);
      const fallback = attached ? null : new Sink(s, what, stallMs, stopped, hint);
      await pipeline.addChannel(i, (counters) => {
        counters.wireBytes += INIT_PACKET_SIZE;
        const out: ChannelSink = attached
          ? nativeSink(attached.channel, counters, what, stallMs, nativeFailed(what))
          : { write: (p) => fallback!.write(p.pieces).finally(() => p.done()), end: async () => void s.end() };
        closers.push(() => out.end());
        return {
          async write(p) {
            if (!p.sync) {
              if (zerosInPackets) result.zeroPages += p.zeros;
              else {
                await records(p, false).catch((e) => {
                  p.done();
                  throw e;
                });
                // A packet of zero pages only has gone whole to the main channel.
                if (p.normal === 0) return p.done();
              }
              result.normalPages += p.normal;
            }
            result.multifdPackets++;
            return out.write(p);
          },
          // The channel stays open for the next section's SYNC; closers end it.
          end: async () => {},
        };
      });
    };
    const setUps = Array.from({ length: o.channels }, (_, i) => multifdChannel(i));
    // All settle before a failure is thrown: no set-up is left running behind the cleanup.
    const failedSetUp = (await Promise.allSettled(setUps)).find((r) => r.status === 'rejected');
    if (failedSetUp) throw failedSetUp.reason;
    log.info(
      { channels: o.channels, method: result.compression, syncMode: shape.syncMode, switchoverStart: shape.switchoverStart },
      `replaying ${o.dir} into ${where}: ${shape.why}`,
    );

    const check = (): void => {
      const f = failed();
      if (f) throw f;
    };
    /** Ends a RAM section: a multifd sync (a SYNC packet on every channel, unless `synced`: run() sent them), MULTIFD_FLUSH per pass, EOS. */
    const endSection = async (synced = false): Promise<void> => {
      if (o.channels > 0) {
        if (!synced) await pipeline.sync();
        check();
        if (shape.syncMode === 'round') w.u64(RAM_SAVE_FLAG_MULTIFD_FLUSH);
      }
      w.u64(RAM_SAVE_FLAG_EOS).u8(QEMU_VM_SECTION_FOOTER).u32(m.ramSection.sectionId);
      await main.write([w.take()]);
    };

    // START: the block list.
    const total = m.ramblocks.reduce((a, b) => a + b.size, 0);
    w.u8(QEMU_VM_SECTION_START).u32(m.ramSection.sectionId).str(RAM_IDSTR).u32(m.ramSection.instance).u32(m.ramSection.version);
    w.u64(total + RAM_SAVE_FLAG_MEM_SIZE);
    for (const b of m.ramblocks) {
      w.str(b.name).u64(b.size);
      if (!mappedRam) continue;
      // mapped-ram: the block's header, bitmap and page region follow its entry; no page records.
      await main.write([w.take()]);
      const c = await mappedRam.block(o.dir, b, ps);
      checkDigest(o.dir, b, c.digest);
      result.normalPages += c.normal;
      result.zeroPages += c.zero;
    }
    await endSection();

    // PART: every page once, then run()'s SYNC on every channel.
    w.u8(QEMU_VM_SECTION_PART).u32(m.ramSection.sectionId);
    // mapped-ram: the pages went into the regions with the block list; else through the pipeline.
    if (!mappedRam) {
      await pipeline.run(fail, failed);
      check();
      // The pages sent must be the ones captured: else the destination never gets END (it fails).
      const sent = pipeline.digests();
      for (const b of m.ramblocks) checkDigest(o.dir, b, sent[b.name]!);
    }
    check();
    await endSection(true);

    // QEMU 10.0 sends SWITCHOVER_START right before the END section (no data, no answer).
    if (shape.switchoverStart) w.u8(QEMU_VM_COMMAND).u16(MIG_CMD_SWITCHOVER_START).u16(0);
    // END: nothing left to send.
    w.u8(QEMU_VM_SECTION_END).u32(m.ramSection.sectionId);
    await endSection();

    // The device state, EOF and VM description as received.
    const blob = path.join(o.dir, path.basename(m.deviceState.file));
    for await (const chunk of fs.createReadStream(blob, { highWaterMark: 1 << 20 })) await main.write([chunk as Buffer]);
    await Promise.all(closers.splice(0).map((end) => end()));
    check();
    await main.finish();
    result.wireBytes = main.bytes + pipeline.channels.reduce((a, c) => a + (o.channels > 0 ? c.counters.wireBytes : 0), 0);
    result.totalTimeMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e5) / 10;
    return result;
  } catch (e) {
    for (const s of sockets) s.destroy();
    fileSink?.close();
    throw interrupted ?? failure ?? e;
  } finally {
    await pipeline.close();
    o.signal?.removeEventListener('abort', abort);
  }
}
