/**
 * Delta transfer's sampled pre-check (src/delta/sender.ts, receiver.ts): for
 * an image of SAMPLE_MIN_PAGES pages or more, the sender offers the
 * fingerprints of 1 page in 64 (runs of SAMPLE_RUN every stride) in its hello
 * and sends them when the receiver asks (a receiver that does not, an mfd
 * from before the pre-check, is sent none); a receiver none of whose bases' pages at those places match answers
 * at once, fingerprinting nothing more, and every page goes as data (but
 * copies within the migration, when the sample held a page twice). Images
 * here are sparse files of SAMPLE_MIN_PAGES pages with a few non-zero pages.
 */
import { page, PS, requireDeltaOrSkip } from '../helpers/delta.js';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { helloMessage, migrate, rejection, RawSender, send, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { silentLogger } from '../../src/log.js';
import { SAMPLE_MIN_PAGES, SAMPLE_RUN, SAMPLE_STRIDE, entryIndex, fingerprintSample } from '../../src/delta/fingerprint.js';
import { decodeFrame } from '../../src/control/protocol.js';
import { deltaReceiver, type DeltaRecvOptions } from '../../src/delta/receiver.js';
import type { RecvExtension } from '../../src/receiver/extension.js';

requireDeltaOrSkip();

const PAGES = SAMPLE_MIN_PAGES;
/** A sampled place (k-th run of the sample, i-th page in it) and one the sample never reads. */
const sampled = (k: number, i = 0): number => k * SAMPLE_STRIDE + i;
const unsampled = (k: number): number => k * SAMPLE_STRIDE + SAMPLE_RUN + 100;

/** A sparse image of PAGES pages: `pages` maps page index to seed. */
function sparse(file: string, pages: Map<number, number>): string {
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, PAGES * PS);
    for (const [p, seed] of pages) fs.writeSync(fd, page(seed), 0, PS, p * PS);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

const sendOpts = (image: string) => ({
  images: [{ name: 'pc.ram', path: image }],
  channels: 2,
  pageSize: PS,
  compression: 'none' as const,
  methodParams: {},
  zeroPageDetection: 'multifd',
  delta: true,
});

function dirs(t: Parameters<typeof tmpdir>[0]): { src: string; out: string; bases: string } {
  const dir = tmpdir(t);
  const d = { src: path.join(dir, 'src'), out: path.join(dir, 'out'), bases: path.join(dir, 'bases') };
  for (const x of Object.values(d)) fs.mkdirSync(x);
  return d;
}

t.test('the sample: runs of SAMPLE_RUN pages every stride, page indices from the first, zero pages without entries', async (t) => {
  const file = sparse(
    path.join(tmpdir(t), 'img.ram'),
    new Map([
      [sampled(0), 1],
      [sampled(3, SAMPLE_RUN - 1), 2],
      [unsampled(3), 3],
      [sampled(15, 5), 4],
    ]),
  );
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  const seen: number[] = [];
  await fingerprintSample(fd, PAGES * PS, PS, 7, SAMPLE_STRIDE, SAMPLE_RUN, 'img', (e, n) => {
    for (let i = 0; i < n; i++) seen.push(entryIndex(e, i));
  });
  t.same(seen, [7 + sampled(0), 7 + sampled(3, SAMPLE_RUN - 1), 7 + sampled(15, 5)], 'the sampled non-zero pages, never the unsampled one');
  // A batch holds 64 runs: with a stride of 32 pages, 2048 pages a batch (8 batches), the same 3 pages sampled.
  const all: number[] = [];
  const batches: number[] = [];
  await fingerprintSample(fd, PAGES * PS, PS, 0, 32, SAMPLE_RUN, 'img', (e, n) => {
    for (let i = 0; i < n; i++) all.push(entryIndex(e, i));
    batches.push(n);
  });
  t.same(all, [sampled(0), sampled(3, SAMPLE_RUN - 1), sampled(15, 5)], 'stride 32: the same pages');
  t.equal(batches.length, 8, 'in 8 batches');
  const first: number[] = [];
  await fingerprintSample(fd, PAGES * PS, PS, 0, 32, SAMPLE_RUN, 'img', (e, n) => {
    for (let i = 0; i < n; i++) first.push(entryIndex(e, i));
    return n > 0;
  });
  t.same(first, [sampled(0)], 'returning true stops after the batch: the later batches are not read');
});

/**
 * An image and a base (other.ram in d.bases) that share only the image's unsampled pages, at the same
 * places, and hold other pages at the sampled ones: a miss the pre-check accepts. Returns the image's path.
 */
function unsampledOnlyInBase(d: ReturnType<typeof dirs>): string {
  const img = new Map<number, number>();
  const other = new Map<number, number>();
  for (let k = 0; k < 16; k++) {
    img.set(sampled(k), 100 + k);
    other.set(sampled(k), 200 + k);
    img.set(unsampled(k), 300 + k);
    other.set(unsampled(k), 300 + k);
  }
  sparse(path.join(d.bases, 'other.ram'), other);
  return sparse(path.join(d.src, 'pc.ram'), img);
}

t.test('no sampled page matches: the receiver fingerprints nothing, every page goes as data', async (t) => {
  const d = dirs(t);
  // The base holds the image's unsampled pages (a miss the pre-check accepts) and other pages at the sampled places.
  const image = unsampledOnlyInBase(d);
  let frames = 0;
  const delta: DeltaRecvOptions = { bases: [], dirs: [d.bases], onFingerprints: () => void frames++ };
  const { sent, received } = await migrate(sendOpts(image), { outputDir: d.out, delta });
  t.equal(sha256(path.join(d.out, 'pc.ram')), sha256(image), 'the output is the image');
  t.equal(frames, 0, 'no fingerprints frame: the bases were not fingerprinted');
  const counts = { dataPages: 32, basePages: 0, migrationPages: 0, refPackets: 0 };
  t.match(sent.stats.delta, counts, 'sender: every non-zero page as data');
  t.match(received.stats.delta, counts, 'receiver: the same');
  t.equal(sent.stats.normalPages, 32);
});

t.test('a sampled page matches: the bases are fingerprinted whole and their pages travel as references', async (t) => {
  const d = dirs(t);
  const img = new Map<number, number>();
  const old = new Map<number, number>();
  for (let k = 0; k < 16; k++) {
    img.set(sampled(k), 100 + k);
    old.set(sampled(k), k === 3 ? 100 + k : 900 + k); // one sampled page unchanged since
    img.set(unsampled(k), 300 + k);
    old.set(unsampled(k), 300 + k); // the unsampled pages unchanged: found once the bases are fingerprinted whole
  }
  const image = sparse(path.join(d.src, 'pc.ram'), img);
  sparse(path.join(d.out, 'pc.ram'), old);
  let frames = 0;
  const { sent, received } = await migrate(sendOpts(image), {
    outputDir: d.out,
    delta: { bases: [], dirs: [], onFingerprints: () => void frames++ },
  });
  t.equal(sha256(path.join(d.out, 'pc.ram')), sha256(image), 'the output is the image');
  t.ok(frames >= 1, `fingerprints frames: ${frames}`);
  t.match(
    sent.stats.delta,
    { dataPages: 15, migrationPages: 0 },
    'the 15 changed pages as data; the 16 unsampled pages and one sampled from the earlier version',
  );
  t.ok(sent.stats.delta!.basePages >= 17, `base pages ${sent.stats.delta!.basePages} (with the zero pages between them)`);
  t.match(received.stats.delta, { dataPages: 15, basePages: sent.stats.delta!.basePages });
});

t.test('no base matches but the sample holds a page twice: copies within the migration still travel as references', async (t) => {
  const d = dirs(t);
  const img = new Map<number, number>();
  for (let k = 0; k < 16; k++) img.set(sampled(k), 100 + (k % 8)); // each sampled page twice
  img.set(unsampled(0), 100); // and once more where the sample does not look
  const image = sparse(path.join(d.src, 'pc.ram'), img);
  sparse(path.join(d.bases, 'other.ram'), new Map([[sampled(0), 5]]));
  let frames = 0;
  const { sent, received } = await migrate(sendOpts(image), {
    outputDir: d.out,
    delta: { bases: [], dirs: [d.bases], onFingerprints: () => void frames++ },
  });
  t.equal(sha256(path.join(d.out, 'pc.ram')), sha256(image), 'the output is the image');
  t.equal(frames, 0, 'the bases were not fingerprinted');
  t.match(sent.stats.delta, { basePages: 0, migrationPages: 9, dataPages: 8 }, '8 distinct pages as data, 9 copies of them');
  t.match(received.stats.delta, { basePages: 0, migrationPages: 9, dataPages: 8 });
});

t.test('a receiver without --delta is sent no sample (it would refuse it) and every page goes as data', async (t) => {
  const d = dirs(t);
  const image = sparse(
    path.join(d.src, 'pc.ram'),
    new Map([
      [sampled(1), 1],
      [unsampled(2), 2],
    ]),
  );
  const { sent, received } = await migrate(sendOpts(image), { outputDir: d.out });
  t.equal(sha256(path.join(d.out, 'pc.ram')), sha256(image));
  t.equal(sent.stats.delta, undefined);
  t.equal(received.stats.delta, undefined);
  t.equal(sent.stats.normalPages, 2);
});

/**
 * Delta for a receiver from before the sampled pre-check: the hello's
 * deltaSampleOffer (and deltaSample) are unknown to it, so it asks for nothing and fingerprints
 * its bases whole; a `sample` sent to it anyway is refused (here, as the real
 * receiver refuses any frame but `complete` after `ready`).
 */
function olderReceiver(delta: DeltaRecvOptions): RecvExtension {
  const ext = deltaReceiver(delta);
  return {
    open: (setup) => {
      const hello = { ...setup.hello };
      delete hello.deltaSampleOffer;
      delete hello.deltaSample;
      return ext.open({ ...setup, hello });
    },
  };
}

t.test('a receiver that does not ask for the sample (an mfd from before it) is sent none: its bases are fingerprinted whole', async (t) => {
  const d = dirs(t);
  // As in the first migration above, only the unsampled pages are in the base: the sample would have said none matches.
  const image = unsampledOnlyInBase(d);
  let frames = 0;
  const { port, result } = await startReceiver({
    outputDir: d.out,
    extension: olderReceiver({ bases: [], dirs: [d.bases], onFingerprints: () => void frames++ }),
  });
  const sent = await send({ host: '127.0.0.1', port, logger: silentLogger, ...sendOpts(image) });
  const received = await result;
  t.equal(sha256(path.join(d.out, 'pc.ram')), sha256(image), 'the output is the image');
  t.ok(frames >= 1, `the bases were fingerprinted whole (${frames} fingerprints frames)`);
  t.match(sent.stats.delta, { dataPages: 16, migrationPages: 0 }, 'the 16 sampled pages the base lacks as data');
  t.ok(sent.stats.delta!.basePages >= 16, `the 16 unsampled pages as base references (${sent.stats.delta!.basePages} with zero pages)`);
  t.match(received.stats.delta, { dataPages: 16, basePages: sent.stats.delta!.basePages });
});

t.test('a hello that offers a sample is asked for it first; the sample then decides', async (t) => {
  const d = dirs(t);
  sparse(path.join(d.bases, 'other.ram'), new Map([[0, 1]]));
  const { port, result } = await startReceiver({ outputDir: d.out, delta: { bases: [], dirs: [d.bases] } });
  const rs = new RawSender(port);
  t.teardown(() => rs.close());
  t.same(
    await rs.hello({ delta: true, deltaSampleOffer: true }),
    { type: 'sampleRequest' },
    "the receiver's first frame asks for the sample",
  );
  const answer = rs.control.next();
  rs.control.send({ type: 'sample', stride: SAMPLE_STRIDE, run: SAMPLE_RUN, entries: '' });
  t.match(await answer, { type: 'ready', delta: { fingerprints: 0, skipped: true } }, 'an empty sample matches nothing');
  rs.control.send({ type: 'error', code: 'ERR_TEST', message: 'done' });
  t.match(await rejection(result), { code: 'ERR_REMOTE', remoteCode: 'ERR_TEST' }, 'the receiver then waits for the channels (ended here)');
});

t.test('a hello that announces a sample and sends something else fails the receiver, naming both', async (t) => {
  const d = dirs(t);
  sparse(path.join(d.bases, 'other.ram'), new Map([[0, 1]]));
  const { port, result } = await startReceiver({ outputDir: d.out, delta: { bases: [], dirs: [d.bases] } });
  const rs = new RawSender(port);
  t.teardown(() => rs.close());
  const answer = rs.hello({ delta: true, deltaSample: true });
  while (!rs.control) await new Promise((r) => setTimeout(r, 10));
  rs.control.send({ type: 'busy', what: 'not a sample' });
  const e = await rejection(result);
  t.equal(e.code, 'ERR_CONTROL_UNEXPECTED');
  t.match(e.message, /received "busy", expected "sample"/);
  t.match(await answer, { type: 'error', code: 'ERR_CONTROL_UNEXPECTED' }, 'the sender is told why');
});

t.test('the sample frame, hello.deltaSample and ready.delta.skipped are checked', async (t) => {
  const frame = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
  const entries = Buffer.alloc(32, 1).toString('base64');
  t.match(decodeFrame(frame({ type: 'sample', stride: 1024, run: 16, entries })), { type: 'sample', stride: 1024, run: 16, entries });
  t.match(
    decodeFrame(frame({ type: 'sample', stride: 1024, run: 16, entries: '' })),
    { entries: '' },
    'an empty sample: every sampled page zero',
  );
  t.throws(() => decodeFrame(frame({ type: 'sample', stride: 0, run: 1, entries })), {
    code: 'ERR_CONTROL_MESSAGE',
    message: /sample.stride received 0/,
  });
  t.throws(() => decodeFrame(frame({ type: 'sample', stride: 16, run: 17, entries })), {
    message: /sample.run received 17, expected an integer in 1..16/,
  });
  t.throws(() => decodeFrame(frame({ type: 'sample', stride: 16, run: 1, entries: Buffer.alloc(20).toString('base64') })), {
    message: /sample.entries holds 20 bytes, expected a multiple of 16/,
  });
  t.throws(() => decodeFrame(frame({ type: 'sample', stride: 16, run: 1, entries: 'a'.repeat(3 << 20) })), {
    message: /sample.entries received a string/,
  });
  const hello = helloMessage({ uuid: '00000000-0000-4000-8000-000000000000', ramblocks: [] });
  t.match(decodeFrame(frame({ ...hello, delta: true, deltaSample: true })), { delta: true, deltaSample: true });
  t.match(decodeFrame(frame({ ...hello, delta: true, deltaSampleOffer: true })), { delta: true, deltaSampleOffer: true });
  t.notOk('deltaSampleOffer' in decodeFrame(frame({ ...hello, deltaSampleOffer: true })), 'deltaSampleOffer without delta is dropped');
  t.throws(() => decodeFrame(frame({ ...hello, delta: true, deltaSampleOffer: 'yes' })), {
    message: /hello.deltaSampleOffer received "yes", expected true or false/,
  });
  t.same(decodeFrame(frame({ type: 'sampleRequest' })), { type: 'sampleRequest' });
  t.notOk('deltaSample' in decodeFrame(frame({ ...hello, deltaSample: true })), 'deltaSample without delta is dropped');
  t.throws(() => decodeFrame(frame({ ...hello, delta: true, deltaSample: 1 })), {
    message: /hello.deltaSample received 1, expected true or false/,
  });
  t.match(decodeFrame(frame({ type: 'ready', delta: { bases: [], fingerprints: 0, skipped: true } })), { delta: { skipped: true } });
  t.throws(() => decodeFrame(frame({ type: 'ready', delta: { bases: [{ name: 'a', pages: 9 }], fingerprints: 3, skipped: true } })), {
    message: /ready.delta.skipped received true with 3 fingerprints, expected true with 0/,
  });
});
