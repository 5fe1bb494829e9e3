/**
 * Where a migration goes and where one comes from, as one typed value each, in QEMU's
 * words (`migrate URI`, `migrate-incoming URI`): a TCP address or a file, with an mfd
 * or a QEMU at the other end. Each kind carries the options only it takes; the
 * caller builds the value once (the CLI from --to / --listen / --from and --qemu,
 * src/cli/destination.ts) and hands it to migrate() or migrateIncoming(), the one
 * place that picks the path:
 *
 *   kind        send (migrate)                        recv (migrateIncoming)
 *   tcp         an mfd recv (sender/sender.ts)        an mfd send (receiver/receiver.ts)
 *   file        a migration file (file/save.ts)       a migration file (file/restore.ts)
 *   qemu        a QEMU -incoming (qemu/replay.ts)     a QEMU's migrate tcp: (qemu/recv.ts)
 *   qemu-file   a QEMU migration file (qemu/replay)   a file QEMU's migrate file: wrote (qemu/recv.ts)
 *
 * Delta transfer (src/delta/) is wired in here, through the extension each
 * path defines (SendExtension, SaveExtension, RecvExtension, RestoreExtension):
 * the data paths never import it.
 */
import { UsageError } from '../errors.js';
import { deltaRestore, deltaSave, type FileBasesOptions, type FileDeltaOptions } from '../delta/at-rest.js';
import { deltaReceiver, type DeltaRecvOptions } from '../delta/receiver.js';
import { deltaSender } from '../delta/sender.js';
import { restoreFromFile, type RestoredFile } from '../file/restore.js';
import { saveToFile, type FileSummary, type SaveOptions } from '../file/save.js';
import { parseBlockSpecs } from '../image/ramblock.js';
import type { MethodName } from '../methods/index.js';
import { receiveQemu, type QemuRecvOptions, type QemuRecvResult } from '../qemu/recv.js';
import { sendQemu, type QemuSendOptions, type QemuSendResult } from '../qemu/replay.js';
import { receive, type RecvOptions } from '../receiver/receiver.js';
import type { PipelineOptions } from '../sender/pipeline.js';
import { send } from '../sender/sender.js';
import type { RunStats } from '../stats/stats.js';
import type { ChannelSecurity } from '../transport/security.js';

/** A TCP address (QEMU's tcp:HOST:PORT). */
export interface TcpAddress {
  host: string;
  port: number;
}

/** A place in a file where a migration starts (QEMU's file:PATH,offset=N); the bytes before it are never written. */
export interface FileAddress {
  path: string;
  offset: number;
}

/** How a replay shapes the stream for a QEMU (each absent: from the machine type's version, else as the source did). */
export type QemuShape = Pick<QemuSendOptions, 'flushAfterEachSection' | 'zeroPageDetection' | 'switchoverStart'>;

/** Where `migrate` sends. */
export type SendDestination =
  /** A listening mfd recv. */
  | ({ kind: 'tcp' } & TcpAddress & {
        connectTimeoutMs?: number;
        /** A receiver that takes no bytes, or does not answer, for this long fails the migration (default 60 s). */
        timeoutMs?: number;
        /** Continue a failed migration from the pages the receiver has durably written. */
        resume?: boolean;
        /** Ask the receiver for the pages it holds (src/delta/). */
        delta?: boolean;
        security?: ChannelSecurity;
      })
  /** A self-describing migration file (docs/file-format.md). */
  | ({ kind: 'file' } & FileAddress & {
        mappedRam?: boolean;
        directIo?: boolean;
        writer?: SaveOptions['writer'];
        /** A delta file: references to these bases and to pages earlier in it. */
        delta?: FileDeltaOptions;
      })
  /** A QEMU destination started with -incoming tcp:HOST:PORT: a replay of what mfd recv --qemu saved. */
  | ({ kind: 'qemu' } & TcpAddress & { connectTimeoutMs?: number; stallTimeoutMs?: number; shape?: QemuShape })
  /** A QEMU migration file, for migrate-incoming file:PATH. */
  | ({ kind: 'qemu-file' } & FileAddress & { mappedRam?: boolean; shape?: QemuShape });

/** What a migration sends, to any destination; `compression` and `methodParams` are typed from the method registry. */
export interface MigrateOptions<N extends MethodName = MethodName> extends Omit<PipelineOptions<N>, 'images' | 'zeroPagesInPackets'> {
  /**
   * The images, PATH or NAME=PATH each (ramblock name = file name); to a QEMU destination, the
   * one directory mfd recv --qemu wrote (the pipeline's options other than channels and
   * method are then unused: a replay sends the saved pages as the source did).
   */
  images: string[];
  signal?: AbortSignal;
}

export type MigrateResult =
  | { kind: 'tcp'; stats: RunStats; /** The receiver's own statistics, from its verdict. */ receiver: Record<string, unknown> }
  | { kind: 'file'; stats: RunStats; file: FileSummary }
  | { kind: 'qemu' | 'qemu-file'; qemu: QemuSendResult };

/** Where `migrateIncoming` receives from. */
export type RecvSource =
  /** An mfd send, on this listening address (port 0: a free one, told through onListening). */
  | ({ kind: 'tcp' } & TcpAddress & {
        /** A connected channel that sends nothing for this long fails the migration (default 60 s). */
        timeoutMs?: number;
        /** Keep a progress journal, so a failed migration can resume (default true). */
        journal?: boolean;
        /** After a failure, keep listening this long for the next sender. */
        resumeWaitMs?: number;
        /** Also save each channel's raw bytes to DIR/channel-N.bin. */
        dumpStreams?: string;
        /** Bases offered to a sender with delta. */
        delta?: DeltaRecvOptions;
        security?: ChannelSecurity;
      })
  /** A migration file mfd send wrote. */
  | ({ kind: 'file' } & FileAddress & { /** Where a delta file's bases are. */ bases?: FileBasesOptions })
  /** A QEMU source's migrate tcp:HOST:PORT, on this listening address. */
  | ({ kind: 'qemu' } & TcpAddress & { timeoutMs?: number; channels?: number })
  /** A file QEMU's migrate file:PATH[,offset=N] wrote, with or without mapped-ram. */
  | ({ kind: 'qemu-file' } & FileAddress);

/** Where the ramblocks go, from any source. */
export type IncomingOptions = Pick<
  RecvOptions,
  'outputDir' | 'outputMap' | 'inPlace' | 'fsync' | 'threads' | 'requireHardware' | 'logger' | 'onListening' | 'onProgress' | 'signal'
>;

export type IncomingResult =
  | { kind: 'tcp'; stats: RunStats }
  | { kind: 'file'; stats: RunStats; file: RestoredFile }
  | { kind: 'qemu' | 'qemu-file'; qemu: QemuRecvResult };

/** The one directory a replay into QEMU sends from. */
export function qemuDir(images: string[]): string {
  if (images.length !== 1)
    throw new UsageError(`--qemu takes one directory (written by mfd recv --qemu), received ${images.length} arguments`);
  return images[0]!;
}

/** The one directory a migration from QEMU writes every ramblock into (no NAME=PATH). */
export function qemuOutputDir(o: Pick<IncomingOptions, 'outputDir' | 'outputMap'>): string {
  if (o.outputDir === undefined || (o.outputMap?.size ?? 0) > 0)
    throw new UsageError('--qemu writes every ramblock into one directory: give --output DIR (no NAME=PATH)');
  return o.outputDir;
}

/** Sends one migration to `dest`. */
export async function migrate<N extends MethodName>(dest: SendDestination, o: MigrateOptions<N>): Promise<MigrateResult> {
  const { images, ...rest } = o;
  switch (dest.kind) {
    case 'tcp': {
      const { kind, delta, ...to } = dest;
      const r = await send({ ...rest, ...to, images: parseBlockSpecs(images), ...(delta ? { extension: deltaSender() } : {}) });
      return { kind, ...r };
    }
    case 'file': {
      const { kind, path, offset, delta, ...to } = dest;
      const r = await saveToFile({
        ...rest,
        ...to,
        target: { path, offset },
        images: parseBlockSpecs(images),
        ...(delta ? { extension: deltaSave(delta) } : {}),
      });
      return { kind, ...r };
    }
    case 'qemu':
    case 'qemu-file': {
      const file =
        dest.kind === 'qemu-file' ? { target: { path: dest.path, offset: dest.offset }, mappedRam: dest.mappedRam ?? false } : null;
      const qemu = await sendQemu({
        host: dest.kind === 'qemu' ? dest.host : '',
        port: dest.kind === 'qemu' ? dest.port : 0,
        ...(file ? { file } : {}),
        dir: qemuDir(images),
        channels: file ? 0 : o.channels,
        compression: o.compression,
        methodParams: o.methodParams,
        connectTimeoutMs: dest.kind === 'qemu' ? (dest.connectTimeoutMs ?? 10_000) : 0,
        ...(dest.kind === 'qemu' && dest.stallTimeoutMs !== undefined ? { stallTimeoutMs: dest.stallTimeoutMs } : {}),
        ...dest.shape,
        logger: o.logger,
        ...(o.signal ? { signal: o.signal } : {}),
      });
      return { kind: dest.kind, qemu };
    }
  }
}

/** Receives one migration from `src`. */
export async function migrateIncoming(src: RecvSource, o: IncomingOptions): Promise<IncomingResult> {
  switch (src.kind) {
    case 'tcp': {
      const { kind, delta, ...from } = src;
      return { kind, ...(await receive({ ...o, ...from, ...(delta ? { extension: deltaReceiver(delta) } : {}) })) };
    }
    case 'file': {
      const { kind, path, offset, bases } = src;
      const { onListening: _, ...rest } = o;
      const extension = deltaRestore(bases ?? { bases: [], dirs: [] });
      return { kind, ...(await restoreFromFile({ ...rest, source: { path, offset }, extension })) };
    }
    case 'qemu':
    case 'qemu-file': {
      const opts: QemuRecvOptions = {
        host: src.kind === 'qemu' ? src.host : '',
        port: src.kind === 'qemu' ? src.port : 0,
        outputDir: qemuOutputDir(o),
        fsync: o.fsync ?? false,
        ...(src.kind === 'qemu' && src.timeoutMs !== undefined ? { timeoutMs: src.timeoutMs } : {}),
        ...(src.kind === 'qemu' && src.channels !== undefined ? { channels: src.channels } : {}),
        logger: o.logger,
        ...(o.onListening ? { onListening: o.onListening } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
        ...(src.kind === 'qemu-file' ? { from: { path: src.path, offset: src.offset } } : {}),
      };
      return { kind: src.kind, qemu: await receiveQemu(opts) };
    }
  }
}
