/**
 * `mfd send --qemu`: replays a migration saved by `mfd recv --qemu` into a QEMU
 * destination started with `-incoming` (same machine type and devices). The
 * main channel goes first (QEMU 7.2 takes the first connection as main): header
 * and configuration section as received, then the RAM section: START with the
 * same block list, one PART with every page (zero pages as ZERO records on the
 * main channel, the others in multifd packets, or as PAGE records on the main
 * channel without multifd), an empty END, each ended by a multifd sync; then the
 * saved device state verbatim. The destination's sync shape (per RAM section, or
 * per pass marked by MULTIFD_FLUSH) and whether it takes SWITCHOVER_START cannot
 * be read off the wire: the options or the manifest choose them (replayShape),
 * and a stall's hint names them. With `file`, the main channel goes to a QEMU migration file
 * instead (file-save.ts: QEMU's stream or mapped-ram layout, no multifd channels).
 */
import fs from 'node:fs';
import type net from 'node:net';
import { ConnectionError, InterruptedError, IoError, UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { getMethod, type CompressionMethod, type MethodParams, type MethodSender } from '../methods/index.js';
import { PathTally } from '../accel/paths.js';
import { connect } from '../transport/connect.js';
import { encodeInitPacket, uuidFromString } from '../wire/init-packet.js';
import { encodePacketHeader } from '../wire/packet.js';
import { native } from '../native/load.js';
import { MULTIFD_FLAG_SYNC, packetHeaderSize, pageCount } from '../wire/constants.js';
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
import { readManifest, replayShape } from './manifest.js';
import { configurationWith } from './file.js';
import { QemuFileSink, type QemuFileOutput } from './file-save.js';
import path from 'node:path';

export interface QemuSendOptions {
  host: string;
  port: number;
  /** The directory mfd recv --qemu wrote. */
  dir: string;
  /** The destination's multifd-channels; 0: the destination has multifd off. */
  channels: number;
  /** The destination's multifd-compression. */
  compression: string;
  methodParams: MethodParams;
  connectTimeoutMs: number;
  /** How long the destination may stop reading, or take to close the main channel after the last byte (default 60 s). */
  stallTimeoutMs?: number;
  /** QEMU's multifd-flush-after-each-section of the destination (on: a sync per RAM section, as 7.2; off: per pass with MULTIFD_FLUSH); default from the manifest (replayShape). */
  flushAfterEachSection?: boolean;
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
  shape: string;
}

/** Main-channel bytes gathered before a write. */
const FLUSH_AT = 1 << 20;

/** What to check when a QEMU destination stops reading or hangs up; `shape` says what was sent. */
const mismatchHint = (shape: string): string =>
  "is --channels the destination's multifd-channels (0 with multifd off), --compression its multifd-compression, and its machine and devices the source's? " +
  `The stream's sync shape cannot be read off the wire and may not be what the destination expects: sent ${shape}; ` +
  'a QEMU 8.1+ destination with an unversioned or 8.1+ machine type waits for --multifd-flush-after-each-section off, a QEMU 7.2 one needs on and --send-switchover-start off. ' +
  "Its query-migrate error-desc says what it refused";

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
    if (this.failed) throw new ConnectionError('ERR_QEMU_DESTINATION', `${this.what}: ${this.failed.message} (${this.hint})`, {}, this.failed);
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

export async function sendQemu(o: QemuSendOptions): Promise<QemuSendResult> {
  const t0 = process.hrtime.bigint();
  const m = await readManifest(o.dir, true);
  const shape = replayShape(m, o.flushAfterEachSection, o.switchoverStart);
  const hint = mismatchHint(shape.why);
  const ps = m.pageSize;
  if (ps !== 4096) throw new UsageError(`${o.dir}: page size ${ps}; mfd replays 4 KiB target pages only`);
  if (o.file && o.channels !== 0) throw new UsageError('a QEMU migration file has no multifd channels (channels 0): multifd writes into mapped-ram regions');
  let method: CompressionMethod | null = null;
  let params: MethodParams = {};
  if (o.channels > 0) {
    method = getMethod(o.compression);
    if (!method.qemuCompatible) throw new UsageError(`--compression ${method.name} is mfd's own; a QEMU destination cannot read it`);
    params = method.params(o.methodParams);
  }
  const log = o.logger;
  const sockets: net.Socket[] = [];
  const senders: MethodSender[] = [];
  const result: QemuSendResult = {
    totalTimeMs: 0,
    channels: o.channels,
    compression: method?.name ?? null,
    machineType: m.qemu.machineType,
    ramblocks: m.ramblocks.map((b) => ({ name: b.name, size: b.size })),
    normalPages: 0,
    zeroPages: 0,
    multifdPackets: 0,
    deviceStateBytes: m.deviceState.size,
    wireBytes: 0,
    syncMode: shape.syncMode,
    switchoverStart: shape.switchoverStart,
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
  // A connect in progress when the signal came: its socket is destroyed as soon as it is ours.
  const connected = (sock: net.Socket): net.Socket => {
    sockets.push(sock);
    if (interrupted) {
      sock.destroy();
      throw interrupted;
    }
    return sock;
  };
  try {
    const where = o.file ? `file:${o.file.target.path}` : `${o.host}:${o.port}`;
    const stallMs = o.stallTimeoutMs ?? 60_000;
    const main: Pick<Sink, 'write' | 'finish' | 'bytes'> = o.file
      ? (fileSink = QemuFileSink.open(o.file, stopped))
      : new Sink(connected(await connect(o.host, o.port, o.connectTimeoutMs, 'QEMU main channel')), `main channel to ${where}`, stallMs, stopped, hint);
    const mappedRam = o.file?.mappedRam ? fileSink : null;
    const w = new Writer();
    // The capabilities listed must be the destination's: mapped-ram for a mapped-ram file only.
    w.u32(QEMU_VM_FILE_MAGIC).u32(QEMU_VM_FILE_VERSION).bytes(await configurationWith(Buffer.from(m.configuration, 'hex'), mappedRam !== null));
    // The header is on its way before any multifd channel connects: QEMU 7.2 takes the first connection as main.
    await main.write([w.take()]);
    const channels: Sink[] = [];
    const uuid = uuidFromString(m.uuid);
    const tally = new PathTally(`${method?.name ?? 'none'} compression`);
    for (let i = 0; i < o.channels; i++) {
      const s = connected(await connect(o.host, o.port, o.connectTimeoutMs, `QEMU multifd channel ${i}`));
      const sink = new Sink(s, `multifd channel ${i} to ${where}`, stallMs, stopped, hint);
      channels.push(sink);
      senders.push(method!.sendSetup({ channel: i, pageSize: ps, params, tally }));
      await sink.write([encodeInitPacket(uuid, i)]);
    }
    log.info({ channels: o.channels, method: method?.name, syncMode: shape.syncMode, switchoverStart: shape.switchoverStart }, `replaying ${o.dir} into ${where}: ${shape.why}`);

    const hs = packetHeaderSize(ps);
    const perPacket = pageCount(ps);
    let packetNum = 0n;
    const header = (flags: number, name: string, offsets: number[], normal: number, payloadBytes: number): Uint8Array =>
      encodePacketHeader(new Uint8Array(hs), hs, {
        flags,
        pagesAlloc: perPacket,
        normalPages: normal,
        zeroPages: 0,
        nextPacketSize: payloadBytes,
        packetNum: packetNum++,
        ramblock: Buffer.from(name, 'utf8'),
        offsets,
      });
    /** A multifd sync: a SYNC packet on every channel, then (per-pass mode) the MULTIFD_FLUSH record on the main channel. */
    const sync = async (): Promise<void> => {
      if (channels.length === 0) return;
      for (const c of channels) await c.write([header(MULTIFD_FLAG_SYNC, '', [], 0, 0)]);
      result.multifdPackets += channels.length;
      if (shape.syncMode === 'round') w.u64(RAM_SAVE_FLAG_MULTIFD_FLUSH);
    };
    const endSection = async (): Promise<void> => {
      await sync();
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
      result.normalPages += c.normal;
      result.zeroPages += c.zero;
    }
    await endSection();

    // PART: every page once.
    w.u8(QEMU_VM_SECTION_PART).u32(m.ramSection.sectionId);
    const isZero = new Uint8Array(perPacket);
    let current: string | null = null;
    let next = 0;
    /** Main-channel record header: the block name only when it changes (else CONTINUE). */
    const record = (name: string, offset: number, flag: number): void => {
      if (name === current) w.u64(offset + flag + RAM_SAVE_FLAG_CONTINUE);
      else {
        w.u64(offset + flag).str(name);
        current = name;
      }
    };
    for (const b of mappedRam ? [] : m.ramblocks) {
      const file = path.join(o.dir, path.basename(b.file));
      let fd: number;
      try {
        fd = fs.openSync(file, 'r');
      } catch (e) {
        throw new IoError(`ERR_${(e as NodeJS.ErrnoException).code ?? 'OPEN'}`, `ramblock "${b.name}": cannot open ${file}: ${(e as Error).message}`, e);
      }
      try {
        for (let at = 0; at < b.size; at += perPacket * ps) {
          const len = Math.min(perPacket * ps, b.size - at);
          // A fresh buffer per packet: the socket holds on to the pages until they are written.
          const buf = Buffer.allocUnsafe(len);
          if (fs.readSync(fd, buf, 0, len, at) !== len) throw new IoError('ERR_SHORT_READ', `ramblock "${b.name}": ${file} is shorter than ${b.size} bytes`);
          // One SIMD scan per packet; a partial last page (a block not made of whole pages) is never taken as zero.
          native.scanZeroPages(buf, ps, Math.floor(len / ps), isZero.fill(0));
          const pages: Uint8Array[] = [];
          const offsets: number[] = [];
          for (let p = 0; p < len; p += ps) {
            const page = buf.subarray(p, p + ps);
            if (isZero[p / ps]) {
              record(b.name, at + p, RAM_SAVE_FLAG_ZERO);
              w.u8(0);
              result.zeroPages++;
            } else if (channels.length === 0) {
              record(b.name, at + p, RAM_SAVE_FLAG_PAGE);
              w.bytes(page);
              result.normalPages++;
            } else {
              pages.push(page);
              offsets.push(at + p);
            }
          }
          if (w.length >= FLUSH_AT) await main.write([w.take()]);
          if (pages.length === 0) continue;
          const c = next++ % channels.length;
          const payload = await senders[c]!.prepare(pages, pages.length);
          const bytes = payload.reduce((a, p) => a + p.length, 0);
          await channels[c]!.write([header(method!.flag, b.name, offsets, pages.length, bytes), ...payload]);
          result.normalPages += pages.length;
          result.multifdPackets++;
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    await endSection();

    // QEMU 10.0 sends SWITCHOVER_START right before the END section (no data, no answer).
    if (shape.switchoverStart) w.u8(QEMU_VM_COMMAND).u16(MIG_CMD_SWITCHOVER_START).u16(0);
    // END: nothing left to send.
    w.u8(QEMU_VM_SECTION_END).u32(m.ramSection.sectionId);
    await endSection();

    // The device state, EOF and VM description as received.
    const blob = path.join(o.dir, path.basename(m.deviceState.file));
    for await (const chunk of fs.createReadStream(blob, { highWaterMark: 1 << 20 })) await main.write([chunk as Buffer]);
    for (const c of channels) c.sock.end();
    await main.finish();
    result.wireBytes = main.bytes + channels.reduce((a, c) => a + c.bytes, 0);
    result.totalTimeMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e5) / 10;
    return result;
  } catch (e) {
    for (const s of sockets) s.destroy();
    fileSink?.close();
    throw e;
  } finally {
    for (const s of senders) s.cleanup();
    o.signal?.removeEventListener('abort', abort);
  }
}
