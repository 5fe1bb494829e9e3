/**
 * Child processes (the bench's peers, a QEMU under QMP, the tests' helpers): spawn with captured
 * output, wait for a listening socket, kill on abort. Below bench/ and qemu/, which both use it.
 */
import { spawn, spawnSync, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { InterruptedError } from '../errors.js';

export interface ProcExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Proc {
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Settles when the process has exited (never rejects; a spawn failure is exit code 127). */
  done: Promise<ProcExit>;
  exited(): boolean;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * This process's peak resident memory in bytes: VmHWM of /proc/self/status, the high-water mark of its
 * own address space. Not getrusage's ru_maxrss (process.resourceUsage().maxRSS), which Linux carries
 * over exec from the process that forked it: mfd started by a larger parent (the bench's node, a CI
 * runner) would report that parent's size. Falls back to ru_maxrss where /proc has no VmHWM.
 */
export function peakRssBytes(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* no /proc: below */
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** Keeps the tail of a long output: enough for an error message, bounded memory. */
const KEEP = 256 * 1024;

const live = new Set<Proc>();

export interface StartOptions {
  stdio?: StdioOptions;
  /** Called with the whole stderr captured so far, on every chunk. */
  onStderr?: (all: string) => void;
  env?: NodeJS.ProcessEnv;
  /** Its own process group, killed as a whole (a shell pipeline: killing the shell alone would orphan it). */
  group?: boolean;
}

export function start(cmd: string, args: readonly string[], opts: StartOptions = {}): Proc {
  const child = spawn(cmd, args, {
    stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
    detached: opts.group ?? false,
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out = (out + d).slice(-KEEP);
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err = (err + d).slice(-KEEP);
    opts.onStderr?.(err);
  });
  let exited = false;
  const done = new Promise<ProcExit>((resolve) => {
    child.once('error', (e) => {
      exited = true;
      resolve({ code: 127, signal: null, stdout: out, stderr: `${err}${cmd}: ${e.message}\n` });
    });
    child.once('close', (code, signal) => {
      exited = true;
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  const p: Proc = {
    pid: child.pid ?? -1,
    stdout: () => out,
    stderr: () => err,
    done,
    exited: () => exited,
    kill(signal = 'SIGTERM') {
      if (exited) return;
      if (opts.group && child.pid !== undefined) {
        try {
          process.kill(-child.pid, signal);
        } catch {
          // the group is gone already
        }
      } else child.kill(signal);
    },
  };
  live.add(p);
  void done.then(() => live.delete(p));
  return p;
}

/** Terminates every child still running (on abort or failure), waiting up to `graceMs` before SIGKILL. */
export async function killAll(graceMs = 2000): Promise<void> {
  const ps = [...live];
  for (const p of ps) p.kill('SIGTERM');
  const timer = setTimeout(() => ps.forEach((p) => p.kill('SIGKILL')), graceMs);
  await Promise.all(ps.map((p) => p.done));
  clearTimeout(timer);
}

/** Waits for `p`, killing it (and failing) when `signal` aborts or `timeoutMs` passes. */
export async function waitFor(p: Proc, signal: AbortSignal, timeoutMs = 0): Promise<ProcExit> {
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const onAbort = (): void => p.kill('SIGTERM');
  signal.addEventListener('abort', onAbort, { once: true });
  if (timeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      p.kill('SIGTERM');
    }, timeoutMs);
  }
  try {
    const r = await p.done;
    if (signal.aborted) throw new InterruptedError(String(signal.reason ?? 'abort'));
    if (timedOut) return { ...r, code: r.code ?? 124, stderr: `${r.stderr}(killed after ${timeoutMs} ms)\n` };
    return r;
  } finally {
    signal.removeEventListener('abort', onAbort);
    if (timer) clearTimeout(timer);
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new InterruptedError(String(signal.reason)));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new InterruptedError(String(signal?.reason)));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * CPU seconds (user + system) a live process has used so far, from /proc/PID/stat (in the kernel's
 * USER_HZ ticks, 100 a second on Linux); NaN once it is gone. For peers that report none of their own.
 */
export function cpuSec(pid: number): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses: state is field 3.
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return NaN;
  }
}

/** The absolute path of an executable on PATH, or null. */
export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    if (!dir) continue;
    const f = path.join(dir, cmd);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      if (fs.statSync(f).isFile()) return f;
    } catch {
      // not here
    }
  }
  return null;
}

/** A string as one single-quoted shell word. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A TCP port free on this host right now (bound and released; the peer binds it next). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * Whether a socket listens on `port` in the network namespace of process `pid`
 * (/proc/PID/net/tcp is that namespace's table, so this works across `ip netns exec`).
 */
export function listensOn(pid: number, port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex, st 0A is LISTEN.
      if (cols[1]?.endsWith(`:${hex}`) && cols[3] === '0A') return true;
    }
  }
  return false;
}

/** Polls until `p` listens on `port`; fails when it exits first or after `timeoutMs`. */
export async function waitListening(p: Proc, port: number, what: string, signal: AbortSignal, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (listensOn(p.pid, port)) return;
    if (p.exited()) {
      const r = await p.done;
      throw new Error(`${what} exited (code ${r.code}) before listening on port ${port}: ${tail(r.stderr)}`);
    }
    if (Date.now() > end) {
      p.kill();
      throw new Error(`${what} did not listen on port ${port} within ${timeoutMs} ms`);
    }
    await sleep(10, signal);
  }
}

/** The last few lines of a process's output, for an error message. */
export function tail(s: string, lines = 6): string {
  const t = s.trim().split('\n').slice(-lines).join(' | ');
  return t === '' ? '(no output)' : t;
}

/** `sync`: earlier outputs' writeback finishes here, outside any timed region. */
export function syncDisks(): void {
  spawnSync('sync');
}
