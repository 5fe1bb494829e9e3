/** `mfd` as a child process, for the fault tests: exit code, output, and when it exited. */
import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Test } from 'tap';
import { bin } from './files.js';

export interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
  /** performance.now() at exit. */
  at: number;
}

export interface Proc {
  p: ChildProcess;
  done: Promise<Exit>;
  stderr(): string;
  stdout(): string;
  /** Resolves with the first match of `re` on stderr (rejects if the process exits first). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
}

/** Spawns `mfd ARGS`; killed (continued first, if stopped) when the test ends. */
export function mfd(t: Test, args: string[]): Proc {
  const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let exited = false;
  const watchers = new Set<() => void>();
  p.stdout!.on('data', (d) => (stdout += d));
  p.stderr!.on('data', (d) => {
    stderr += d;
    for (const w of watchers) w();
  });
  // The time is the exit's; the result waits for 'close', when all of the child's output has been read.
  const done = new Promise<Exit>((r) => {
    let at = 0;
    p.on('exit', () => {
      at = performance.now();
      exited = true;
      for (const w of watchers) w();
    });
    p.on('close', (code) => r({ code, stdout, stderr, at: at || performance.now() }));
  });
  t.teardown(() => {
    if (exited) return;
    p.kill('SIGCONT');
    p.kill('SIGKILL');
  });
  const waitFor = (re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`no ${re} on stderr within ${timeoutMs} ms: ${stderr.slice(-2000)}`)), timeoutMs);
      const finish = (e: Error | null, m?: RegExpExecArray): void => {
        clearTimeout(timer);
        watchers.delete(check);
        if (e) reject(e);
        else resolve(m!);
      };
      const check = (): void => {
        const m = re.exec(stderr);
        if (m) finish(null, m);
        else if (exited) finish(new Error(`exited (${p.exitCode}) before ${re} on stderr: ${stderr.slice(-2000)}`));
      };
      watchers.add(check);
      check();
    });
  return { p, done, stderr: () => stderr, stdout: () => stdout, waitFor };
}

/** Starts `mfd recv ARGS --listen 127.0.0.1:0`; resolves with its port once it listens. */
export async function mfdRecv(t: Test, args: string[]): Promise<Proc & { port: number }> {
  const r = mfd(t, ['recv', '--listen', '127.0.0.1:0', ...args]);
  const m = await r.waitFor(/listening on [^\s]+:(\d+)/);
  return { ...r, port: Number(m[1]) };
}

/** The last line of `text` that mentions an error (for assertion messages). */
export const lastError = (text: string): string =>
  text
    .split('\n')
    .filter((l) => /error/i.test(l))
    .slice(-1)[0] ?? '';

/** Peak RSS (VmHWM, bytes) of `pid` while it lives: the last value read before it exits. */
export function watchPeak(pid: number): { peak: () => number; stop: () => void } {
  let peak = 0;
  const read = (): void => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {
      /* exited */
    }
  };
  const timer = setInterval(read, 20);
  return { peak: () => (read(), peak), stop: () => clearInterval(timer) };
}
