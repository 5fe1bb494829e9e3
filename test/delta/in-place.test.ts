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
import { migrate, rejection, send, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { silentLogger } from '../../src/log.js';
import { ENTRY_SIZE, fingerprintPages, sortEntries } from '../../src/delta/fingerprint.js';
import { planDelta } from '../../src/delta/sender.js';
import { decodeRefs, SOURCE_MIGRATION } from '../../src/wire/delta-ref.js';
import type { SendBlock } from '../../src/sender/pipeline.js';
import { checkReadyDelta, type ReadyDelta } from '../../src/control/delta.js';
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
  // <- base page 3, which changes (50): not a reference to it; pages 8 and 10 zero (over 9 and 11); page 9 changed.
  const p = pair(t, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [1, 2, 3, 50, 5, 6, 2, 4, -1, 51, -1, 12]);
  const { sent, received } = await inPlace(t, p);
  t.match(sent.stats.delta, { basePages: 7, dataPages: 3, zeroPages: 2 }, "page 7 (base page 3's old bytes) goes as data");
  t.match(received.stats.delta, { basePages: 7, zeroPages: 2 });
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

t.test('planDelta: a page of a base written in place is referred to for another page only while it stays', async (t) => {
  // Base (the output, written in place): 1 2 3 4. Image: 1 9 3 2 2. Page 3 and 4 have base page 1's bytes,
  // but image page 1 changes: with `inPlace` no reference to base page 1 is made; page 3 goes as data and
  // page 4 refers to it (a copy within the migration). Without `inPlace` (a read-only base) both refer to it.
  const base = Buffer.alloc(4 * ENTRY_SIZE);
  await fingerprintPages(Buffer.concat([page(1), page(2), page(3), page(4)]), PS, 4, 0, base);
  await sortEntries(base, 4);
  const plan = async (offer: ReadyDelta) => {
    const entries = Buffer.alloc(5 * ENTRY_SIZE);
    await fingerprintPages(Buffer.concat([page(1), page(9), page(3), page(2), page(2)]), PS, 5, 0, entries);
    const block = { source: { size: 5 * PS }, digest: { add: () => {} } } as unknown as SendBlock;
    const crcs = new Uint32Array([1, 9, 3, 2, 2]);
    const prints = { entries, count: 5, crcs: [crcs], nonzero: new Uint8Array([1, 1, 1, 1, 1]) };
    const p = await planDelta([block], PS, prints, base, 4, offer);
    return { p, refs: p.packets.flatMap((x) => decodeRefs(x.payload)).map((r) => [r.dst, r.count, r.source, r.src]) };
  };
  const held = await plan({ bases: [{ name: 'output:pc.ram', pages: 4, inPlace: 0 }], fingerprints: 4 });
  t.same(
    held.refs,
    [
      [0, 1, 0, 0],
      [2, 1, 0, 2],
      [4, 1, SOURCE_MIGRATION, 3],
    ],
    'pages 0 and 2 refer to their own pages; page 4 to image page 3; nothing to base page 1',
  );
  t.match(held.p, { basePages: 2, migrationPages: 1 });
  const readOnly = await plan({ bases: [{ name: 'base', pages: 4 }], fingerprints: 4 });
  t.same(
    readOnly.refs,
    [
      [0, 1, 0, 0],
      [2, 1, 0, 2],
      [3, 1, 0, 1],
      [4, 1, 0, 1],
    ],
    'a read-only base: pages 3 and 4 refer to base page 1',
  );
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
    // A sender that keeps the rule: page 6 goes as data, so the overwrite does no harm.
    const kept = pair(t, [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 50, 4, 5, 6, 3, 8]);
    const overwriteKept = () => {
      const fd = fs.openSync(kept.output, 'r+');
      fs.writeSync(fd, page(777), 0, PS, 2 * PS);
      fs.closeSync(fd);
    };
    const ok = await inPlace(t, kept, { bases: [], dirs: [], afterOffer: overwriteKept });
    t.match(ok.sent.stats.delta, { basePages: 6, dataPages: 2 });
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
