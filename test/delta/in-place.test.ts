/**
 * Delta transfer written in place (`mfd recv --delta --in-place`): the
 * output's existing file is its base and its target, written where it is (no
 * temporary file, the same inode). A page of it is referred to for another
 * page only while it stays as it is (the sender's rule, planDelta); a sender
 * that breaks the rule copies a page overwritten meanwhile, which fails the
 * digest and keeps the NAME.mfd-partial marker; running the migration again
 * completes it. A --base that is the output itself is refused.
 */
import { page, PS, requireDeltaOrSkip, writePages } from '../helpers/delta.js';
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { migrate, rejection, RawSender, send, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { silentLogger } from '../../src/log.js';
import { ENTRY_SIZE, fingerprintPages, sortEntries } from '../../src/delta/fingerprint.js';
import { planDelta, STASH_SHARE } from '../../src/delta/sender.js';
import { decodeRefs } from '../../src/wire/delta-ref.js';
import type { SendBlock } from '../../src/sender/pipeline.js';
import { checkReadyDelta, decodeStashPages, type ReadyDelta } from '../../src/control/delta.js';
import { decodeFrame } from '../../src/control/protocol.js';
import type { DeltaRecvOptions } from '../../src/delta/receiver.js';
import type { RemoteError } from '../../src/errors.js';

requireDeltaOrSkip();

const sendOpts = (image: string, channels = 2) => ({
  images: [{ name: 'pc.ram', path: image }],
  channels,
  pageSize: PS,
  compression: 'none' as const,
  methodParams: {},
  zeroPageDetection: 'multifd',
  delta: true,
});

/** A folder with `out/pc.ram` (pages `base`) and the image `pc.ram` (pages `image`); seeds as writePages takes them. */
function pair(t: Test, base: number[], image: number[]): { out: string; output: string; image: string } {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  return { out, output: writePages(path.join(out, 'pc.ram'), base), image: writePages(path.join(dir, 'pc.ram'), image) };
}

/** Runs a delta migration of `image` into `out`, in place; checks it is byte-identical, written where it was, marker gone. */
async function inPlace(t: Test, p: { out: string; output: string; image: string }, delta: DeltaRecvOptions = { bases: [], dirs: [] }) {
  const ino = fs.statSync(p.output).ino;
  const r = await migrate({ ...sendOpts(p.image), channels: 1 }, { outputDir: p.out, inPlace: true, delta });
  t.equal(sha256(p.output), sha256(p.image), 'the output is the image');
  t.equal(fs.statSync(p.output).ino, ino, 'written in place: the same file');
  t.same(fs.readdirSync(p.out), ['pc.ram'], 'no marker, no temporary file left');
  return r;
}

t.test('in place: same-page and moved references, zero pages over non-zero ones, byte-identical', async (t) => {
  // Base: 1..12. Image: pages 0..5 unchanged; page 6 <- base page 1 (which stays: a moved reference); page 7
  // <- base page 3, which changes (50): stashed before any page is written; pages 8 and 10 zero (over 9 and 11); page 9 changed.
  const p = pair(t, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [1, 2, 3, 50, 5, 6, 2, 4, -1, 51, -1, 12]);
  let stashed = -1;
  const { sent, received } = await inPlace(t, p, { bases: [], dirs: [], afterStash: (n) => void (stashed = n) });
  t.match(sent.stats.delta, { basePages: 8, dataPages: 2, zeroPages: 2 }, "page 7 refers to base page 3's old bytes, from the stash");
  t.match(received.stats.delta, { basePages: 8, zeroPages: 2 });
  t.equal(stashed, 1, 'base page 3 stashed');
});

t.test('in place: an image that grew and one that shrank', async (t) => {
  // Grew: 6 pages to 10; page 7 <- base page 2 (stays), pages 6, 8, 9 new.
  const grew = pair(t, [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 60, 6, 61, 3, 62, -1]);
  const g = await inPlace(t, grew);
  t.match(g.sent.stats.delta, { basePages: 6, dataPages: 3 });
  // Shrank: 12 pages to 7 and 100 bytes; page 5 would be base page 10, past the size the output now has: data.
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const output = writePages(path.join(out, 'pc.ram'), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const image = writePages(path.join(dir, 'pc.ram'), [1, 2, 3, 4, 5, 11, 7], 100);
  const s = await inPlace(t, { out, output, image });
  t.equal(fs.statSync(output).size, 7 * PS + 100, 'truncated to the image');
  t.match(s.sent.stats.delta, { basePages: 6, dataPages: 2 });
});

t.test('planDelta: a page of a base written in place is referred to for another page while it stays or is stashed', async (t) => {
  // Base (the output, written in place): 1 2 3 4. Image: 1 9 3 2 2. Pages 3 and 4 have base page 1's bytes,
  // but image page 1 changes: base page 1 is stashed (the receiver copies it aside before any page is
  // written), and both refer to it. Without `inPlace` (a read-only base) the same references, no stash.
  const base = Buffer.alloc(4 * ENTRY_SIZE);
  await fingerprintPages(Buffer.concat([page(1), page(2), page(3), page(4)]), PS, 4, 0, base);
  await sortEntries(base, 4);
  const plan = async (offer: ReadyDelta, seeds = [1, 9, 3, 2, 2]) => {
    const entries = Buffer.alloc(seeds.length * ENTRY_SIZE);
    await fingerprintPages(Buffer.concat(seeds.map((s) => page(s))), PS, seeds.length, 0, entries);
    const block = { source: { size: seeds.length * PS }, digest: { add: () => {} } } as unknown as SendBlock;
    const crcs = new Uint32Array(seeds);
    const prints = { entries, count: seeds.length, crcs: [crcs], nonzero: new Uint8Array(seeds.length).fill(1) };
    const p = await planDelta([block], PS, prints, base, 4, offer);
    return { p, refs: p.packets.flatMap((x) => decodeRefs(x.payload)).map((r) => [r.dst, r.count, r.source, r.src]) };
  };
  const moved = [
    [0, 1, 0, 0],
    [2, 1, 0, 2],
    [3, 1, 0, 1],
    [4, 1, 0, 1],
  ];
  const inPlaceOffer = { bases: [{ name: 'output:pc.ram', pages: 4, inPlace: 0 }], fingerprints: 4 };
  const held = await plan(inPlaceOffer);
  t.same(held.refs, moved, 'pages 0 and 2 refer to their own pages; pages 3 and 4 to base page 1');
  t.same([...held.p.stash], [1], 'base page 1 (overwritten by image page 1) is stashed');
  t.match(held.p, { basePages: 4, migrationPages: 0 });
  const readOnly = await plan({ bases: [{ name: 'base', pages: 4 }], fingerprints: 4 });
  t.same(readOnly.refs, moved, 'a read-only base: the same references');
  t.same([...readOnly.p.stash], [], 'nothing stashed');
  // Past the cap (1 / STASH_SHARE of the base's pages: 1 of 4): image 9 10 1 2 needs base pages 0 and 1, both
  // overwritten; page 0 (the lowest) is stashed, the reference to page 1 is dropped (image page 3 goes as data).
  const capped = await plan(inPlaceOffer, [9, 10, 1, 2]);
  t.equal(STASH_SHARE, 4);
  t.same([...capped.p.stash], [0], 'the lowest page stashed');
  t.same(capped.refs, [[2, 1, 0, 0]], 'page 2 refers to stashed base page 0; page 3 (base page 1, not stashed) goes as data');
});

t.test(
  'a sender that ignores the rule copies a page overwritten meanwhile: the digest fails, the marker stays, a rerun completes',
  async (t) => {
    // Base 1..8; image page 6 has base page 2's bytes, and page 2 changes. Base page 2 is overwritten on disk
    // once fingerprinted (as a data packet could have overwritten it before the copy read it).
    const p = pair(t, [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 50, 4, 5, 6, 3, 8]);
    const overwrite = () => {
      const fd = fs.openSync(p.output, 'r+');
      fs.writeSync(fd, page(777), 0, PS, 2 * PS);
      fs.closeSync(fd);
    };
    const kept = pair(t, [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 50, 4, 5, 6, 3, 8]);
    const overwriteKept = () => {
      const fd = fs.openSync(kept.output, 'r+');
      fs.writeSync(fd, page(777), 0, PS, 2 * PS);
      fs.closeSync(fd);
    };
    // A sender that keeps the rule: base page 2 is stashed before any page is written, and page 6 is copied
    // from the stash, so the overwrite after it does no harm.
    const ok = await inPlace(t, kept, { bases: [], dirs: [], afterStash: overwriteKept });
    t.match(ok.sent.stats.delta, { basePages: 7, dataPages: 1 });
    // An older sender: the offer does not say the base is written in place.
    const older: DeltaRecvOptions = {
      bases: [],
      dirs: [],
      afterOffer: (offer) => {
        for (const b of offer.bases) delete b.inPlace;
        overwrite();
      },
    };
    const { port, result } = await startReceiver({ outputDir: p.out, inPlace: true, delta: older, journal: false });
    const sender = await rejection(send({ host: '127.0.0.1', port, logger: silentLogger, ...sendOpts(p.image) }));
    const receiver = await rejection(result);
    t.equal(receiver.code, 'ERR_DIGEST', receiver.message);
    t.equal((sender as RemoteError).remoteCode, 'ERR_DIGEST', sender.message);
    t.ok(fs.existsSync(path.join(p.out, 'pc.ram.mfd-partial')), 'the marker says the output is incomplete');
    // The same migration again: the pages still right (page 2 too, its data written before the digest failed) match again.
    const again = await inPlace(t, p);
    t.match(again.sent.stats.delta, { basePages: 7, dataPages: 1 }, 'page 6 (the bad copy) goes as data');
  },
);

t.test('in place: a --base that is the output itself is refused, naming both', async (t) => {
  const p = pair(t, [1, 2, 3], [1, 2, 4]);
  const link = path.join(path.dirname(p.out), 'link.ram');
  fs.symlinkSync(p.output, link);
  for (const file of [p.output, link]) {
    const { port, result } = await startReceiver({
      outputDir: p.out,
      inPlace: true,
      delta: { bases: [{ name: 'old', path: file }], dirs: [] },
    });
    await rejection(send({ host: '127.0.0.1', port, logger: silentLogger, ...sendOpts(p.image) }));
    const e = await rejection(result);
    t.equal(e.code, 'ERR_USAGE', e.message);
    t.match(e.message, `--base old=${file} is the output "${p.output}" of ram block "pc.ram", written in place`);
    t.same(fs.readdirSync(p.out), ['pc.ram'], 'refused before the output was touched: no marker');
  }
  // A --base-dir holding the output is fine: that file is the output's base once.
  const r = await inPlace(t, p, { bases: [], dirs: [p.out] });
  t.equal(r.received.stats.delta!.basePages, 2);
});

t.test('in place: after a failure that kept the journal, mfd send --resume (without --delta) completes', async (t) => {
  const p = pair(
    t,
    Array.from({ length: 40 }, (_, i) => i),
    Array.from({ length: 40 }, (_, i) => (i % 4 === 0 ? 500 + i : i)),
  );
  const other = path.join(path.dirname(p.out), 'other.ram');
  const delta: DeltaRecvOptions = { bases: [{ name: 'other', path: other }], dirs: [], afterOffer: () => fs.truncateSync(other, PS) };
  // The image's page 0 is base "other"'s page 1: the copy then fails the read (ERR_DELTA_BASE_SHORT).
  fs.writeFileSync(other, Buffer.concat([page(1234), page(500), page(1235)]));
  const first = await startReceiver({ outputDir: p.out, inPlace: true, delta });
  await rejection(send({ host: '127.0.0.1', port: first.port, logger: silentLogger, ...sendOpts(p.image) }));
  t.equal((await rejection(first.result)).code, 'ERR_DELTA_BASE_SHORT');
  t.ok(fs.existsSync(path.join(p.out, 'pc.ram.mfd-partial')), 'the marker stays');
  t.ok(fs.existsSync(path.join(p.out, '.pc.ram.mfd-journal')), 'the journal is kept');
  const again = await startReceiver({ outputDir: p.out, inPlace: true });
  const sent = await send({ host: '127.0.0.1', port: again.port, logger: silentLogger, ...sendOpts(p.image), delta: false, resume: true });
  await again.result;
  t.ok(sent.stats.resumedPages! > 0, `${sent.stats.resumedPages} pages held from the delta attempt`);
  t.equal(sha256(p.output), sha256(p.image), 'byte-identical');
  t.same(fs.readdirSync(p.out), ['pc.ram'], 'no marker left');
});

t.test('ready.delta.bases[].inPlace is checked: a ram block index, each at most once', async (t) => {
  const ready = (...inPlace: unknown[]) =>
    checkReadyDelta({ bases: inPlace.map((k, i) => ({ name: `b${i}`, pages: 1, inPlace: k })), fingerprints: 0 });
  t.same(ready(0, 1).bases, [
    { name: 'b0', pages: 1, inPlace: 0 },
    { name: 'b1', pages: 1, inPlace: 1 },
  ]);
  t.same(ready(undefined).bases, [{ name: 'b0', pages: 1 }], 'absent: a base only read');
  for (const bad of [-1, 1.5, '0', 4096]) t.throws(() => ready(bad), /ready\.delta\.bases\[0\]\.inPlace received/, String(bad));
  t.throws(() => ready(2, 2), /bases\[1\]\.inPlace received 2, which an earlier base already names/);
});

t.test('in place: pages moved within the output travel as references, from the stash; past the cap, as data', async (t) => {
  // 64 pages; the image's pages 0..11 are the base's rotated by 3 (page i holds base page (i + 3) % 12): 12
  // moved references whose sources are overwritten, under the cap (16 of 64), all from the stash.
  const seeds = Array.from({ length: 64 }, (_, i) => i + 1);
  const rotated = seeds.map((s, i) => (i < 12 ? seeds[(i + 3) % 12]! : s));
  const p = pair(t, seeds, rotated);
  let stashed = -1;
  const ino = fs.statSync(p.output).ino;
  const r = await migrate(
    { ...sendOpts(p.image), channels: 4 },
    {
      outputDir: p.out,
      inPlace: true,
      delta: {
        bases: [],
        dirs: [],
        afterStash: (n) => {
          stashed = n;
          t.equal(fs.statSync(path.join(p.out, '.pc.ram.mfd-stash')).size, n * PS, 'the stash file beside the output, a page each');
        },
      },
    },
  );
  t.equal(sha256(p.output), sha256(p.image), 'the output is the image');
  t.equal(fs.statSync(p.output).ino, ino, 'written in place');
  t.same(fs.readdirSync(p.out), ['pc.ram'], 'no stash, marker or temporary file left');
  t.equal(stashed, 12, 'the 12 rotated pages stashed');
  t.match(r.sent.stats.delta, { basePages: 64, dataPages: 0, migrationPages: 0 }, 'every page a base reference');
  t.match(r.received.stats.delta, { basePages: 64, dataPages: 0 });
  // The whole image rotated by one: 64 pages overwritten, 16 stashed (the cap), the others as data.
  const all = pair(
    t,
    seeds,
    seeds.map((_, i) => seeds[(i + 1) % 64]!),
  );
  const capped = await inPlace(t, all);
  t.match(capped.sent.stats.delta, { basePages: 16, dataPages: 48 }, '16 pages from the stash, 48 as data');
});

t.test('a stash that lies is refused, naming what was received and expected; the stash file is removed', async (t) => {
  const b64 = (...pages: number[]) => {
    const b = Buffer.alloc(pages.length * 4);
    pages.forEach((x, i) => b.writeUInt32LE(x, i * 4));
    return b.toString('base64');
  };
  const cases: { what: string; frames: { pages: string; last: boolean }[]; code: string; message: RegExp; inPlace?: boolean }[] = [
    {
      what: 'out of range',
      frames: [{ pages: b64(1, 8), last: true }],
      code: 'ERR_CONTROL_MESSAGE',
      message: /stash page 1 received base page 8, expected below 8/,
    },
    {
      what: 'a duplicate, in a later frame (the stash file exists by then)',
      frames: [
        { pages: b64(1, 2), last: false },
        { pages: b64(2), last: true },
      ],
      code: 'ERR_CONTROL_MESSAGE',
      message: /stash page 2 received base page 2 after 2, expected ascending pages, each once/,
    },
    {
      what: 'descending',
      frames: [{ pages: b64(5, 3), last: true }],
      code: 'ERR_CONTROL_MESSAGE',
      message: /received base page 3 after 5/,
    },
    {
      what: 'too long',
      frames: [{ pages: b64(...Array.from({ length: 9 }, (_, i) => i)), last: true }],
      code: 'ERR_CONTROL_MESSAGE',
      message: /stash received 9 pages, expected at most 8 \(the pages of the bases written in place\)/,
    },
    {
      what: 'to a receiver whose output is not written in place',
      frames: [{ pages: b64(1), last: true }],
      code: 'ERR_CONTROL_UNEXPECTED',
      message: /received "stash", but no base of this migration is written in place/,
      inPlace: false,
    },
  ];
  for (const c of cases) {
    const p = pair(t, [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]);
    const { port, result } = await startReceiver({
      outputDir: p.out,
      inPlace: c.inPlace ?? true,
      delta: { bases: [], dirs: [] },
      journal: false,
    });
    const rs = new RawSender(port);
    t.teardown(() => rs.close());
    let m = await rs.hello({ delta: true, pageSize: PS, ramblocks: [{ name: 'pc.ram', size: 8 * PS }] });
    while (m.type === 'fingerprints') m = await rs.control.next();
    t.match(m, { type: 'ready', delta: { bases: [{ name: 'output:pc.ram', pages: 8 }] } }, `${c.what}: ready`);
    for (const f of c.frames) rs.control.send({ type: 'stash', ...f });
    const e = await rejection(result);
    t.equal(e.code, c.code, `${c.what}: ${e.message}`);
    t.match(e.message, c.message);
    t.notOk(
      fs.readdirSync(p.out).some((f) => f.includes('mfd-stash')),
      `${c.what}: no stash file left`,
    );
  }
});

t.test('a stash changed under the receiver fails the digest, never the image silently; the stash file is removed', async (t) => {
  const seeds = Array.from({ length: 16 }, (_, i) => i + 1);
  const p = pair(t, seeds, [2, 1, ...seeds.slice(2)]);
  const stash = path.join(p.out, '.pc.ram.mfd-stash');
  const delta: DeltaRecvOptions = {
    bases: [],
    dirs: [],
    afterStash: (n) => {
      t.equal(n, 2, 'base pages 0 and 1 stashed');
      const fd = fs.openSync(stash, 'r+');
      fs.writeSync(fd, page(999), 0, PS, 0);
      fs.closeSync(fd);
    },
  };
  const { port, result } = await startReceiver({ outputDir: p.out, inPlace: true, delta, journal: false });
  const sender = await rejection(send({ host: '127.0.0.1', port, logger: silentLogger, ...sendOpts(p.image) }));
  const receiver = await rejection(result);
  t.equal(receiver.code, 'ERR_DIGEST', receiver.message);
  t.equal((sender as RemoteError).remoteCode, 'ERR_DIGEST');
  t.notOk(fs.existsSync(stash), 'the stash file is removed');
});

t.test('the stash and stashed frames are checked', async (t) => {
  const frame = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
  const pages = Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]).toString('base64');
  t.same(decodeFrame(frame({ type: 'stash', pages, last: true })), { type: 'stash', pages, last: true });
  t.same([...decodeStashPages(pages)], [1, 2], 'u32 little-endian page indices');
  t.same(decodeFrame(frame({ type: 'stashed', pages: 2 })), { type: 'stashed', pages: 2 });
  t.throws(() => decodeFrame(frame({ type: 'stash', pages, last: 1 })), /stash\.last received number, expected a boolean/);
  t.throws(
    () => decodeFrame(frame({ type: 'stash', pages: Buffer.alloc(6).toString('base64'), last: true })),
    /holds 6 bytes, expected a multiple of 4/,
  );
  t.throws(() => decodeFrame(frame({ type: 'stash', pages: '!!!!', last: true })), /stash\.pages received a string of 4 characters/);
  t.throws(() => decodeFrame(frame({ type: 'stashed', pages: -1 })), /stashed\.pages received -1/);
  t.throws(() => decodeFrame(frame({ type: 'stashed', pages: [[[1]]] })), /stashed\.pages received an array of 1/);
});

t.test('a stash in several frames is copied frame by frame and answered with its count once the last is in', async (t) => {
  const p = pair(t, [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]);
  const { port, result } = await startReceiver({ outputDir: p.out, inPlace: true, delta: { bases: [], dirs: [] }, journal: false });
  const rs = new RawSender(port);
  t.teardown(() => rs.close());
  let m = await rs.hello({ delta: true, pageSize: PS, ramblocks: [{ name: 'pc.ram', size: 8 * PS }] });
  while (m.type === 'fingerprints') m = await rs.control.next();
  t.match(m, { type: 'ready' });
  const u32 = (...pages: number[]) => {
    const b = Buffer.alloc(pages.length * 4);
    pages.forEach((x, i) => b.writeUInt32LE(x, i * 4));
    return b.toString('base64');
  };
  rs.control.send({ type: 'stash', pages: u32(1, 3), last: false });
  rs.control.send({ type: 'stash', pages: '', last: false });
  rs.control.send({ type: 'stash', pages: u32(6), last: true });
  t.same(await rs.control.next(), { type: 'stashed', pages: 3 }, 'answered once the last frame is in');
  const stash = path.join(p.out, '.pc.ram.mfd-stash');
  t.same(fs.readFileSync(stash), Buffer.concat([page(2), page(4), page(7)]), "page i of the stash is the list's i-th page");
  rs.control.send({ type: 'error', code: 'ERR_TEST', message: 'done' });
  t.match(await rejection(result), { code: 'ERR_REMOTE', remoteCode: 'ERR_TEST' });
  t.notOk(fs.existsSync(stash), 'removed when the migration ends');
});

t.test('a receiver that does not answer the stash: the sender times out naming the "stashed" it waited for', async (t) => {
  const p = pair(t, [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 50, 5, 6, 2, 4]);
  const { port, result } = await startReceiver({
    outputDir: p.out,
    inPlace: true,
    delta: { bases: [], dirs: [], afterStash: () => new Promise((r) => setTimeout(r, 1500)) },
  });
  result.catch(() => {});
  const e = await rejection(send({ host: '127.0.0.1', port, logger: silentLogger, ...sendOpts(p.image, 1), timeoutMs: 500 }));
  t.match(e, { message: /no answer from the receiver for 500 ms, waiting for "stashed", the answer to the stash/ });
  await result.catch(() => {});
});
