/** QEMU processes for the QEMU-peer tests: launch with QMP, migrate, wait for a migration status. */
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import type { Test } from 'tap';
import { silentLogger } from '../../src/log.js';
import { receiveQemu, type QemuRecvOptions } from '../../src/qemu/recv.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { tmpdir } from './index.js';
import { start, which, sleep, type Proc } from '../../src/proc/proc.js';
import {
  enableMultifd,
  fileBackedRam,
  Qmp,
  QEMU,
  qemu10Binary,
  qemuVersion,
  quitQemus,
  unthrottle,
  type MigrateInfo,
} from '../../src/qemu/qmp.js';

/** A QEMU the tests run: the system's 7.2, or the 10.0 that .ci/fetch-qemu10 fetched. */
export interface QemuBuild {
  /** The series the tests expect of it: "7.2" or "10.0". */
  series: string;
  /** What to run (a name on PATH or a path). */
  binary: string;
  /** "7.2.22", as it says; null when it cannot be run. */
  version: string | null;
  /** Why the tests of this build skip here, or false. */
  missing: string | false;
}

function build(series: string, binary: string, absent: string | null): QemuBuild {
  if (absent) return { series, binary, version: null, missing: absent };
  const version = qemuVersion(binary);
  if (version === null) return { series, binary, version, missing: `${binary} does not run (no version from --version)` };
  if (!version.startsWith(`${series}.`)) return { series, binary, version, missing: `${binary} is QEMU ${version}, not ${series}` };
  return { series, binary, version, missing: false };
}

/** Where .ci/fetch-qemu10 puts QEMU 10.0's wrapper by default (MFD_QEMU10 names another). */
const qemu10 = qemu10Binary();

/** Debian 12's QEMU 7.2 (the system's) and QEMU 10.0 from bookworm-backports (fetched by .ci/fetch-qemu10). */
export const QEMU72 = build('7.2', QEMU, which(QEMU) ? null : `${QEMU} is not installed (Debian: apt-get install qemu-system-x86)`);
export const QEMU10 = build(
  '10.0',
  qemu10,
  fs.existsSync(qemu10)
    ? null
    : `QEMU 10.0 is not at ${qemu10}: run .ci/fetch-qemu10 (Debian's bookworm-backports build), or set MFD_QEMU10`,
);
export const QEMU_BUILDS: QemuBuild[] = [QEMU72, QEMU10];

/** The system QEMU's absence, for tests that need any QEMU. */
export const qemuMissing: string | false = QEMU72.missing && QEMU10.missing ? `${QEMU72.missing}; ${QEMU10.missing}` : false;
/** A build that runs here (7.2 first), for tests that need one QEMU of either series. */
export const anyQemu: QemuBuild = QEMU72.missing ? QEMU10 : QEMU72;

export interface Vm {
  qmp: Qmp;
  proc: Proc;
  quit(): Promise<void>;
}

/** Starts a paused QEMU (`build`, default the system's) with `args` and a QMP socket in `dir`. */
export async function launch(dir: string, name: string, args: string[], build: QemuBuild = anyQemu): Promise<Vm> {
  const sock = path.join(dir, `${name}.qmp`);
  fs.rmSync(sock, { force: true });
  const proc = start(build.binary, ['-display', 'none', '-S', ...args, '-qmp', `unix:${sock},server=on,wait=off`]);
  const qmp = await Qmp.connect(sock, name, proc, new AbortController().signal);
  return { qmp, proc, quit: () => quitQemus([qmp], [proc]) };
}

/** `-M none` with its RAM on a memory-backend-file (the image). */
export function noneMachine(image: string, size: number): string[] {
  return fileBackedRam('none', image, size);
}

/** A q35 machine (or `machine`, e.g. the versioned pc-q35-7.2), nothing attached, TCG, its RAM ("mem") on a memory-backend-file. */
export function q35Machine(ramFile: string, size: number, machine = 'q35'): string[] {
  return ['-accel', 'tcg', ...fileBackedRam(machine, ramFile, size)];
}

export interface MigrationSetup {
  /** multifd-channels; 0 = multifd off. */
  channels: number;
  compression?: string;
}

export async function setMigration(q: Qmp, s: MigrationSetup): Promise<void> {
  if (s.channels === 0) return;
  await enableMultifd(q, { 'multifd-channels': s.channels, 'multifd-compression': s.compression ?? 'none' });
}

/** A destination started with `-incoming defer` set up as `s` and listening on a free loopback port: that port. */
export async function listenIncoming(q: Qmp, s: MigrationSetup): Promise<number> {
  await setMigration(q, s);
  await q.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
  const info = await q.cmd<{ 'socket-address'?: { port?: string }[] }>('query-migrate');
  return Number(info['socket-address']?.[0]?.port);
}

/** Polls query-migrate until `want` (or failed, or the time is up); returns the last status. */
export async function waitMigration(q: Qmp, want: string, timeoutMs = 30_000): Promise<MigrateInfo> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await q.cmd<MigrateInfo>('query-migrate');
    if (s.status === want || s.status === 'failed' || Date.now() > end) return s;
    await sleep(20);
  }
}

/** Starts the migration to tcp:127.0.0.1:port, bandwidth unthrottled. */
export async function migrateTo(q: Qmp, port: number): Promise<void> {
  await unthrottle(q);
  await q.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
}

export interface StreamsOptions {
  /** Wait this long after the main channel before the multifd channels' data. */
  delayChannelsMs?: number;
  /** Connect the multifd channels only after the main channel has been sent whole (and the delay). */
  channelsLate?: boolean;
  /** These channels (by id) only after the main channel has been sent whole (and the delay); the others first. */
  lateIds?: number[];
  /** These channels (by id) never connect. */
  missingIds?: number[];
  /** receiveQemu options besides address, directory and logger. */
  recv?: Partial<QemuRecvOptions>;
}

/** receiveQemu on a free loopback port, quiet: its port once it listens, and its result. */
export async function listenQemu(
  o: Omit<QemuRecvOptions, 'host' | 'port' | 'logger' | 'onListening'>,
): Promise<{ port: number; result: ReturnType<typeof receiveQemu> }> {
  let result!: ReturnType<typeof receiveQemu>;
  const port = await new Promise<number>((resolve) => {
    result = receiveQemu({ host: '127.0.0.1', port: 0, logger: silentLogger, ...o, onListening: (a: AddressInfo) => resolve(a.port) });
  });
  return { port, result };
}

/**
 * A receiveQemu on a free port fed hand-built streams: the multifd channels connect first (as
 * QEMU's do, before any page) with their init packets, the main channel is sent whole, then the
 * channels' bytes. Resolves once everything is written; `result` is the receiver's.
 */
export async function receiveStreams(t: Test, main: Buffer, channels: Buffer[] = [], o: StreamsOptions = {}) {
  const out = tmpdir(t);
  // A receiver still waiting for a source when the test ends is stopped.
  const stop = new AbortController();
  t.teardown(() => stop.abort('test ended'));
  const { port, result } = await listenQemu({ outputDir: out, timeoutMs: 5000, signal: stop.signal, ...o.recv });
  result.catch(() => {});
  const open = (): Promise<net.Socket> =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(s));
      s.on('error', () => {});
    });
  const finish = (s: net.Socket, b: Buffer): Promise<void> => new Promise((resolve) => s.end(b, () => resolve()));
  const chans: [net.Socket, Buffer][] = [];
  const late = (i: number): boolean => o.channelsLate === true || (o.lateIds ?? []).includes(i);
  const connectChannels = async (lateOnes: boolean): Promise<void> => {
    for (let i = 0; i < channels.length; i++) {
      if (late(i) !== lateOnes || (o.missingIds ?? []).includes(i)) continue;
      const s = await open();
      s.write(encodeInitPacket(new Uint8Array(16), i));
      chans.push([s, channels[i]!]);
    }
  };
  await connectChannels(false);
  await finish(await open(), main);
  if (o.delayChannelsMs) await new Promise((r) => setTimeout(r, o.delayChannelsMs));
  await connectChannels(true);
  await Promise.all(chans.map(([s, b]) => finish(s, b)));
  return { result, out, port };
}
