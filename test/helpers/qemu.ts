/** QEMU processes for the QEMU-peer tests: launch with QMP, migrate, wait for a migration status. */
import fs from 'node:fs';
import path from 'node:path';
import { start, which, sleep, type Proc } from '../../src/bench/proc.js';
import { Qmp, QEMU, quitQemus } from '../../src/qemu/qmp.js';

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
  return ['-nodefaults', '-machine', 'none,memory-backend=mem', '-m', `${size}B`, '-object', `memory-backend-file,id=mem,size=${size},mem-path=${image},share=on`];
}

/** A q35 machine, nothing attached, TCG, its RAM ("mem") on a memory-backend-file. */
export function q35Machine(ramFile: string, size: number): string[] {
  return ['-nodefaults', '-accel', 'tcg', '-machine', 'q35,memory-backend=mem', '-m', `${size}B`, '-object', `memory-backend-file,id=mem,size=${size},mem-path=${ramFile},share=on`];
}

export interface MigrationSetup {
  /** multifd-channels; 0 = multifd off. */
  channels: number;
  compression?: string;
}

export async function setMigration(q: Qmp, s: MigrationSetup): Promise<void> {
  if (s.channels === 0) return;
  await q.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
  await q.cmd('migrate-set-parameters', { 'multifd-channels': s.channels, 'multifd-compression': s.compression ?? 'none' });
}

interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
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
  await q.cmd('migrate-set-parameters', { 'max-bandwidth': 1e12 });
  await q.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
}
