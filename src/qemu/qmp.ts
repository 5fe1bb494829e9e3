/**
 * A minimal QMP client and QEMU process helpers, shared by the bench's QEMU peer and the
 * QEMU-peer tests: connect to a QMP unix socket, run commands one at a time, quit QEMUs.
 */
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sleep, tail, type Proc } from '../proc/proc.js';

/** The QEMU binary used unless one is named (the system's, on PATH). */
export const QEMU = 'qemu-system-x86_64';

/**
 * Where QEMU 10.0 is unless one is named: `$MFD_QEMU10`, else the wrapper .ci/fetch-qemu10 puts in
 * `$MFD_QEMU10_DIR` (default ~/.cache/mfd/qemu-10.0, under `$XDG_CACHE_HOME` when set).
 */
export function qemu10Binary(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.MFD_QEMU10_DIR ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'mfd', 'qemu-10.0');
  return env.MFD_QEMU10 ?? path.join(dir, 'bin', 'qemu-system-x86_64');
}

const versions = new Map<string, string | null>();
/** "7.2.22", from `BINARY --version`; null when it does not run or says no version. Cached per binary. */
export function qemuVersion(binary: string = QEMU): string | null {
  if (!versions.has(binary)) {
    const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 30_000 });
    versions.set(binary, /version (\d+\.\d+\.\d+)/.exec(r.stdout ?? '')?.[1] ?? null);
  }
  return versions.get(binary)!;
}

/** Whether QEMU `version` ("10.0.2") is `major.minor` or later; an unknown version counts as new. */
export function qemuAtLeast(version: string | null, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return true;
  return Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor);
}

interface QmpReply {
  return?: unknown;
  error?: { class: string; desc: string };
}

/** A minimal QMP client: one command at a time, events and the greeting skipped. */
export class Qmp {
  private buf = '';
  private readonly waiters: ((m: QmpReply) => void)[] = [];
  private closedWith: Error | null = null;

  private constructor(
    private readonly sock: net.Socket,
    private readonly who: string,
  ) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        let msg: QmpReply & { event?: unknown; QMP?: unknown };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          msg = { error: { class: 'BadReply', desc: `unreadable QMP reply: ${line.slice(0, 200)}` } };
        }
        if (msg.event !== undefined || msg.QMP !== undefined) continue;
        this.waiters.shift()?.(msg);
      }
    });
    const gone = (): void => {
      this.closedWith = new Error(`${this.who}: QMP connection closed`);
      for (const w of this.waiters.splice(0)) w({ error: { class: 'Closed', desc: 'QMP connection closed' } });
    };
    sock.on('close', gone);
    sock.on('error', gone);
  }

  /** Connects to the QMP socket `file` (retrying while QEMU starts) and negotiates capabilities. */
  static async connect(file: string, who: string, proc: Proc, signal: AbortSignal, timeoutMs = 15_000): Promise<Qmp> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(file, () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock, who);
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (proc.exited()) throw new Error(`${who} QEMU exited: ${tail((await proc.done).stderr)}`);
        if (Date.now() > end) throw new Error(`${who} QEMU: no QMP on ${file} within ${timeoutMs} ms (${(e as Error).message})`);
        await sleep(50, signal);
      }
    }
  }

  cmd<T = unknown>(execute: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise<T>((resolve, reject) => {
      this.waiters.push((m) => (m.error ? reject(new QmpError(`${this.who}: ${execute}: ${m.error.desc}`)) : resolve(m.return as T)));
      this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

export class QmpError extends Error {}

/** What query-migrate answers, as far as mfd reads it. */
export interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
  ram?: { transferred?: number };
  'socket-address'?: { port?: string | number }[];
}

/** QEMU arguments for a `machine` whose RAM ("mem") is the file `memPath` (memory-backend-file, share=on), no default devices. */
export function fileBackedRam(machine: string, memPath: string, size: number): string[] {
  return [
    '-nodefaults',
    '-machine',
    `${machine},memory-backend=mem`,
    '-m',
    `${size}B`,
    '-object',
    `memory-backend-file,id=mem,size=${size},mem-path=${memPath},share=on`,
  ];
}

/** Turns the multifd capability on and sets `params` (multifd-channels, multifd-compression, ...). */
export async function enableMultifd(q: Qmp, params: Record<string, unknown>): Promise<void> {
  await q.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
  await q.cmd('migrate-set-parameters', params);
}

/** Lifts the source's max-bandwidth (bytes per second; QEMU 7.2's default, 128 MiB/s, throttles a migration). */
export function unthrottle(q: Qmp): Promise<unknown> {
  return q.cmd('migrate-set-parameters', { 'max-bandwidth': 1e12 });
}

/** Asks the QEMUs to quit over QMP, then makes sure they are gone (SIGTERM, SIGKILL after 5 s). */
export async function quitQemus(qmps: Qmp[], procs: Proc[]): Promise<void> {
  for (const q of qmps.splice(0)) {
    await q.cmd('quit').catch(() => {});
    q.close();
  }
  const timer = setTimeout(() => procs.forEach((p) => p.kill('SIGKILL')), 5000);
  for (const p of procs) if (!p.exited()) p.kill('SIGTERM');
  await Promise.all(procs.map((p) => p.done));
  clearTimeout(timer);
}
