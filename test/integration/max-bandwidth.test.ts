/**
 * --max-bandwidth holds the whole migration's rate, all channels together, as
 * QEMU's max-bandwidth does: a 1 GiB image (one page in 16 random, the rest
 * zero) over 4 channels, its wire bytes over its total time at most 5% over the
 * limit (and not far under it). The limit is far below what loopback carries, so
 * the limiter, not the link or the CPU, sets the time; the run lasts about 8 s,
 * so that the fixed costs of a migration (connecting, the verdict) stay a small
 * part of it.
 */
import t, { type Test } from 'tap';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

import { mfd, mfdRecv } from '../helpers/procs.js';

const GiB = 2 ** 30;
const PAGE = 4096;
const LIMIT = 8 * 2 ** 20; // 8M: bytes per second

/**
 * A directory in memory (/dev/shm) where there is one: removing a 1 GiB file
 * of 16384 extents from a disk mounted with discard takes minutes.
 */
function shmdir(t: Test): string {
  const d = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'mfd-test-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A sparse 1 GiB image: one random page in every 16, zero pages elsewhere (holes). */
function sparseImage(file: string): string {
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, GiB);
    for (let off = 0; off < GiB; off += 16 * PAGE) fs.writeSync(fd, randomBytes(PAGE), 0, PAGE, off);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** The random pages of two such images are the same, and so are their sizes. */
function samePages(a: string, b: string): boolean {
  if (fs.statSync(a).size !== fs.statSync(b).size) return false;
  const [fa, fb] = [fs.openSync(a, 'r'), fs.openSync(b, 'r')];
  const [pa, pb] = [Buffer.alloc(PAGE), Buffer.alloc(PAGE)];
  try {
    for (let off = 0; off < GiB; off += 16 * PAGE) {
      fs.readSync(fa, pa, 0, PAGE, off);
      fs.readSync(fb, pb, 0, PAGE, off);
      if (!pa.equals(pb)) return false;
    }
    return true;
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

t.test('--max-bandwidth 8M: a 1 GiB migration over 4 channels runs at 8 MiB/s, at most 5% over', async (t) => {
  const dir = shmdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = sparseImage(path.join(dir, 'vm.ram'));
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress']);
  const s = await mfd(t, [
    'send',
    '--to',
    `tcp:127.0.0.1:${recv.port}`,
    '--channels',
    '4',
    '--max-bandwidth',
    '8M',
    '--json',
    '--no-progress',
    img,
  ]).done;
  const r = await recv.done;
  t.equal(s.code, 0, s.stderr);
  t.equal(r.code, 0, r.stderr);
  const sent = JSON.parse(s.stdout) as { wireBytes: number; totalTimeMs: number; imageBytes: number };
  t.equal(sent.imageBytes, GiB);
  const rate = sent.wireBytes / (sent.totalTimeMs / 1000);
  t.comment(
    `--max-bandwidth ${LIMIT} B/s: ${sent.wireBytes} wire bytes in ${sent.totalTimeMs} ms = ${Math.round(rate)} B/s (${((100 * rate) / LIMIT).toFixed(1)}% of the limit)`,
  );
  t.ok(sent.wireBytes > 64 * 2 ** 20, 'the random pages crossed the wire');
  t.ok(rate <= LIMIT * 1.05, `at most 5% over the limit: ${Math.round(rate)} B/s`);
  // Below it by more where the machine is loaded: the migration's time includes its setup and verdict, which
  // load stretches (a 1 s stretch is 11% of this run; CI saw 80.7% with the host's CPU pressure at 85%); the
  // limit itself is the bound above. This bound catches a limiter that takes 1.7 times the time the limit allows, or longer.
  t.ok(rate >= LIMIT * 0.6, `at most 40% under the limit: ${Math.round(rate)} B/s`);
  // The receiver's verdict (exit 0) already means digests matched; the random pages are checked here too.
  t.ok(samePages(img, path.join(out, 'vm.ram')), 'the random pages arrived');
});

t.test('--max-bandwidth values: K, M, G suffixes; refused when not a size, and with --qemu', async (t) => {
  const bad = await mfd(t, ['send', '--to', '127.0.0.1:1', '--max-bandwidth', 'fast', 'x']).done;
  t.equal(bad.code, 2);
  t.match(bad.stderr, /Expected bytes per second \(with an optional K, M or G suffix\) for --max-bandwidth but received "fast"/);
  const q = await mfd(t, ['send', '--qemu', '--to', '127.0.0.1:1', '--channels', '2', '--max-bandwidth', '1G', 'x']).done;
  t.equal(q.code, 2);
  t.match(q.stderr, /--max-bandwidth cannot be used with --qemu/);
});
