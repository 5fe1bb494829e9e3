/**
 * mfd inspect reads a window at a time: a 3 GiB stream file does not grow
 * it, a pipe or a device (an endless source) is refused at once, and a
 * migration file is checked as mfd recv --from restores it (a flipped data
 * bit in a mapped-ram file: exit 5, not 0).
 */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { makeImage, tmpdir } from '../helpers/index.js';
import { flip, save } from '../helpers/files.js';
import { mfd, watchPeak } from '../helpers/procs.js';
import { inspectFile } from '../../src/inspect/file.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { packetHeaderSize } from '../../src/wire/constants.js';
import { RECEIVER_RSS_CEILING } from '../../src/receiver/page-bitmap.js';

const PS = 4096;

async function inspect(t: Test, args: string[]) {
  const p = mfd(t, ['inspect', ...args]);
  const peak = watchPeak(p.p.pid!);
  const exit = await p.done;
  peak.stop();
  return { ...exit, peak: peak.peak() };
}

t.test('a 3 GiB sparse stream file: read a window at a time, memory bounded', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'channel-0.bin');
  const hs = packetHeaderSize(PS);
  const pkts = Array.from({ length: 1000 }, (_, k) =>
    encodePacketHeader(new Uint8Array(hs), hs, {
      flags: 0,
      pagesAlloc: 128,
      normalPages: 0,
      zeroPages: 1,
      nextPacketSize: 0,
      packetNum: BigInt(k),
      ramblock: Buffer.from('pc.ram'),
      offsets: [k * PS],
    }),
  );
  fs.writeFileSync(file, Buffer.concat([encodeInitPacket(new Uint8Array(16), 0), ...pkts]));
  fs.truncateSync(file, 3 * 2 ** 30);
  const r = await inspect(t, [file]);
  t.equal(r.code, 3, 'the hole after the packets is an error');
  t.match(r.stdout, /totals: 1000 packets/);
  t.match(r.stdout, new RegExp(`error at byte ${64 + 1000 * hs}: channel 0: received packet magic 0x0, expected 0x11223344`));
  t.notMatch(r.stderr, /internal error|ERR_FS_FILE_TOO_LARGE/);
  t.ok(r.peak > 0 && r.peak < RECEIVER_RSS_CEILING, `peak RSS ${(r.peak / 2 ** 20).toFixed(1)} MiB`);
});

t.test('an endless source (a character device) or a pipe is refused with a clear error', async (t) => {
  const r = await inspect(t, ['/dev/urandom']);
  t.equal(r.code, 2);
  t.match(r.stderr, /mfd inspect reads regular files: "\/dev\/urandom" is a character device/);
  t.ok(r.peak < RECEIVER_RSS_CEILING, `peak RSS ${(r.peak / 2 ** 20).toFixed(1)} MiB`);
  const fifo = path.join(tmpdir(t), 'pipe');
  if (spawnSync('mkfifo', [fifo]).status !== 0) return void t.comment('mkfifo unavailable');
  const p = await inspect(t, [fifo]);
  t.equal(p.code, 2);
  t.match(p.stderr, /is a pipe/);
});

t.test('a migration file is checked as recv --from restores it: a flipped data bit exits 5', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 3 << 20, 'mixed', 9);
  for (const layout of ['mapped-ram', 'stream']) {
    const file = path.join(dir, `${layout}.mfd`);
    await save([{ name: 'pc.ram', path: img }], file, { mappedRam: layout === 'mapped-ram' });
    const good = await inspect(t, [file]);
    t.equal(good.code, 0, `${layout}: a good file passes`);
    t.match(good.stdout, /check: every record, page, packet count and digest verified/);
    if (layout !== 'mapped-ram') continue;
    const report = await inspectFile({ path: file, offset: 0 });
    const b = report.ramblocks[0]!;
    const map = fs.readFileSync(file).subarray(b.bitmapOffset, b.bitmapOffset + 96);
    let first = 0;
    while (!(map[first >>> 3]! & (1 << (first & 7)))) first++;
    flip(file, b.regionOffset + first * PS + 123);
    const bad = await inspect(t, [file]);
    t.equal(bad.code, 5, `${layout}: a flipped data bit exits 5`);
    t.match(bad.stderr, /ERR_DIGEST/);
    t.match(bad.stdout, /check: failed \[ERR_DIGEST\]/);
    t.same(fs.readdirSync(dir).sort(), ['mapped-ram.mfd', 'pc.ram'], 'nothing written beside it');
  }
});
