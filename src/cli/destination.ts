/**
 * The one parser of migration destinations and sources, in QEMU's URI words:
 * `tcp:HOST:PORT` (or the bare `HOST:PORT`) and `file:PATH[,offset=N]`, with
 * --qemu for a QEMU at the other end. `mfd send --to` takes either; `mfd recv`
 * listens on a TCP address (--listen) or reads a file (--from). Each is parsed
 * once, with the flags that belong to its kind, into the typed value that
 * migrate() / migrateIncoming() take (src/migrate/); a flag that does not apply
 * to the kind is refused here, by name. runSend() / runRecv() make the one call
 * and print its result.
 */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { isFileUri, parseFileUri } from '../file/target.js';
import { formatFileSummary } from '../file/summary.js';
import { splitNamedSpec } from '../image/ramblock.js';
import type { Logger } from '../log.js';
import { MAX_CHANNELS } from '../control/protocol.js';
import { requireDelta } from '../delta/fingerprint.js';
import type { DeltaRecvOptions } from '../delta/receiver.js';
import {
  migrate,
  migrateIncoming,
  qemuDir,
  qemuOutputDir,
  type IncomingOptions,
  type MigrateOptions,
  type QemuShape,
  type RecvSource,
  type SendDestination,
} from '../migrate/migrate.js';
import { formatQemuRecv, formatQemuSend, refuseWithQemu } from '../qemu/cli.js';
import { parseHostPort } from '../transport/connect.js';
import { checkListenSecurity, isLoopback, loadSecurity } from '../transport/security.js';
import type { CommandContext } from './context.js';
import { qemuRecvJson, qemuSendJson } from './json.js';
import { refuseSecurityOptions, SECURITY_FLAGS, type CommonOpts, type SecurityOpts } from './options.js';
import path from 'node:path';

const TCP_PREFIX = 'tcp:';

const tcp = (spec: string, defaultHost: string): { host: string; port: number } | null =>
  parseHostPort(spec.startsWith(TCP_PREFIX) ? spec.slice(TCP_PREFIX.length) : spec, defaultHost);

/** `tcp:HOST:PORT` or `HOST:PORT` (`[v6]:PORT`, `:PORT` = defaultHost); `flag` names the option in errors. */
export function parseTcpAddress(spec: string, flag: string, defaultHost: string): { host: string; port: number } {
  const at = tcp(spec, defaultHost);
  if (!at) throw new UsageError(`Expected HOST:PORT or tcp:HOST:PORT for ${flag} but received "${spec}"`);
  return at;
}

/** A network address (`tcp:HOST:PORT`, `HOST:PORT`) or a migration file (`file:PATH[,offset=N]`). */
export function parseAddress(
  spec: string,
  flag: string,
  defaultHost: string,
): { kind: 'tcp'; host: string; port: number } | { kind: 'file'; path: string; offset: number } {
  if (isFileUri(spec)) return { kind: 'file', ...parseFileUri(spec, flag) };
  const at = tcp(spec, defaultHost);
  if (!at) throw new UsageError(`Expected HOST:PORT, tcp:HOST:PORT or file:PATH for ${flag} but received "${spec}"`);
  return { kind: 'tcp', ...at };
}

/** The flags of `mfd send` that say where the migration goes and how it gets there. */
export interface SendDestinationOpts extends SecurityOpts {
  to: string;
  qemu?: boolean;
  channels: number;
  zeroPageDetection: string;
  connectTimeout: number;
  timeout: number;
  resume?: boolean;
  delta?: boolean;
  base?: string[];
  mappedRam?: boolean;
  directIo?: boolean;
  fileWriter: 'ring' | 'per-packet';
  multifdFlushAfterEachSection?: boolean;
  sendSwitchoverStart?: boolean;
}

/** The flags a replay into QEMU refuses (it sends the saved pages as QEMU 7.2 would), by commander key. */
const NOT_WITH_QEMU_SEND = {
  maxBandwidth: '--max-bandwidth',
  delta: '--delta',
  base: '--base',
  directIo: '--direct-io',
  fileWriter: '--file-writer',
  accelPath: '--accel-path',
  requireHardware: '--require-hardware',
  pageSize: '--page-size',
  threads: '--threads',
};

/** `--to` with --qemu and the flags of its kind: a QEMU destination (tcp:) or a QEMU migration file (file:). */
function qemuDestination(cmd: Command, o: SendDestinationOpts, images: string[]): SendDestination {
  const to = parseAddress(o.to, '--to', '127.0.0.1');
  refuseWithQemu(
    cmd,
    NOT_WITH_QEMU_SEND,
    'a replay into QEMU sends the saved pages as QEMU 7.2 would (zero pages as ZERO records, 4 KiB pages)',
  );
  refuseWithQemu(cmd, SECURITY_FLAGS, "QEMU's migration channels do not speak mfd's authentication");
  qemuDir(images);
  const given = (key: string): boolean => cmd.getOptionValueSource(key) === 'cli';
  if (to.kind === 'file') {
    // QEMU's file: migration: multifd needs mapped-ram, mapped-ram refuses compression; the file does not depend on multifd-channels.
    if (given('compression'))
      throw new UsageError(
        '--compression cannot be used with --qemu --to file: QEMU writes no compressed pages to a file (mapped-ram refuses multifd compression)',
      );
    if (given('channels') && o.channels > 0 && !o.mappedRam)
      throw new UsageError(
        '--qemu --to file: without --mapped-ram is one stream: QEMU takes multifd over file: only with mapped-ram (give --mapped-ram, or --channels 0)',
      );
  } else {
    if (o.mappedRam) throw new UsageError('--mapped-ram is for a file: --qemu --to file:PATH --mapped-ram');
    if (!given('channels'))
      throw new UsageError("--qemu needs --channels N: the destination's multifd-channels, or 0 when its multifd capability is off");
  }
  const zpd = given('zeroPageDetection') ? o.zeroPageDetection : undefined;
  if (zpd !== undefined && zpd !== 'multifd' && zpd !== 'legacy')
    throw new UsageError(
      `--zero-page-detection ${zpd} cannot be used with --qemu: a replay sends zero pages in the multifd packets (multifd) or as ZERO records on the main channel (legacy)`,
    );
  const shape: QemuShape = {
    ...(o.multifdFlushAfterEachSection === undefined ? {} : { flushAfterEachSection: o.multifdFlushAfterEachSection }),
    ...(o.sendSwitchoverStart === undefined ? {} : { switchoverStart: o.sendSwitchoverStart }),
    ...(zpd === undefined ? {} : { zeroPageDetection: zpd }),
  };
  return to.kind === 'file'
    ? { kind: 'qemu-file', path: to.path, offset: to.offset, mappedRam: o.mappedRam ?? false, shape }
    : { kind: 'qemu', host: to.host, port: to.port, connectTimeoutMs: o.connectTimeout, stallTimeoutMs: o.timeout, shape };
}

/** `mfd send --to` and the flags of its kind, as the destination migrate() takes; a flag that does not apply is refused. */
export function sendDestination(cmd: Command, o: SendDestinationOpts, images: string[], logger: Logger): SendDestination {
  if (o.qemu) return qemuDestination(cmd, o, images);
  const to = parseAddress(o.to, '--to', '127.0.0.1');
  if (o.multifdFlushAfterEachSection !== undefined)
    throw new UsageError('--multifd-flush-after-each-section is for --qemu: it shapes the stream for a QEMU destination');
  if (o.sendSwitchoverStart !== undefined)
    throw new UsageError('--send-switchover-start is for --qemu: it shapes the stream for a QEMU destination');
  if (o.zeroPageDetection === 'legacy')
    throw new UsageError('--zero-page-detection legacy is for --qemu: zero pages as ZERO records on the main channel of a QEMU stream');
  if (o.channels === 0)
    throw new UsageError(`Expected an integer in 1..${MAX_CHANNELS} for --channels but received "0" (0, multifd off, is only for --qemu)`);
  if (o.base && to.kind !== 'file')
    throw new UsageError(
      '--base is for a delta migration file (--to file:PATH); over the network the receiver names its bases (mfd recv --base)',
    );
  if (o.delta || o.base) {
    if (o.resume) throw new UsageError('--delta and --resume cannot be combined: resume a failed delta migration without --delta');
    requireDelta(o.base ? '--base' : '--delta');
  }
  if (to.kind === 'file') {
    if (o.resume) throw new UsageError('--resume is for a network migration (--to HOST:PORT)');
    refuseSecurityOptions(o, 'a migration file (--to file:PATH) is written locally');
    const bases = (o.base ?? []).map((spec) => splitNamedSpec(spec) ?? { name: path.basename(spec), path: spec });
    return {
      ...to,
      mappedRam: o.mappedRam ?? false,
      directIo: o.directIo ?? false,
      writer: o.fileWriter === 'per-packet' ? 'per-packet' : {},
      ...(o.delta || o.base ? { delta: { bases } } : {}),
    };
  }
  if (o.mappedRam || o.directIo)
    throw new UsageError(`--${o.mappedRam ? 'mapped-ram' : 'direct-io'} is for saving to a file: --to file:PATH`);
  const security = loadSecurity(o, (m) => logger.warn(m));
  if (security.mode === 'none' && !isLoopback(to.host))
    logger.warn(
      `sending to ${to.host} without authentication: the pages cross the network in the clear and the receiver is not verified (--tls-* or --psk-file)`,
    );
  return {
    ...to,
    connectTimeoutMs: o.connectTimeout,
    timeoutMs: o.timeout,
    resume: o.resume ?? false,
    delta: o.delta ?? false,
    security,
  };
}

/** Sends to `dest` (a progress line on the way where there are pages to count) and prints the result. */
export async function runSend(
  ctx: CommandContext,
  o: CommonOpts,
  dest: SendDestination,
  run: Omit<MigrateOptions, 'signal' | 'onProgress'>,
): Promise<void> {
  const progress = dest.kind === 'tcp' || dest.kind === 'file' ? ctx.progress(dest.kind === 'file' ? 'save' : 'send', o.progress) : null;
  const r = await migrate(dest, { ...run, ...(progress ? { onProgress: (d, t) => progress.update(d, t) } : {}), signal: ctx.signal });
  progress?.clear();
  switch (r.kind) {
    case 'tcp':
      return ctx.result(o, r.stats, { receiver: r.receiver });
    case 'file':
      ctx.result(o, r.stats, { file: r.file });
      if (!o.json) ctx.out(formatFileSummary(r.file));
      return;
    default: {
      const file = dest.kind === 'qemu-file' ? { path: dest.path, mappedRam: dest.mappedRam ?? false } : undefined;
      ctx.out(o.json ? JSON.stringify(qemuSendJson(r.qemu)) : formatQemuSend(r.qemu, file));
    }
  }
}

/** The flags of `mfd recv` that say where the migration comes from and how. */
export interface RecvSourceOpts extends SecurityOpts {
  listen?: string;
  from?: string;
  qemu?: boolean;
  insecure?: boolean;
  inPlace?: boolean;
  timeout: number;
  journal: boolean;
  resumeWait: number;
  dumpStreams?: string;
  delta?: boolean;
  /** With --qemu: the source's multifd-channels. */
  channels?: number;
}

/** Where the ramblocks go (--output), as recv parsed it. */
export type Outputs = Pick<IncomingOptions, 'outputDir' | 'outputMap'>;

/**
 * `mfd recv --listen` or `--from`, --qemu and the flags of its kind, as the source migrateIncoming()
 * takes; `delta` is what --delta, --base and --base-dir offer. A flag that does not apply is refused.
 */
export function recvSource(cmd: Command, o: RecvSourceOpts, outputs: Outputs, delta: DeltaRecvOptions | null, logger: Logger): RecvSource {
  if ((o.listen === undefined) === (o.from === undefined))
    throw new UsageError('give one of --listen HOST:PORT (a network migration) or --from file:PATH (a migration file)');
  if (delta && o.qemu)
    throw new UsageError('--delta, --base and --base-dir are for a migration from mfd send --delta (or a delta file), not with --qemu');
  if (delta && o.inPlace && o.from !== undefined)
    throw new UsageError(
      '--base and --base-dir restore a delta migration file into temporary outputs, not with --in-place (its bases must never be written while they are read); --delta --in-place is for a network migration',
    );
  if (o.delta && o.from !== undefined)
    throw new UsageError(
      '--delta is for a network migration: a delta migration file names its bases itself; say where they are with --base NAME=PATH or --base-dir DIR',
    );
  if (o.channels !== undefined && (!o.qemu || o.from !== undefined))
    throw new UsageError(
      o.qemu
        ? '--channels is for a network migration from QEMU (--listen): its multifd channels over file: are positions in the file'
        : '--channels is for --qemu: mfd send announces its channel count on the control channel',
    );
  if (o.qemu) {
    refuseWithQemu(
      cmd,
      { inPlace: '--in-place', threads: '--threads', dumpStreams: '--dump-streams', requireHardware: '--require-hardware' },
      'a QEMU migration is received into a fresh --output DIR',
    );
    refuseWithQemu(cmd, SECURITY_FLAGS, "QEMU's migration channels do not speak mfd's authentication");
    qemuOutputDir(outputs);
    // A file QEMU wrote with migrate file:PATH[,offset=N], with or without mapped-ram.
    if (o.from !== undefined) return { kind: 'qemu-file', ...parseFileUri(o.from, '--from') };
    const at = parseTcpAddress(o.listen!, '--listen', '0.0.0.0');
    if (!isLoopback(at.host) && !o.insecure)
      throw new UsageError(
        `refusing to listen on ${at.host} for a QEMU source without --insecure: a QEMU migration carries no authentication, so anyone who reaches the port could write files. ` +
          'Listen where only the source can reach (loopback, a private network) and give --insecure',
      );
    return { kind: 'qemu', ...at, timeoutMs: o.timeout, ...(o.channels !== undefined ? { channels: o.channels } : {}) };
  }
  if (o.from !== undefined) {
    if (o.dumpStreams !== undefined)
      throw new UsageError('--dump-streams is for network migrations; inspect a migration file with mfd inspect');
    refuseSecurityOptions(o, 'a migration file (--from file:PATH) is read locally');
    return { kind: 'file', ...parseFileUri(o.from, '--from'), ...(delta ? { bases: delta } : {}) };
  }
  const at = parseTcpAddress(o.listen!, '--listen', '0.0.0.0');
  const security = loadSecurity(o, (m) => logger.warn(m));
  checkListenSecurity(at.host, security, o.insecure ?? false);
  return {
    kind: 'tcp',
    ...at,
    timeoutMs: o.timeout,
    journal: o.journal,
    resumeWaitMs: o.resumeWait,
    ...(o.dumpStreams !== undefined ? { dumpStreams: o.dumpStreams } : {}),
    ...(delta ? { delta } : {}),
    security,
  };
}

/** Receives from `src` (a progress line on the way where there are pages to count) and prints the result. */
export async function runRecv(
  ctx: CommandContext,
  o: CommonOpts,
  src: RecvSource,
  run: Omit<IncomingOptions, 'signal' | 'onProgress' | 'onListening'>,
): Promise<void> {
  const progress = src.kind === 'tcp' || src.kind === 'file' ? ctx.progress(src.kind === 'file' ? 'restore' : 'recv', o.progress) : null;
  const r = await migrateIncoming(src, {
    ...run,
    onListening: (a) => ctx.listening(a.address, a.port),
    ...(progress ? { onProgress: (d, t) => progress.update(d, t) } : {}),
    signal: ctx.signal,
  });
  progress?.clear();
  switch (r.kind) {
    case 'tcp':
      return ctx.result(o, r.stats);
    case 'file':
      ctx.result(o, r.stats, { file: r.file });
      if (!o.json) ctx.out(formatFileSummary(r.file));
      return;
    default:
      ctx.out(o.json ? JSON.stringify(qemuRecvJson(r.qemu)) : formatQemuRecv(r.qemu));
  }
}
