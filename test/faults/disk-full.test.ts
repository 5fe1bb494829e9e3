/**
 * A receiver whose disk fills up, for real: the output directory is a 4 MiB
 * tmpfs the test mounts (root only; skipped with the reason otherwise), and a
 * 16 MiB image is sent by `mfd send` to `mfd recv`, two processes. Both must
 * stop with the documented codes (receiver 6, I/O; sender 7, the receiver's
 * reason) and leave nothing that looks complete; the pages written are kept
 * for a resume (the journal's reserve, src/receiver/reserve.ts, makes room for
 * the last checkpoint), except where the README says they are not.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { makeImage, sha256, tmpdir } from '../helpers/index.js';
import { lastError, mfd, mfdRecv } from '../helpers/procs.js';

function mountSmall(t: Test, dir: string): string | null {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'mfd-test', dir], { encoding: 'utf8' });
  if (r.status !== 0) return `cannot mount a small tmpfs (${(r.stderr || r.error?.message || 'not root?').trim()})`;
  t.teardown(() => {
    spawnSync('umount', [dir]);
  });
  return null;
}

/** A temporary folder with `out`, a 4 MiB tmpfs, in it; null (the test skipped, saying why) where it cannot be mounted. */
function smallDisk(t: Test): { dir: string; out: string } | null {
  const dir = tmpdir(t);
  const out = path.join(dir, 'small');
  fs.mkdirSync(out);
  const why = mountSmall(t, out);
  if (why) {
    t.skip(why, () => {});
    return null;
  }
  return { dir, out };
}

t.test(
  'receiver disk full: receiver exits 6, sender 7 with the reason; the pages written are kept for a resume, which completes once there is room',
  async (t) => {
    const disk = smallDisk(t);
    if (!disk) return;
    const { dir, out } = disk;
    const img = makeImage(path.join(dir, 'vm.ram'), 16 << 20, 'random');
    const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress', '--resume-wait', '60']);
    const started = performance.now();
    const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--channels', '4', '--json', '--no-progress', img]);
    const s = await send.done;
    await recv.waitFor(/waiting 60 s on .* for mfd send --resume/);
    t.equal(s.code, 7, `sender exit 7 (the receiver reported its failure): ${s.stderr.slice(-600)}`);
    t.match(JSON.parse(s.stdout), { status: 'failed', error: { code: 'ERR_REMOTE', message: /receiver failed: .*ENOSPC/ } });
    t.comment(`the sender exited ${Math.round(s.at - started)} ms after its start`);
    // Before the first periodic checkpoint (1 s): only the reserve made room for this journal.
    t.same(
      fs.readdirSync(out).sort(),
      ['.vm.ram.mfd-journal', '.vm.ram.mfd-partial'],
      'the partial output and its journal stay, the reserve is gone',
    );
    const journal = JSON.parse(fs.readFileSync(path.join(out, '.vm.ram.mfd-journal'), 'utf8')) as { pages: number[] };
    const held = journal.pages.reduce((a, n, i) => (i % 2 ? a + n : a), 0);
    t.ok(held > 0, `the journal holds ${held} of 4096 pages`);
    // Room again: the same receiver takes the resume.
    t.equal(spawnSync('mount', ['-o', 'remount,size=64m', out]).status, 0, 'tmpfs grown to 64 MiB');
    const resume = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--channels', '4', '--json', '--no-progress', '--resume', img]);
    const [r, s2] = await Promise.all([recv.done, resume.done]);
    t.equal(s2.code, 0, `resume: sender exit 0: ${s2.stderr.slice(-600)}`);
    t.equal(r.code, 0, `resume: receiver exit 0: ${r.stderr.slice(-600)}`);
    t.equal(JSON.parse(s2.stdout).resumedPages, held, 'the pages held were not sent again');
    t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'the output is the image');
    t.same(fs.readdirSync(out), ['vm.ram']);
  },
);

t.test('receiver disk full with --no-journal: exit 6 and 7, nothing left (no resume without a journal)', async (t) => {
  const disk = smallDisk(t);
  if (!disk) return;
  const { dir, out } = disk;
  const img = makeImage(path.join(dir, 'vm.ram'), 16 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress', '--no-journal']);
  const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--channels', '4', '--json', '--no-progress', img]);
  const [r, s] = await Promise.all([recv.done, send.done]);
  t.equal(r.code, 6, lastError(r.stderr));
  t.match(JSON.parse(r.stdout), { status: 'failed', error: { code: 'ERR_ENOSPC' } });
  t.equal(s.code, 7, lastError(s.stderr));
  t.same(fs.readdirSync(out), [], 'nothing left');
});

t.test("a disk too full for the journal's reserve refuses the migration at the hello, before any page", async (t) => {
  const disk = smallDisk(t);
  if (!disk) return;
  const { dir, out } = disk;
  // Fill the tmpfs up to its last page or so.
  const fd = fs.openSync(path.join(out, 'filler'), 'w');
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (e) {
    t.equal((e as NodeJS.ErrnoException).code, 'ENOSPC', 'filled');
  } finally {
    fs.closeSync(fd);
  }
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress', '--resume-wait', '5']);
  const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--json', '--no-progress', img]);
  const [r, s] = await Promise.all([recv.done, send.done]);
  t.equal(r.code, 6, lastError(r.stderr));
  t.match(JSON.parse(r.stdout), {
    status: 'failed',
    error: { code: 'ERR_ENOSPC', message: /cannot reserve 65536 bytes for the progress journal/ },
  });
  t.equal(s.code, 7, lastError(s.stderr));
  t.same(fs.readdirSync(out), ['filler'], 'nothing left');
});
