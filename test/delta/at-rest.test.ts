/**
 * Delta transfer at rest (src/delta/at-rest.ts): a migration file that refers
 * to base files. A chain of checkpoints restores byte for byte; a base that
 * differs from the one the file was saved against is refused by its SHA-256
 * (or size), naming it, before any output exists; a base not given, missing
 * or a link is refused, naming it; a base changed or shrunk after the check
 * fails verification or the read, never the image; a fingerprint collision
 * at save is caught and the page goes as data; `mfd inspect` shows the bases
 * and the references.
 */
import { page, PS, requireDeltaOrSkip, writePages } from '../helpers/delta.js';
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { sha256, tmpdir } from '../helpers/index.js';
import { schemaErrors } from '../helpers/schema.js';
import { flip, mfd, restore, save } from '../helpers/files.js';
import { ENTRY_SIZE, entryIndex, fingerprintPages } from '../../src/delta/fingerprint.js';
import { planDelta } from '../../src/delta/sender.js';
import type { SendBlock } from '../../src/sender/pipeline.js';
import { decodeHeader, peekHeader, HEADER_FIXED_SIZE } from '../../src/file/format.js';
import { formatFileReport, inspectFile } from '../../src/inspect/file.js';
import type { MfdError } from '../../src/errors.js';

requireDeltaOrSkip();

/**
 * Checkpoint k of a VM: 400 pages of pc.ram (every 10th changes from one
 * checkpoint to the next, pages 300..339 copies of 300..303, 340..359 zero)
 * and 30 pages and 100 bytes of vga (page 3 changes).
 */
function checkpoint(dir: string, k: number): { name: string; path: string }[] {
  fs.mkdirSync(dir, { recursive: true });
  const pc: number[] = [];
  for (let i = 0; i < 400; i++) {
    if (i >= 340 && i < 360) pc.push(-1);
    else if (i >= 300 && i < 340) pc.push(300 + (i % 4));
    else pc.push(i % 10 === 0 ? 100_000 * k + i : i);
  }
  const vga = Array.from({ length: 30 }, (_, i) => (i === 3 ? 9000 + k : 5000 + i));
  return [
    { name: 'pc.ram', path: writePages(path.join(dir, 'pc.ram'), pc) },
    { name: 'vga', path: writePages(path.join(dir, 'vga'), vga, 100) },
  ];
}

async function rejection(p: Promise<unknown>): Promise<MfdError> {
  try {
    await p;
  } catch (e) {
    return e as MfdError;
  }
  throw new Error('expected a rejection');
}

function headerOf(file: string) {
  const b = fs.readFileSync(file);
  return decodeHeader(b.subarray(0, peekHeader(b.subarray(0, HEADER_FIXED_SIZE), 0)), 0);
}

const fileSha = (f: string): string => createHash('sha256').update(fs.readFileSync(f)).digest('hex');

/** ckpt1 full, ckpt2 a delta on ckpt1's images, each restored; returns the folders. */
async function twoCheckpoints(t: Test) {
  const dir = tmpdir(t);
  const v1 = checkpoint(path.join(dir, 'v1'), 1);
  const v2 = checkpoint(path.join(dir, 'v2'), 2);
  const f1 = path.join(dir, 'ckpt1.mfd');
  const f2 = path.join(dir, 'ckpt2.mfd');
  await save(v1, f1);
  const saved = await save(v2, f2, { delta: { bases: v1.map((b) => ({ name: b.name, path: b.path })) } });
  const r1 = path.join(dir, 'r1');
  fs.mkdirSync(r1);
  await restore(f1, r1);
  return { dir, v1, v2, f1, f2, r1, saved };
}

t.test('a chain of three checkpoints, each a delta on the one before, restores byte for byte', async (t) => {
  const { dir, v1, v2, f1, f2, r1, saved } = await twoCheckpoints(t);
  const v3 = checkpoint(path.join(dir, 'v3'), 3);
  const f3 = path.join(dir, 'ckpt3.mfd');
  const saved3 = await save(v3, f3, { delta: { bases: v2.map((b) => ({ name: b.name, path: b.path })) } });
  // pc.ram: 34 pages changed (every 10th of 0..299 and of 360..399) go as data, the other 346 non-zero pages (the
  // copies of 300..303 too) come from the base, and the 20 zero pages beside them go as a zero reference;
  // vga: page 3 changed, its 29 other pages and the partial last one from the base.
  t.match(saved.stats.delta, { dataPages: 34 + 1, basePages: 346 + 30, migrationPages: 0, zeroPages: 20 });
  t.match(saved3.stats.delta, saved.stats.delta, 'ckpt3 on ckpt2: the same shape');
  t.ok(fs.statSync(f2).size < fs.statSync(f1).size / 5, `ckpt2 is ${fs.statSync(f2).size} bytes, ckpt1 ${fs.statSync(f1).size}`);

  const h2 = headerOf(f2);
  t.equal(h2.version, 2, 'a delta file is version 2');
  t.same(
    h2.delta!.bases.map((b) => ({ name: b.name, size: b.size, sha256: b.sha256, path: b.path })),
    v1.map((b) => ({ name: b.name, size: fs.statSync(b.path).size, sha256: fileSha(b.path), path: path.resolve(b.path) })),
    'the header names each base with its size, SHA-256 and where it was read',
  );
  t.equal(headerOf(f1).version, 1, 'a file without references stays version 1');

  for (const b of v1) t.equal(sha256(path.join(r1, b.name)), sha256(b.path), `ckpt1 ${b.name} restored`);
  const r2 = path.join(dir, 'r2');
  const r3 = path.join(dir, 'r3');
  fs.mkdirSync(r2);
  fs.mkdirSync(r3);
  // ckpt2 from the restored ckpt1 (found by name in --base-dir), ckpt3 from the restored ckpt2 (--base NAME=PATH).
  const got2 = await restore(f2, r2, { bases: { bases: [], dirs: [r1] } });
  for (const b of v2) t.equal(sha256(path.join(r2, b.name)), sha256(b.path), `ckpt2 ${b.name} restored from the restored ckpt1`);
  t.same(got2.stats.delta, saved.stats.delta, 'the restore counts the pages as the save did');
  await restore(f3, r3, { bases: { bases: v2.map((b) => ({ name: b.name, path: path.join(r2, b.name) })), dirs: [] } });
  for (const b of v3) t.equal(sha256(path.join(r3, b.name)), sha256(b.path), `ckpt3 ${b.name} restored from the restored ckpt2`);
  t.same(fs.readdirSync(r3).sort(), ['pc.ram', 'vga'], 'no temporary files left');
  // Rolling forward in place: ckpt2 restored into the folder that holds its bases, which are read, never written,
  // and replaced only once the outputs have verified.
  await restore(f2, r1, { bases: { bases: [], dirs: [r1] } });
  for (const b of v2) t.equal(sha256(path.join(r1, b.name)), sha256(b.path), `${b.name}: ckpt2 over its own bases`);
  t.same(fs.readdirSync(r1).sort(), ['pc.ram', 'vga'], 'no temporary files left');
  // A file without references takes no bases.
  const plain = await rejection(restore(f1, r3, { bases: { bases: [], dirs: [r1] } }));
  t.equal(plain.code, 'ERR_USAGE');
  t.match(plain.message, /--base and --base-dir are for a delta migration file: ".*ckpt1\.mfd" refers to no base/);
});

t.test('a base that differs from the one saved against is refused by its SHA-256, naming it, before any output exists', async (t) => {
  const { dir, v1, f2, r1 } = await twoCheckpoints(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const vga = path.join(r1, 'vga');
  const want = fileSha(vga);
  // Same size, one bit of the last page flipped: after the save was written.
  flip(vga, 30 * PS + 7);
  const e = await rejection(restore(f2, out, { bases: { bases: [], dirs: [r1] } }));
  t.equal(e.code, 'ERR_DELTA_BASE_DIGEST');
  t.equal(e.exitCode, 5);
  t.equal(
    e.message,
    `base "vga" (${vga}): SHA-256 received ${fileSha(vga)}, expected ${want}: not the file the migration file was saved against`,
  );
  t.same(fs.readdirSync(out), [], 'no output, temporary or not');
  // Another size: refused by the size, before reading it.
  fs.appendFileSync(vga, 'x');
  const s = await rejection(restore(f2, out, { bases: { bases: [], dirs: [r1] } }));
  t.equal(s.code, 'ERR_DELTA_BASE_SIZE');
  t.match(s.message, `base "vga" (${vga}): size received ${30 * PS + 101} bytes, expected ${30 * PS + 100}`);
  t.ok(v1);
});

t.test('a base not given, missing, a link, or a --base the file does not name: refused, naming it', async (t) => {
  const { dir, f2, r1 } = await twoCheckpoints(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const none = await rejection(restore(f2, out));
  t.equal(none.code, 'ERR_DELTA_BASE_MISSING');
  t.equal(none.exitCode, 2);
  t.match(none.message, /base "pc\.ram" \(saved from .*v1\/pc\.ram, 1638400 bytes\) is not given: --base pc\.ram=PATH, or --base-dir DIR/);
  const empty = path.join(dir, 'empty');
  fs.mkdirSync(empty);
  t.match((await rejection(restore(f2, out, { bases: { bases: [], dirs: [empty] } }))).message, /\(not in .*empty\)/);
  const gone = await rejection(restore(f2, out, { bases: { bases: [{ name: 'pc.ram', path: path.join(dir, 'gone') }], dirs: [r1] } }));
  t.equal(gone.code, 'ERR_ENOENT');
  t.match(gone.message, /^base "pc\.ram" \(.*gone\): ENOENT/);
  const unknown = await rejection(restore(f2, out, { bases: { bases: [{ name: 'nope', path: f2 }], dirs: [r1] } }));
  t.match(unknown.message, /the migration file names no base "nope" \(its bases: "pc\.ram", "vga"\)/);
  // A link in the folder (to the right file, even) is not followed.
  const linked = path.join(dir, 'linked');
  fs.mkdirSync(linked);
  fs.symlinkSync(path.join(r1, 'pc.ram'), path.join(linked, 'pc.ram'));
  fs.copyFileSync(path.join(r1, 'vga'), path.join(linked, 'vga'));
  const link = await rejection(restore(f2, out, { bases: { bases: [], dirs: [linked] } }));
  t.equal(link.code, 'ERR_DELTA_BASE');
  t.match(link.message, /base "pc\.ram" \(.*linked\/pc\.ram\) is a symbolic link: not followed/);
  t.same(fs.readdirSync(out), [], 'no output');
});

t.test('a base changed or shrunk after its check fails verification or the read, never the image; one removed is still read', async (t) => {
  const { dir, f2, r1, v2 } = await twoCheckpoints(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const base = path.join(r1, 'pc.ram');
  const keep = fs.readFileSync(base);
  const changed = await rejection(
    restore(f2, out, {
      bases: { bases: [], dirs: [r1], afterVerify: () => fs.writeFileSync(base, Buffer.alloc(keep.length, 0x5a)) },
    }),
  );
  t.equal(changed.code, 'ERR_DIGEST', changed.message);
  t.same(fs.readdirSync(out), [], 'no output');
  fs.writeFileSync(base, keep);
  const shrunk = await rejection(restore(f2, out, { bases: { bases: [], dirs: [r1], afterVerify: () => fs.truncateSync(base, 10 * PS) } }));
  t.equal(shrunk.code, 'ERR_DELTA_BASE_SHORT');
  t.match(shrunk.message, /base "pc\.ram" \(.*r1\/pc\.ram\).*it shrank during the migration/);
  t.same(fs.readdirSync(out), [], 'no output');
  // Put back, the same file restores.
  fs.writeFileSync(base, keep);
  await restore(f2, out, { bases: { bases: [], dirs: [r1] } });
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(v2[0]!.path));
  // Removed after its check: it was opened before, and is read whole all the same.
  fs.rmSync(path.join(out, 'pc.ram'));
  fs.rmSync(path.join(out, 'vga'));
  await restore(f2, out, { bases: { bases: [], dirs: [r1], afterVerify: () => fs.rmSync(base) } });
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(v2[0]!.path), 'a base removed after its check: restored all the same');
});

t.test('a fingerprint collision at save is caught by the pages CRC-32C: the page goes as data', async (t) => {
  const dir = tmpdir(t);
  const v1 = checkpoint(path.join(dir, 'v1'), 1);
  const v2 = checkpoint(path.join(dir, 'v2'), 2);
  // Image page 10 (changed since v1, in no base) gets a base page's fingerprint: base page 11 takes its key.
  const probe = Buffer.alloc(ENTRY_SIZE);
  await fingerprintPages(page(200_010), PS, 1, 0, probe);
  let injected = false;
  const f2 = path.join(dir, 'ckpt2.mfd');
  const saved = await save(v2, f2, {
    delta: {
      bases: [{ name: 'pc.ram', path: v1[0]!.path }],
      onFingerprints: (entries) => {
        for (let i = 0; i < entries.length / ENTRY_SIZE; i++)
          if (entryIndex(entries, i) === 11) {
            probe.copy(entries, i * ENTRY_SIZE, 0, 12);
            injected = true;
          }
      },
    },
  });
  t.ok(injected, 'the collision was injected');
  // Without the check page 10 would refer to base page 11; with it, page 10 goes as data (one of the 34 changed),
  // and so does page 11 (base page 11's key is no longer its own); vga has no base here: its 31 pages as data.
  t.match(saved.stats.delta, { dataPages: 34 + 1 + 31, basePages: 346 - 1, zeroPages: 20 });
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  await restore(f2, out, { bases: { bases: [{ name: 'pc.ram', path: v1[0]!.path }], dirs: [] } });
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(v2[0]!.path), 'byte-identical');
});

t.test('planDelta: a copy within the migration needs equal CRC-32C too, else the page goes as data', async (t) => {
  // Four pages: 1 and 3 have page 0's fingerprint; page 3's CRC-32C differs (a collision), page 1's does not.
  const entries = Buffer.alloc(4 * ENTRY_SIZE);
  await fingerprintPages(Buffer.concat([page(1), page(1), page(2), page(1)]), PS, 4, 0, entries);
  const block = { source: { size: 4 * PS }, digest: { add: () => {} } } as unknown as SendBlock;
  const crcs = new Uint32Array([7, 7, 8, 9]);
  const prints = { entries, count: 4, crcs: [crcs], nonzero: new Uint8Array([1, 1, 1, 1]) };
  const plan = await planDelta([block], PS, prints, Buffer.alloc(0), 0, { bases: [], fingerprints: 0 });
  t.equal(plan.collisions, 1, 'page 3 is a collision');
  t.equal(plan.migrationPages, 1, 'page 1 refers to page 0');
  t.same(plan.held.get(block), [1, 1], 'only page 1 is held back from the data');
});

t.test('--delta without bases: pages equal to one earlier in the file are stored once', async (t) => {
  const dir = tmpdir(t);
  const v1 = checkpoint(path.join(dir, 'v1'), 1);
  const file = path.join(dir, 'f.mfd');
  const plain = await save(v1, path.join(dir, 'plain.mfd'));
  const saved = await save(v1, file, { delta: { bases: [] } });
  t.match(saved.stats.delta, { basePages: 0, migrationPages: 36 });
  t.equal(saved.stats.normalPages, plain.stats.normalPages - 36);
  t.equal(headerOf(file).version, 2);
  t.same(headerOf(file).delta, { bases: [] });
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const r = await restore(file, out);
  for (const b of v1) t.equal(sha256(path.join(out, b.name)), sha256(b.path), `${b.name} restored`);
  t.equal(r.stats.delta!.migrationPages, 36);
  // The mapped-ram layout cannot hold references: refused, saying why.
  const mapped = await rejection(save(v1, path.join(dir, 'm.mfd'), { mappedRam: true, delta: { bases: [] } }));
  t.equal(mapped.code, 'ERR_USAGE');
  t.match(mapped.message, /--mapped-ram cannot hold delta references: .*Save the delta file in the stream layout/);
});

t.test('mfd inspect of a delta file: the bases, the reference packets and their references', async (t) => {
  const { f2, v1 } = await twoCheckpoints(t);
  const r = await inspectFile({ path: f2, offset: 0 });
  t.same(r.errors, []);
  t.equal(r.check, null, 'not checked without its bases');
  t.equal(r.header!.delta!.bases.length, 2);
  const refs = r.packets.filter((p) => p.references);
  t.ok(refs.length >= 2, `${refs.length} reference packets`);
  t.equal(
    refs.reduce((a, p) => a + p.references!.pages, 0),
    431 - 35,
    'they stand for every page but the 35 changed ones',
  );
  const text = formatFileReport(r);
  t.match(text, /header: version 2, layout stream/);
  t.match(text, new RegExp(`base#0 pc\\.ram: 1638400 bytes, sha256 ${fileSha(v1[0]!.path)}, saved from .*v1/pc\\.ram`));
  t.match(text, /base#1 vga: 122980 bytes, sha256 [0-9a-f]{64}/);
  t.match(text, /delta-ref .* pc\.ram/);
  t.match(text, /9 page\(s\) at 1 <- base#0 page 1\n/, 'pages 1..9 from the base (0 and 10 changed)');
  t.match(text, /ramblock pc\.ram: digest [0-9a-f]{16}, normal pages 34, zero pages 0, referenced pages 366/);
  t.match(text, /check: not run: a delta file is checked by restoring it with its bases/);
});

t.test('the CLI: send --to file: --base, recv --from --base / --base-dir, exit codes; refusals', async (t) => {
  const dir = tmpdir(t);
  const v1 = checkpoint(path.join(dir, 'v1'), 1);
  const v2 = checkpoint(path.join(dir, 'v2'), 2);
  const f2 = path.join(dir, 'ckpt2.mfd');
  const s = mfd(
    'send',
    '--to',
    `file:${f2}`,
    '--base',
    v1[0]!.path,
    '--base',
    `vga=${v1[1]!.path}`,
    '--no-progress',
    ...v2.map((b) => `${b.name}=${b.path}`),
  );
  t.equal(s.status, 0, s.stderr);
  t.match(s.stdout, /delta: pages as data=35 base references=376 in-migration references=0 zero=20/);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const missing = mfd('recv', '--from', `file:${f2}`, '--output', out, '--no-progress');
  t.equal(missing.status, 2, 'a base not given: exit 2');
  t.match(missing.stderr, /base "pc\.ram" .* is not given/);
  const r = mfd('recv', '--from', `file:${f2}`, '--output', out, '--base-dir', path.dirname(v1[0]!.path), '--no-progress', '--json');
  t.equal(r.status, 0, r.stderr);
  t.match(JSON.parse(r.stdout), { delta: { basePages: 376, dataPages: 35 } });
  t.equal(schemaErrors('RecvJson', JSON.parse(r.stdout)), '', 'recv --from --json: valid against the JSON Schema');
  const sj = mfd('send', '--to', `file:${path.join(dir, 'j.mfd')}`, '--delta', '--json', '--no-progress', v2[0]!.path);
  t.equal(sj.status, 0, sj.stderr);
  t.match(JSON.parse(sj.stdout), { delta: { migrationPages: 36 } });
  t.equal(schemaErrors('SendJson', JSON.parse(sj.stdout)), '', 'send --to file: --delta --json: valid against the JSON Schema');
  const ij = mfd('inspect', '--json', f2);
  t.equal(ij.status, 0, ij.stderr);
  t.equal(schemaErrors('InspectJson', JSON.parse(ij.stdout)), '', 'inspect --json of a delta file: valid against the JSON Schema');
  t.match(JSON.parse(ij.stdout), { files: [{ header: { version: 2, delta: { bases: [{ name: 'pc.ram' }, { name: 'vga' }] } } }] });
  for (const b of v2) t.equal(sha256(path.join(out, b.name)), sha256(b.path), `${b.name} restored`);
  fs.appendFileSync(v1[1]!.path, 'x');
  fs.rmSync(path.join(out, 'vga'));
  const wrong = mfd('recv', '--from', `file:${f2}`, '--output', out, '--base-dir', path.dirname(v1[0]!.path), '--no-progress');
  t.equal(wrong.status, 5, 'a base that differs: exit 5');
  t.match(wrong.stderr, /base "vga" .* size received/);
  const cases: [string[], RegExp][] = [
    [['send', '--to', '127.0.0.1:1', '--base', v1[0]!.path, v2[0]!.path], /--base is for a delta migration file/],
    [
      ['send', '--to', `file:${path.join(dir, 'm.mfd')}`, '--mapped-ram', '--base', v1[0]!.path, v2[0]!.path],
      /--mapped-ram cannot hold delta references/,
    ],
    [['recv', '--from', `file:${f2}`, '--delta', '--output', out], /a delta migration file names its bases itself/],
    [['recv', '--from', `file:${path.join(dir, 'none.mfd')}`, '--in-place', '--base-dir', dir, '--output', out], /not with --in-place/],
  ];
  for (const [args, why] of cases) {
    const x = mfd(...args);
    t.equal(x.status, 2, `${args.join(' ')}: exit 2`);
    t.match(x.stderr, why);
  }
});
