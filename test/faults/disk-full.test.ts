/**
 * A receiver whose disk fills up, for real: the output directory is a 4 MiB
 * tmpfs the test mounts (root only; skipped with the reason otherwise), and a
 * 16 MiB image is sent by `mfd send` to `mfd recv`, two processes. Both must
 * stop with the documented codes (receiver 6, I/O; sender 7, the receiver's
 * reason), leave nothing that looks complete, and the test reports how long
 * each side took to exit after the receiver's first error.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeImage, tmpdir } from '../helpers/index.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');

function mountSmall(t: Test, dir: string): string | null {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'mfd-test', dir], { encoding: 'utf8' });
  if (r.status !== 0) return `cannot mount a small tmpfs (${(r.stderr || r.error?.message || 'not root?').trim()})`;
  t.teardown(() => {
    spawnSync('umount', [dir]);
  });
  return null;
}

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
  at: number;
}

function proc(args: string[]): { p: ReturnType<typeof spawn>; done: Promise<Exit> } {
  const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (d) => (stdout += d));
  p.stderr!.on('data', (d) => (stderr += d));
  // 'close', not 'exit': only then has all of the child's output been read.
  return { p, done: new Promise((r) => p.on('close', (code) => r({ code, stdout, stderr, at: performance.now() }))) };
}

t.test('receiver disk full: receiver exits 6, sender 7 with the reason, no output left', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'small');
  fs.mkdirSync(out);
  const why = mountSmall(t, out);
  if (why) return void t.skip(why, () => {});
  const img = makeImage(path.join(dir, 'vm.ram'), 16 << 20, 'random');
  const recv = proc(['recv', '--listen', '127.0.0.1:0', '--output', out, '--json', '--no-progress']);
  // The receiver says where it listens on stderr.
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('receiver did not start')), 20_000);
    let buf = '';
    recv.p.stderr!.on('data', (d) => {
      buf += d;
      const m = /listening on [^\s]+:(\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  const started = performance.now();
  const send = proc(['send', '--to', `127.0.0.1:${port}`, '--channels', '4', '--json', '--no-progress', img]);
  const [r, s] = await Promise.all([recv.done, send.done]);
  t.equal(r.code, 6, `receiver exit 6 (I/O): ${r.stderr.split('\n').filter((l) => l.includes('error')).slice(-1)[0] ?? ''}`);
  t.match(JSON.parse(r.stdout), { status: 'failed', error: { code: 'ERR_ENOSPC' } });
  t.equal(s.code, 7, `sender exit 7 (the receiver reported its failure): ${s.stderr.slice(-600)}`);
  t.match(JSON.parse(s.stdout), { status: 'failed', error: { code: 'ERR_REMOTE', message: /receiver failed: .*ENOSPC/ } });
  t.same(fs.readdirSync(out), [], 'no output and no temporary file left on the full disk');
  t.comment(`from the sender's start: receiver exited after ${Math.round(r.at - started)} ms, sender after ${Math.round(s.at - started)} ms; the two exits ${Math.round(Math.abs(s.at - r.at))} ms apart`);
});
