/** Resume pieces in isolation: page runs, ready.have and hello.resume decoding, the journal's checks. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { limitRuns, missingRuns, runPages, shareRuns } from '../../src/image/resume.js';
import { PageBitmap } from '../../src/receiver/page-bitmap.js';
import { decodeFrame, encodeFrame, type ControlMessage } from '../../src/control/protocol.js';
import { checkJournal, loadJournal, type JournalFile } from '../../src/receiver/journal.js';
import { tmpdir } from '../helpers/index.js';

const frame = (o: unknown): Uint8Array => encodeFrame(o as ControlMessage).subarray(4);

t.test('runs: from a bitmap, their complement, their page count', async (t) => {
  const b = new PageBitmap(10_000);
  for (const p of [0, 1, 2, 5, 4095, 4096, 4097, 9999]) b.set(p);
  const runs = b.runs();
  t.same(runs, [0, 3, 5, 1, 4095, 3, 9999, 1]);
  // Whole bytes and chunks, a run across a chunk boundary, a block ending inside a chunk.
  const c = new PageBitmap(12_290);
  for (let p = 8; p < 4104; p++) c.set(p);
  for (let p = 8192; p < 12_290; p++) c.set(p);
  t.same(c.runs(), [8, 4096, 8192, 4098]);
  t.same(new PageBitmap(5).runs(), []);
  // Against a page-by-page walk, on bitmaps of random runs.
  let x = 12345;
  const rnd = (n: number): number => (x = (x * 1103515245 + 12345) >>> 0) % n;
  for (let round = 0; round < 50; round++) {
    const pages = 1 + rnd(20_000);
    const m = new PageBitmap(pages);
    for (let p = rnd(50); p < pages; p += 1 + rnd(300)) for (let q = p, end = Math.min(pages, p + rnd(200)); q < end; q++) m.set(q);
    const naive: number[] = [];
    for (let p = 0; p < pages; p++) {
      if (!m.has(p)) continue;
      if (naive.length > 0 && naive[naive.length - 2]! + naive[naive.length - 1]! === p) naive[naive.length - 1]!++;
      else naive.push(p, 1);
    }
    if (JSON.stringify(m.runs()) !== JSON.stringify(naive)) t.fail(`runs differ for a bitmap of ${pages} pages (round ${round})`);
  }
  t.equal(runPages(runs), 8);
  t.same(missingRuns(runs, 10_000), [3, 2, 6, 4089, 4098, 5901]);
  t.same(missingRuns([], 7), [0, 7]);
  t.same(missingRuns([0, 7], 7), []);
  t.same(limitRuns([0, 1, 5, 10, 20, 2, 30, 7], 4), [5, 10, 30, 7], 'too many runs: the longest kept, in order');
  t.same(limitRuns([0, 1], 4), [0, 1]);
  t.same(limitRuns([0, 1, 5, 10], 0), [], 'no share: nothing held, all sent again');
});

t.test('ready.have: the blocks share its bound, never exceed it', async (t) => {
  t.same(shareRuns([4, 100, 10], 40), [4, 26, 10], 'small journals keep all their runs, the big one takes what is left');
  t.same(shareRuns([0, 0], 10), [0, 0]);
  t.same(shareRuns([7, 7], 100), [7, 7], 'below the bound, everything');
  // Thousands of one-run blocks and one huge fragmented block: the case an
  // "at least one run each" share got wrong, its sum above the bound.
  const lengths = [...new Array<number>(20_000).fill(2), 1 << 20];
  const share = shareRuns(lengths, 1 << 18);
  t.ok(share.reduce((a, b) => a + b, 0) <= 1 << 18, 'the sum stays within the bound');
  t.equal(share[0], 2, 'each small block keeps its run');
  t.equal(share.at(-1), (1 << 18) - 40_000, 'the big block gets the rest');
  t.ok(
    share.every((x) => x % 2 === 0),
    'whole runs',
  );
  const tight = shareRuns(new Array<number>(10).fill(100), 25);
  t.ok(
    tight.reduce((a, b) => a + b, 0) <= 25 && tight.every((x) => x % 2 === 0),
    'a bound too small for every block: within it all the same',
  );
});

t.test('ready.have: runs checked as they arrive', async (t) => {
  t.same(decodeFrame(frame({ type: 'ready', have: { a: [0, 2, 5, 1] } })), { type: 'ready', have: { a: [0, 2, 5, 1] } });
  t.same(decodeFrame(frame({ type: 'ready' })), { type: 'ready' });
  const bad: [unknown, RegExp][] = [
    [[], /ready\.have received an array of 0, expected an object/],
    [{ a: [0] }, /ready\.have\["a"\] received an array of 1, expected a list of \[start, count\] pairs/],
    [{ a: [4, 2, 5, 1] }, /ready\.have\["a"\] run 1 received start 5 count 1, expected start >= 6/],
    [{ a: [0, 0] }, /run 0 received start 0 count 0/],
    [{ a: [-1, 2] }, /run 0 received start -1/],
    [{ a: [0, 2 ** 40] }, /end <= 17179869184/],
    [{ a: ['0', 1] }, /run 0 received start "0"/],
  ];
  for (const [have, re] of bad) t.throws(() => decodeFrame(frame({ type: 'ready', have })), { code: 'ERR_CONTROL_MESSAGE', message: re });
});

t.test('hello: resume and the ramblock source are optional and checked', async (t) => {
  const hello = {
    type: 'hello',
    version: 1,
    uuid: '00112233-4455-6677-8899-aabbccddeeff',
    channels: 1,
    pageSize: 4096,
    packetSize: 524288,
    compression: 'none',
    methodParams: {},
    zeroPageDetection: 'multifd',
    digest: 'crc32c-pages-v1',
  };
  t.match(decodeFrame(frame({ ...hello, resume: true, ramblocks: [{ name: 'a', size: 1, source: 'size=1' }] })), {
    resume: true,
    ramblocks: [{ name: 'a', size: 1, source: 'size=1' }],
  });
  t.notOk('resume' in decodeFrame(frame({ ...hello, resume: false, ramblocks: [] })));
  t.throws(() => decodeFrame(frame({ ...hello, resume: 1, ramblocks: [] })), {
    message: /hello\.resume received 1, expected true or false/,
  });
  t.throws(() => decodeFrame(frame({ ...hello, ramblocks: [{ name: 'a', size: 1, source: 'x'.repeat(257) }] })), {
    message: /hello\.ramblocks\[0\]\.source received "x+\.\.\.", expected a string of at most 256/,
  });
});

t.test('journal: loading and the checks that refuse a resume', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, '.vm.ram.mfd-journal');
  t.equal(await loadJournal(file), null, 'no journal: null');
  fs.writeFileSync(file, '{"format":"mfd-journal"');
  await t.rejects(loadJournal(file), { code: 'ERR_RESUME_JOURNAL', exitCode: 9, message: /is not valid JSON/ });
  const j: JournalFile = {
    format: 'mfd-journal',
    version: 1,
    uuid: 'u',
    ramblock: { name: 'vm.ram', size: 40960, source: 's1' },
    pageSize: 4096,
    output: 'x',
    pages: [0, 4, 6, 2],
  };
  fs.writeFileSync(file, JSON.stringify(j));
  t.same(await loadJournal(file), j);
  t.doesNotThrow(() => checkJournal(j, file, { name: 'vm.ram', size: 40960, source: 's1' }, 4096, 'x'));
  t.throws(() => checkJournal(j, file, { name: 'vm.ram', size: 8192, source: 's2' }, 16384, 'x'), {
    code: 'ERR_RESUME_MISMATCH',
    message:
      /cannot resume ram block "vm.ram" from the progress journal ".*": size received 8192, expected 40960; page size received 16384, expected 4096; source image received "s2", expected "s1"/,
  });
  t.throws(() => checkJournal({ ...j, pages: [0, 4, 2, 2] }, file, { name: 'vm.ram', size: 40960, source: 's1' }, 4096, 'x'), {
    code: 'ERR_RESUME_JOURNAL',
    message: /run 1 \(pages 2\+2\) is out of order/,
  });
  t.throws(() => checkJournal({ ...j, pages: [0, 11] }, file, { name: 'vm.ram', size: 40960, source: 's1' }, 4096, 'x'), {
    code: 'ERR_RESUME_JOURNAL',
    message: /past the block's 10 pages/,
  });
  t.throws(() => checkJournal(j, file, { name: 'vm.ram', size: 40960, source: 's1' }, 4096, '/out/vm.ram'), {
    code: 'ERR_RESUME_MISMATCH',
    message: /output file received "\/out\/vm\.ram", expected "x" \(--in-place as in the failed migration\?\)/,
  });
});
