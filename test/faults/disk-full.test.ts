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
import { spawnSync } from 'node:child_process';
import { makeImage, tmpdir } from '../helpers/index.js';
import { mfd, mfdRecv } from '../helpers/procs.js';

function mountSmall(t: Test, dir: string): string | null {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'mfd-test', dir], { encoding: 'utf8' });
  if (r.status !== 0) return `cannot mount a small tmpfs (${(r.stderr || r.error?.message || 'not root?').trim()})`;
  t.teardown(() => {
    spawnSync('umount', [dir]);
  });
  return null;
}

t.test('receiver disk full: receiver exits 6, sender 7 with the reason, no output left', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'small');
  fs.mkdirSync(out);
  const why = mountSmall(t, out);
  if (why) return void t.skip(why, () => {});
  const img = makeImage(path.join(dir, 'vm.ram'), 16 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress']);
  const started = performance.now();
  const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--channels', '4', '--json', '--no-progress', img]);
  const [r, s] = await Promise.all([recv.done, send.done]);
  t.equal(r.code, 6, `receiver exit 6 (I/O): ${r.stderr.split('\n').filter((l) => l.includes('error')).slice(-1)[0] ?? ''}`);
  t.match(JSON.parse(r.stdout), { status: 'failed', error: { code: 'ERR_ENOSPC' } });
  t.equal(s.code, 7, `sender exit 7 (the receiver reported its failure): ${s.stderr.slice(-600)}`);
  t.match(JSON.parse(s.stdout), { status: 'failed', error: { code: 'ERR_REMOTE', message: /receiver failed: .*ENOSPC/ } });
  // The partial output stays only with its journal (for mfd send --resume once space is freed), when
  // the journal could still be written; on a disk this full it usually cannot, and both go.
  const left = fs.readdirSync(out).sort();
  t.ok(left.length === 0 || left.join('/') === '.vm.ram.mfd-journal/.vm.ram.mfd-partial', `nothing that looks complete left: ${left.join(', ') || 'nothing'}`);
  t.comment(`from the sender's start: receiver exited after ${Math.round(r.at - started)} ms, sender after ${Math.round(s.at - started)} ms; the two exits ${Math.round(Math.abs(s.at - r.at))} ms apart`);
});
