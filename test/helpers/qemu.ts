/** QEMU processes for the QEMU-peer tests: launch with QMP, migrate, wait for a migration status. */
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import type { Test } from 'tap';
import { silentLogger } from '../../src/log.js';
import { receiveQemu, type QemuRecvOptions } from '../../src/qemu/recv.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { tmpdir } from './index.js';
import { start, which, sleep, type Proc } from '../../src/bench/proc.js';
import { enableMultifd, fileBackedRam, Qmp, QEMU, quitQemus, unthrottle, type MigrateInfo } from '../../src/qemu/qmp.js';

export const qemuMissing: string | false = which(QEMU) ? false : `${QEMU} is not installed (Debian: apt-get install qemu-system-x86)`;

export interface Vm {
  qmp: Qmp;
  proc: Proc;
  quit(): Promise<void>;
}

/** Starts a paused QEMU with `args` and a QMP socket in `dir`. */
export async function launch(dir: string, name: string, args: string[]): Promise<Vm> {
  const sock = path.join(dir, `${name}.qmp`);
  fs.rmSync(sock, { force: true });
  const proc = start(QEMU, ['-display', 'none', '-S', ...args, '-qmp', `unix:${sock},server=on,wait=off`]);
  const qmp = await Qmp.connect(sock, name, proc, new AbortController().signal);
  return { qmp, proc, quit: () => quitQemus([qmp], [proc]) };
}

/** `-M none` with its RAM on a memory-backend-file (the image). */
export function noneMachine(image: string, size: number): string[] {
  return fileBackedRam('none', image, size);
}

/** A q35 machine, nothing attached, TCG, its RAM ("mem") on a memory-backend-file. */
export function q35Machine(ramFile: string, size: number): string[] {
  return ['-accel', 'tcg', ...fileBackedRam('q35', ramFile, size)];
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
  /** receiveQemu options besides address, directory and logger. */
  recv?: Partial<QemuRecvOptions>;
}

/** receiveQemu on a free loopback port, quiet: its port once it listens, and its result. */
export async function listenQemu(o: Omit<QemuRecvOptions, 'host' | 'port' | 'logger' | 'onListening'>): Promise<{ port: number; result: ReturnType<typeof receiveQemu> }> {
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
  const chans: net.Socket[] = [];
  for (let i = 0; i < channels.length; i++) {
    const s = await open();
    s.write(encodeInitPacket(new Uint8Array(16), i));
    chans.push(s);
  }
  await finish(await open(), main);
  if (o.delayChannelsMs) await new Promise((r) => setTimeout(r, o.delayChannelsMs));
  await Promise.all(chans.map((s, i) => finish(s, channels[i]!)));
  return { result, out, port };
}
