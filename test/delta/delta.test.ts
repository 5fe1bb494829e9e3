/**
 * Delta transfer end to end over loopback (src/delta/): pages the receiver's
 * bases hold travel as references, copies within the migration once; the
 * result is byte-identical and the counts say how each page travelled. A
 * fingerprint collision, a base changed or shrunk during the migration fail
 * with a clear error and never leave a wrong image.
 */
import { page, PS, requireDeltaOrSkip, writePages } from '../helpers/delta.js';
import t, { type Test } from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { migrate, rejection, send, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { silentLogger } from '../../src/log.js';
import {
  ENTRY_SIZE,
  entryIndex,
  FINGERPRINT_BATCH,
  fingerprintFile,
  fingerprintPages,
  matchEntries,
  NO_MATCH,
  sortEntries,
} from '../../src/delta/fingerprint.js';
import { CONTROL_PREAMBLE_SIZE, decodeFrame } from '../../src/control/protocol.js';
import type { DeltaRecvOptions } from '../../src/delta/receiver.js';
import { REF_ENTRY_SIZE } from '../../src/wire/delta-ref.js';
import { packetHeaderSize } from '../../src/wire/constants.js';
import type { MfdError, RemoteError } from '../../src/errors.js';

requireDeltaOrSkip();

t.test('fingerprints: equal pages equal keys, zero pages skipped, match and sort by content', async (t) => {
  const pages = Buffer.concat([page(1), Buffer.alloc(PS), page(2), page(1), page(3)]);
  const out = Buffer.alloc(5 * ENTRY_SIZE);
  const n = await fingerprintPages(pages, PS, 5, 100, out);
  t.equal(n, 4, 'the zero page has no entry');
  t.same(
    [0, 1, 2, 3].map((i) => entryIndex(out, i)),
    [100, 102, 103, 104],
    'entries in page order, indices from the first',
  );
  t.same(out.subarray(0, 12), out.subarray(2 * ENTRY_SIZE, 2 * ENTRY_SIZE + 12), 'pages 0 and 3 are equal: same key');
  t.not(
    out.subarray(0, 12).toString('hex'),
    out.subarray(ENTRY_SIZE, ENTRY_SIZE + 12).toString('hex'),
    'pages 0 and 2 differ: different keys',
  );
  const table = Buffer.from(out.subarray(0, n * ENTRY_SIZE));
  await sortEntries(table, n);
  for (let i = 1; i < n; i++)
    t.ok(Buffer.compare(table.subarray((i - 1) * 16, (i - 1) * 16 + 12), table.subarray(i * 16, i * 16 + 12)) <= 0, `sorted ${i}`);
  const probe = Buffer.alloc(2 * ENTRY_SIZE);
  t.equal(await fingerprintPages(Buffer.concat([page(3), page(9)]), PS, 2, 0, probe), 2);
  const found = new Uint32Array(2);
  t.equal(matchEntries(table, n, probe, 2, found), 1, 'one of two found');
  t.same([...found], [104, NO_MATCH], 'page(3) found where it is in the table, page(9) nowhere');
});

interface Setup {
  dir: string;
  src: string;
  out: string;
  image: string;
  old: string;
  other: string;
}

/**
 * The image: 600 pages. Its earlier version at the output holds pages 0..399
 * as they are now except every 10th (changed since); the other image, in
 * --base-dir, holds pages 400..499 at other positions. Pages 500..549 are
 * copies of pages 500..509 (5 each, 40 references), 550..599 zero.
 */
function setup(t: Test): Setup {
  const dir = tmpdir(t);
  const src = path.join(dir, 'src');
  const out = path.join(dir, 'out');
  const bases = path.join(dir, 'bases');
  for (const d of [src, out, bases]) fs.mkdirSync(d);
  const seeds: number[] = [];
  for (let i = 0; i < 500; i++) seeds.push(i);
  for (let i = 500; i < 550; i++) seeds.push(500 + (i % 10));
  for (let i = 550; i < 600; i++) seeds.push(-1);
  const image = writePages(path.join(src, 'pc.ram'), seeds);
  const oldSeeds = seeds.slice(0, 400).map((s, i) => (i % 10 === 0 ? 10_000 + i : s));
  const old = writePages(path.join(out, 'pc.ram'), oldSeeds);
  const other = writePages(path.join(bases, 'other.ram'), [...Array.from({ length: 100 }, (_, i) => 499 - i), 7777]);
  return { dir, src, out, image, old, other };
}

const sendOpts = (image: string) => ({
  images: [{ name: 'pc.ram', path: image }],
  channels: 3,
  pageSize: PS,
  compression: 'none' as const,
  methodParams: {},
  zeroPageDetection: 'multifd',
  delta: true,
});

t.test('fingerprinting a file stops at the batch in hand once its signal aborts, rejecting with the reason', async (t) => {
  const file = path.join(tmpdir(t), 'big.ram');
  const pages = 3 * FINGERPRINT_BATCH;
  writePages(
    file,
    Array.from({ length: pages }, (_, i) => i),
  );
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  const stop = new AbortController();
  const seen: number[] = [];
  const why = new Error('no plan needs them');
  const e = await fingerprintFile(
    fd,
    pages * PS,
    PS,
    0,
    'big.ram',
    (_e, _n, _p, page) => {
      seen.push(page);
      stop.abort(why);
    },
    null,
    null,
    stop.signal,
  ).catch((x: unknown) => x);
  t.equal(e, why);
  t.same(seen, [0], 'the first batch only: the two after it are not handed on');
  const all: number[] = [];
  await fingerprintFile(fd, pages * PS, PS, 0, 'big.ram', (_e, _n, _p, page) => void all.push(page), null, null, null);
  t.same(all, [0, FINGERPRINT_BATCH, 2 * FINGERPRINT_BATCH], 'without a signal, every batch');
});

t.test('a delta migration: base and in-migration references, byte-identical, counted on both sides', async (t) => {
  const s = setup(t);
  const want = sha256(s.image);
  const oldSum = sha256(s.old);
  const delta: DeltaRecvOptions = { bases: [], dirs: [path.dirname(s.other)] };
  const { sent, received } = await migrate(sendOpts(s.image), { outputDir: s.out, delta });
  t.equal(sha256(path.join(s.out, 'pc.ram')), want, 'the output is the image');
  t.not(want, oldSum);
  t.same(fs.readdirSync(s.out), ['pc.ram'], 'no temporary files left');
  t.equal(sha256(s.other), sha256(s.other), 'the other base unchanged');
  const expected = { dataPages: 40 + 10, zeroPages: 50, basePages: 360 + 100, migrationPages: 40 };
  t.match(
    sent.stats.delta,
    expected,
    'sender: 360 pages from the earlier version, 100 from the other image, 40 copies, 50 as data (40 changed, 10 sources of the copies)',
  );
  t.match(received.stats.delta, expected, 'receiver counts the same');
  t.equal(sent.stats.normalPages, 50);
  t.equal(sent.stats.zeroPages, 0, 'the zero pages beside references went in a reference packet, not in data packets');
  t.ok(sent.stats.delta!.bytesSaved > 400 * PS, `bytes saved ${sent.stats.delta!.bytesSaved}`);
  t.ok(sent.stats.wireBytes < 60 * (PS + 1344), `wire bytes ${sent.stats.wireBytes}: the data pages and headers, not the image`);
  // The 50 data pages are scattered between references: gathered into one packet, not a packet each.
  const packets = sent.stats.perChannel.reduce((a, c) => a + c.packets - c.syncPackets, 0);
  t.equal(packets, 1 + sent.stats.delta!.refPackets, `data packets: ${packets - sent.stats.delta!.refPackets}, expected 1`);
  t.equal(received.stats.wireBytes, sent.stats.wireBytes);
});

t.test('delta with a compression method: references beside zstd packets', async (t) => {
  const s = setup(t);
  const { sent } = await migrate(
    { ...sendOpts(s.image), compression: 'zstd' },
    { outputDir: s.out, delta: { bases: [{ name: 'other', path: s.other }], dirs: [] } },
  );
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image));
  t.match(sent.stats.delta, { basePages: 460, migrationPages: 40, dataPages: 50 });
});

t.test("without --delta on the sender the hello is today's and so are the bytes on the wire", async (t) => {
  // The first frame a sender without --delta sends: no delta field.
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const hello = new Promise<Record<string, unknown>>((resolve) => {
    server.on('connection', (c) => {
      let buf = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < CONTROL_PREAMBLE_SIZE + 4) return;
        const len = buf.readUInt32BE(CONTROL_PREAMBLE_SIZE);
        if (buf.length < CONTROL_PREAMBLE_SIZE + 4 + len) return;
        resolve(JSON.parse(buf.subarray(CONTROL_PREAMBLE_SIZE + 4, CONTROL_PREAMBLE_SIZE + 4 + len).toString()) as Record<string, unknown>);
        c.destroy();
      });
    });
  });
  const s = setup(t);
  const plain = { ...sendOpts(s.image), delta: false };
  const failed = rejection(
    send({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, logger: silentLogger, timeoutMs: 2000, ...plain }),
  );
  const h = await hello;
  await failed;
  t.equal(h.type, 'hello');
  t.notOk('delta' in h, 'no delta field');
  t.same(Object.keys(decodeFrame(Buffer.from(JSON.stringify(h)))).sort(), Object.keys(h).sort());
  // A plain sender to a receiver offering bases: the same wire bytes as to one that offers none.
  const a = await migrate(plain, { outputDir: s.out, delta: { bases: [], dirs: [] } });
  fs.rmSync(path.join(s.out, 'pc.ram'));
  const b = await migrate(plain, { outputDir: s.out });
  t.equal(a.sent.stats.wireBytes, b.sent.stats.wireBytes, 'same bytes on the data channels');
  t.equal(a.sent.stats.delta, undefined);
  t.equal(a.received.stats.delta, undefined);
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image));
});

t.test('a sender asking for delta from a receiver without bases sends everything as data', async (t) => {
  const s = setup(t);
  const { sent } = await migrate(sendOpts(s.image), { outputDir: s.out });
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image));
  t.equal(sent.stats.delta, undefined);
  t.equal(sent.stats.normalPages, 550);
});

t.test('zero pages the image and its base share continue a run of base references; others go as zero pages', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  // Pages 0..8 of the base: 1 2 0 0 3 | 4 5 6 7; the image: 1 2 0 0 3 | 4 0 6 7 (page 6 zero now, not in the base).
  writePages(path.join(out, 'pc.ram'), [1, 2, -1, -1, 3, 4, 5, 6, 7]);
  const image = writePages(path.join(dir, 'pc.ram'), [1, 2, -1, -1, 3, 4, -1, 6, 7]);
  const { sent, received } = await migrate({ ...sendOpts(image), channels: 1 }, { outputDir: out, delta: { bases: [], dirs: [] } });
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(image), 'the output is the image');
  t.match(
    sent.stats.delta,
    { basePages: 8, zeroPages: 1, dataPages: 0 },
    "pages 2 and 3 are the base's zero pages: references; page 6 a zero page",
  );
  t.match(received.stats.delta, { basePages: 8, zeroPages: 1 });
  // References: 0..5 <- base 0..5 (one run across the shared zero pages), 6 zero, 7..8 <- base 7..8.
  const { refBytes, refPackets } = sent.stats.delta!;
  t.equal(refPackets, 1);
  t.equal(refBytes - packetHeaderSize(PS), 3 * REF_ENTRY_SIZE, 'three references in the packet');
});

/** A failed delta migration: both sides' errors, and the output still the earlier version. */
async function failing(t: Test, s: Setup, delta: DeltaRecvOptions): Promise<{ sender: MfdError; receiver: MfdError }> {
  const oldSum = sha256(s.old);
  const { port, result } = await startReceiver({ outputDir: s.out, delta, journal: false });
  const sender = await rejection(send({ host: '127.0.0.1', port, logger: silentLogger, ...sendOpts(s.image) }));
  const receiver = await rejection(result);
  t.equal(sha256(s.old), oldSum, 'the output is still its earlier version: no wrong image under its name');
  t.same(fs.readdirSync(s.out), ['pc.ram'], 'no temporary files left');
  return { sender, receiver };
}

/**
 * Image page 10's fingerprint (the page changed since the earlier version) given to the base entry
 * `index` on its way to the sender: a collision, which both sides must catch as ERR_DIGEST.
 */
async function collision(t: Test, s: Setup, index: number, dirs: string[]): Promise<void> {
  const probe = Buffer.alloc(ENTRY_SIZE);
  await fingerprintPages(page(10), PS, 1, 0, probe);
  let done = false;
  const delta: DeltaRecvOptions = {
    bases: [],
    dirs,
    onFingerprints: (entries) => {
      for (let i = 0; i < entries.length / ENTRY_SIZE; i++) {
        if (entryIndex(entries, i) === index) {
          probe.copy(entries, i * ENTRY_SIZE, 0, 12);
          done = true;
        }
      }
    },
  };
  const { sender, receiver } = await failing(t, s, delta);
  t.ok(done, 'the collision was injected');
  t.equal(receiver.code, 'ERR_DIGEST', receiver.message);
  t.equal((sender as RemoteError).remoteCode, 'ERR_DIGEST', sender.message);
}

t.test("a fingerprint collision (a base page given an image page's fingerprint) fails verification", async (t) => {
  const s = setup(t);
  // Base pages: the output's 400, then the other image's 101 (seed 7777): its page 100 is index 500.
  await collision(t, s, 500, [path.dirname(s.other)]);
});

t.test('a base changed during the migration fails verification', async (t) => {
  const s = setup(t);
  const delta: DeltaRecvOptions = {
    bases: [{ name: 'other', path: s.other }],
    dirs: [],
    afterOffer: () => fs.writeFileSync(s.other, randomBytes(101 * PS)),
  };
  const { receiver } = await failing(t, s, delta);
  t.equal(receiver.code, 'ERR_DIGEST', receiver.message);
});

t.test(
  "the output's earlier version changed after its fingerprints: its unchanged pages come from the receiver's clone of it",
  async (t) => {
    const s = setup(t);
    // The receiver wrote the earlier version's pages into the temporary output as it fingerprinted them:
    // references to the same pages need no copy, so what the file holds later does not matter.
    const { sent, received } = await migrate(sendOpts(s.image), {
      outputDir: s.out,
      delta: { bases: [], dirs: [], afterOffer: () => fs.writeFileSync(s.old, randomBytes(400 * PS)) },
    });
    t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image), 'the output is the image');
    t.match(sent.stats.delta, { basePages: 360 }, 'the pages unchanged since went as references to the same pages');
    t.match(received.stats.delta, { basePages: 360 });
  },
);

t.test('a fingerprint collision on a page of the earlier version referred to in place fails verification', async (t) => {
  // The earlier version's page 10 (its entry index 10) takes the key: the sender refers to it in place,
  // and the receiver digests the clone's page, not the image's.
  await collision(t, setup(t), 10, []);
});

t.test("zero pages over the clone of the earlier version's non-zero pages are written, in data packets and in references", async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  // The base: 1..9. The image: page 3 zero between two changed pages (a zero page in a data packet),
  // page 7 zero between unchanged ones (a zero reference); the base holds non-zero pages at both.
  writePages(path.join(out, 'pc.ram'), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const image = writePages(path.join(dir, 'pc.ram'), [1, 2, 50, -1, 51, 6, 7, -1, 9]);
  const { sent } = await migrate({ ...sendOpts(image), channels: 1 }, { outputDir: out, delta: { bases: [], dirs: [] } });
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(image), 'the output is the image');
  t.match(sent.stats.delta, { basePages: 5, dataPages: 2, zeroPages: 2 });
  t.equal(sent.stats.zeroPages, 1, 'page 3 went as a zero page in a data packet');
});

t.test('a base that shrank during the migration fails the read, naming it', async (t) => {
  const s = setup(t);
  const delta: DeltaRecvOptions = {
    bases: [{ name: 'other', path: s.other }],
    dirs: [],
    afterOffer: () => fs.truncateSync(s.other, 10 * PS),
  };
  const { receiver, sender } = await failing(t, s, delta);
  t.equal(receiver.code, 'ERR_DELTA_BASE_SHORT');
  t.match(receiver.message, /base "other" \(.*other\.ram\).*it shrank during the migration/);
  t.equal((sender as RemoteError).remoteCode, 'ERR_DELTA_BASE_SHORT');
});

t.test('a base removed during the migration is still read whole (opened before its fingerprints were sent)', async (t) => {
  const s = setup(t);
  const { sent } = await migrate(sendOpts(s.image), {
    outputDir: s.out,
    delta: { bases: [{ name: 'other', path: s.other }], dirs: [], afterOffer: () => fs.rmSync(s.other) },
  });
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image));
  t.equal(sent.stats.delta!.basePages, 460);
});

t.test('after a base shrank, the journal is kept and mfd send --resume (without --delta) completes byte-identical', async (t) => {
  const s = setup(t);
  const delta: DeltaRecvOptions = {
    bases: [{ name: 'other', path: s.other }],
    dirs: [],
    afterOffer: () => fs.truncateSync(s.other, 10 * PS),
  };
  const first = await startReceiver({ outputDir: s.out, delta });
  await rejection(send({ host: '127.0.0.1', port: first.port, logger: silentLogger, ...sendOpts(s.image) }));
  t.equal((await rejection(first.result)).code, 'ERR_DELTA_BASE_SHORT');
  t.ok(fs.existsSync(path.join(s.out, '.pc.ram.mfd-journal')), 'the journal is kept');
  const again = await startReceiver({ outputDir: s.out });
  const sent = await send({ host: '127.0.0.1', port: again.port, logger: silentLogger, ...sendOpts(s.image), delta: false, resume: true });
  await again.result;
  t.ok(sent.stats.resumedPages! > 0, `${sent.stats.resumedPages} pages held from the delta attempt`);
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image), 'byte-identical');
});

t.test('the CLI refuses delta where it cannot hold: mapped-ram files, --resume, --qemu, --delta with --from', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const bin = path.resolve('bin/mfd.js');
  const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  const s = setup(t);
  const cases: [string[], RegExp][] = [
    [
      ['send', '--delta', '--mapped-ram', '--to', `file:${path.join(s.dir, 'f.mig')}`, s.image],
      /--mapped-ram cannot hold delta references/,
    ],
    [['send', '--delta', '--resume', '--to', '127.0.0.1:1', s.image], /--delta and --resume cannot be combined/],
    [['recv', '--delta', '--qemu', '--listen', '127.0.0.1:0', '--output', s.out], /not with --qemu/],
    [
      ['recv', '--delta', '--from', `file:${path.join(s.dir, 'f.mig')}`, '--output', s.out],
      /a delta migration file names its bases itself/,
    ],
    [['recv', '--base', 'nonsense', '--listen', '127.0.0.1:0', '--output', s.out], /--base "nonsense": expected NAME=PATH/],
    [
      ['recv', '--base-dir', path.join(s.dir, 'none'), '--listen', '127.0.0.1:0', '--output', s.out],
      /--base-dir ".*none" is not a directory/,
    ],
  ];
  for (const [args, why] of cases) {
    const r = run(...args);
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, why);
  }
});

t.test('mfd inspect shows the reference packets of a dumped stream', async (t) => {
  const { inspectStream, formatReport } = await import('../../src/inspect/inspect.js');
  const s = setup(t);
  const dump = path.join(s.dir, 'dump');
  await migrate(
    { ...sendOpts(s.image), channels: 1 },
    { outputDir: s.out, dumpStreams: dump, delta: { bases: [], dirs: [path.dirname(s.other)] } },
  );
  const r = await inspectStream(path.join(dump, 'channel-0.bin'), PS);
  t.same(r.errors, [], 'no errors: the reference payloads are skipped by their length');
  const refs = r.packets.filter((p) => p.references);
  t.ok(refs.length >= 1, 'reference packets listed');
  t.equal(
    refs.reduce((a, p) => a + p.references!.pages, 0),
    460 + 40 + 50,
    'they stand for the base pages, the copies and the zero pages beside them',
  );
  t.match(refs[0]!.flags, 'delta-ref');
  t.equal(r.totals.normalPages, 50, 'the data packets: the 50 pages sent as data');
  const text = formatReport(r);
  t.match(text, /\d+ reference\(s\) for \d+ page\(s\):/);
  t.match(text, /9 page\(s\) at 1 <- base#0 page 1\n/, 'pages 1..9 from the earlier version (page 0 and 10 changed)');
  const { describeRef, SOURCE_MIGRATION, SOURCE_ZERO } = await import('../../src/wire/delta-ref.js');
  t.equal(describeRef({ source: SOURCE_MIGRATION | 0, count: 4, dst: 510, src: 500 }), '4 page(s) at 510 <- ramblock#0 page 500');
  t.equal(describeRef({ source: SOURCE_ZERO, count: 50, dst: 550, src: 0 }), '50 zero page(s) at 550');
});

t.test('16 KiB pages, a base whose last page is partial, and copies across ramblocks', async (t) => {
  const s = setup(t);
  // A second ramblock: 20 pages copied from the first image's pages 100..119 (4 KiB pages of seeds 100..119), then 4 new ones.
  const second = writePages(path.join(s.src, 'vga.vram'), [...Array.from({ length: 20 }, (_, i) => 100 + i), 9001, 9002, 9003, 9004]);
  const images = [
    { name: 'pc.ram', path: s.image },
    { name: 'vga.vram', path: second },
  ];
  const opts = { ...sendOpts(s.image), images, pageSize: 16384 };
  const { sent, received } = await migrate(opts, { outputDir: s.out, delta: { bases: [], dirs: [path.dirname(s.other)] } });
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image));
  t.equal(sha256(path.join(s.out, 'vga.vram')), sha256(second));
  const d = sent.stats.delta!;
  t.ok(d.basePages > 0, `${d.basePages} 16 KiB pages from the bases`);
  // vga.vram's first 5 16 KiB pages are pc.ram's pages 25..29: 26, 28 and 29 are in the earlier version (base
  // references), 25 and 27 hold a page changed since (4 KiB pages 100 and 110), go as data in pc.ram and are copied from there.
  // And in pc.ram, 4 KiB pages 500..549 repeat every 10, so 16 KiB pages 130..136 repeat 125..129: 7 more.
  t.equal(d.migrationPages, 2 + 7, 'copies of pages sent earlier in the migration, from the same and from another ramblock');
  t.same(received.stats.delta, d, 'the receiver counts the same');
});

t.test('a link planted in a --base-dir is not followed: the file it names is never read', async (t) => {
  const s = setup(t);
  // The other image moves out of the folder; a link to it takes its place.
  const outside = path.join(s.dir, 'elsewhere.ram');
  fs.renameSync(s.other, outside);
  fs.symlinkSync(outside, s.other);
  const delta: DeltaRecvOptions = { bases: [], dirs: [path.dirname(s.other)] };
  const { sent } = await migrate(sendOpts(s.image), { outputDir: s.out, delta });
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image), 'the output is the image');
  t.match(sent.stats.delta, { basePages: 360, dataPages: 150 }, "no page came from the link's target: its 100 pages went as data");
});

t.test('mfd send/recv --delta --json: the delta counts, valid against the JSON Schema, and the summary line', async (t) => {
  const { mfd, mfdRecv } = await import('../helpers/procs.js');
  const { schemaErrors } = await import('../helpers/schema.js');
  const s = setup(t);
  const oldBytes = fs.readFileSync(s.old);
  const recv = await mfdRecv(t, ['--output', s.out, '--base-dir', path.dirname(s.other), '--json', '--no-progress']);
  const sent = await mfd(t, [
    'send',
    '--to',
    `127.0.0.1:${recv.port}`,
    '--delta',
    '--channels',
    '2',
    '--json',
    '--no-progress',
    `pc.ram=${s.image}`,
  ]).done;
  const got = await recv.done;
  t.equal(sent.code, 0, sent.stderr);
  t.equal(got.code, 0, got.stderr);
  const so = JSON.parse(sent.stdout) as { delta: Record<string, number> };
  const ro = JSON.parse(got.stdout) as { delta: Record<string, number> };
  t.equal(schemaErrors('SendJson', so), '', 'SendJson valid');
  t.equal(schemaErrors('RecvJson', ro), '', 'RecvJson valid');
  t.match(so.delta, { dataPages: 50, basePages: 460, migrationPages: 40, zeroPages: 50 });
  t.same(ro.delta, so.delta);
  t.equal(sha256(path.join(s.out, 'pc.ram')), sha256(s.image));
  // Again against the earlier version alone (the output was replaced by the first run).
  fs.writeFileSync(path.join(s.out, 'pc.ram'), oldBytes);
  const recv2 = await mfdRecv(t, ['--output', s.out, '--delta', '--no-progress']);
  const text = await mfd(t, ['send', '--to', `127.0.0.1:${recv2.port}`, '--delta', '--no-progress', `pc.ram=${s.image}`]).done;
  await recv2.done;
  t.match(
    text.stdout,
    /delta: pages as data=\d+ base references=360 in-migration references=40 zero=\d+; \d+ reference packets \(\d+ bytes\), [\d.]+ [KM]iB saved/,
  );
});
