/**
 * Someone who can write into the output directory plants links at the names
 * the receiver writes (its temporary output, journal, journal temp, in-place
 * marker, dump files, the QEMU mode's files and manifest): a symbolic link to
 * a file outside, a dangling one (which would create a file outside), or a
 * hard link to a file outside. No file outside the output directory may
 * change or appear; see src/no-follow.ts.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, migrate, rejection, sha256, tmpdir } from '../helpers/index.js';
import { receiveStreams } from '../helpers/qemu.js';
import { mfd, mfdRecv } from '../helpers/procs.js';
import { buildQemuMigration, QEMU_CORPUS } from '../helpers/fuzz/qemu.js';
import { ramblockFileName } from '../../src/image/ramblock.js';
import { Output } from '../../src/receiver/output.js';
import { loadJournal } from '../../src/receiver/journal.js';

const PS = 4096;
const KINDS = ['symlink', 'dangling', 'hardlink'] as const;
type Kind = (typeof KINDS)[number];

/**
 * Plants a link of `kind` at each of `names` (paths in their directories) to
 * a file in `outside`; check() asserts that every file there is as it was
 * and that none was added.
 */
function plant(t: Test, outside: string, names: string[], kind: Kind): { check(): void } {
  fs.mkdirSync(outside, { recursive: true });
  const before = new Map<string, string>();
  names.forEach((name, i) => {
    const victim = path.join(outside, `victim-${i}`);
    if (kind === 'dangling') {
      fs.symlinkSync(path.join(outside, `new-${i}`), name);
      return;
    }
    fs.writeFileSync(victim, `ORIGINAL ${i}\n`);
    before.set(victim, `ORIGINAL ${i}\n`);
    if (kind === 'symlink') fs.symlinkSync(victim, name);
    else fs.linkSync(victim, name);
  });
  return {
    check() {
      t.same(
        fs.readdirSync(outside).sort(),
        [...before.keys()].map((f) => path.basename(f)).sort(),
        `${kind}: no file created outside the output directory`,
      );
      for (const [victim, text] of before) t.equal(fs.readFileSync(victim, 'utf8'), text, `${kind}: ${path.basename(victim)} unchanged`);
    },
  };
}

const migration = (img: string) => ({
  images: [{ name: 'img', path: img }],
  channels: 2,
  pageSize: PS,
  compression: 'none' as const,
  methodParams: {},
  zeroPageDetection: 'multifd' as const,
});

t.test(
  'links at the temporary output, the journal, its temporary file, its reserve, the final name and the dump files are not followed',
  async (t) => {
    for (const kind of KINDS) {
      await t.test(kind, async (t) => {
        const dir = tmpdir(t);
        const out = path.join(dir, 'out');
        const dump = path.join(dir, 'dump');
        fs.mkdirSync(out);
        fs.mkdirSync(dump);
        const img = makeImage(path.join(dir, 'src.ram'), 2 << 20, 'mixed');
        const names = ['.img.mfd-partial', '.img.mfd-journal', '.img.mfd-journal.tmp', '.img.mfd-reserve', 'img'].map((n) =>
          path.join(out, n),
        );
        names.push(...[0, 1].map((i) => path.join(dump, `channel-${i}.bin`)));
        const victims = plant(t, path.join(dir, 'outside'), names, kind);
        await migrate(migration(img), { outputDir: out, dumpStreams: dump, journalIntervalMs: 5 });
        t.equal(sha256(path.join(out, 'img')), sha256(img), 'the output is the image');
        t.notOk(fs.lstatSync(path.join(out, 'img')).isSymbolicLink(), 'the link at the final name was replaced');
        t.same(fs.readdirSync(out), ['img'], 'no side file left');
        t.ok(fs.statSync(path.join(dump, 'channel-0.bin')).size > 0, 'the dump file was written in the dump directory');
        victims.check();
      });
    }
  },
);

t.test('--in-place: links at the marker, the journal, its temporary file and its reserve are not followed', async (t) => {
  for (const kind of KINDS) {
    await t.test(kind, async (t) => {
      const dir = tmpdir(t);
      const out = path.join(dir, 'out');
      fs.mkdirSync(out);
      const img = makeImage(path.join(dir, 'src.ram'), 2 << 20, 'mixed');
      fs.writeFileSync(path.join(out, 'img'), 'old contents');
      const victims = plant(
        t,
        path.join(dir, 'outside'),
        ['img.mfd-partial', '.img.mfd-journal', '.img.mfd-journal.tmp', '.img.mfd-reserve'].map((n) => path.join(out, n)),
        kind,
      );
      await migrate(migration(img), { outputDir: out, inPlace: true, journalIntervalMs: 5 });
      t.equal(sha256(path.join(out, 'img')), sha256(img), 'the output is the image');
      t.same(fs.readdirSync(out), ['img'], 'marker and journal gone');
      victims.check();
    });
  }
});

t.test(
  '--in-place refuses an output that is a link (symbolic, dangling or hard) before any file is touched, and takes the target named',
  async (t) => {
    for (const kind of KINDS) {
      await t.test(kind, async (t) => {
        const dir = tmpdir(t);
        const out = path.join(dir, 'out');
        fs.mkdirSync(out);
        const img = makeImage(path.join(dir, 'src.ram'), 1 << 20, 'mixed');
        const victims = plant(t, path.join(dir, 'outside'), [path.join(out, 'img')], kind);
        const e = await rejection(migrate(migration(img), { outputDir: out, inPlace: true }));
        if (kind === 'hardlink')
          t.match(e, { code: 'ERR_REMOTE', message: /output ".*img" for ram block "img" has 2 names \(hard links\)/ });
        else
          t.match(e, {
            code: 'ERR_REMOTE',
            message: new RegExp(
              `--in-place: output ".*img" for ram block "img" is a symbolic link to ".*${kind === 'dangling' ? 'new-0, which does not exist' : 'victim-0'}"`,
            ),
          });
        t.same(fs.readdirSync(out), ['img'], 'nothing created beside it');
        victims.check();
      });
    }
    // Named by its target, the file is written in place.
    const dir = tmpdir(t);
    const img = makeImage(path.join(dir, 'src.ram'), 1 << 20, 'mixed');
    const target = path.join(dir, 'target.ram');
    fs.writeFileSync(target, '');
    fs.symlinkSync(target, path.join(dir, 'link.ram'));
    await migrate(migration(img), { outputMap: new Map([['img', target]]), inPlace: true });
    t.equal(sha256(target), sha256(img), "the link's target, named, is written");
  },
);

t.test('recv --qemu: links at the ramblock files, the device state, the manifest and their temporary names are not followed', async (t) => {
  const m = await buildQemuMigration(QEMU_CORPUS[0]!);
  const files = [...m.images.keys()].map(ramblockFileName);
  t.same(files, ['pc.ram', '%2From@etc%2Facpi%2Ftables']);
  for (const kind of KINDS) {
    await t.test(kind, async (t) => {
      const dir = tmpdir(t);
      const out = path.join(dir, 'out');
      fs.mkdirSync(out);
      const names = [...files, 'device-state']
        .flatMap((f) => [f, `.${f}.mfd-partial`])
        .concat('manifest.json', 'manifest.json.mfd-partial');
      const victims = plant(
        t,
        path.join(dir, 'outside'),
        names.map((n) => path.join(out, n)),
        kind,
      );
      const { result } = await receiveStreams(t, m.main, [], { recv: { outputDir: out } });
      const r = await result;
      t.same(
        r.manifest.ramblocks.map((b) => b.file),
        files,
      );
      for (const [name, image] of m.images)
        t.ok(fs.readFileSync(path.join(out, ramblockFileName(name))).equals(image), `ramblock ${name} received`);
      t.same(fs.readdirSync(out).sort(), [...files, 'device-state', 'manifest.json'].sort(), 'only the final files, none a link');
      for (const f of fs.readdirSync(out)) t.ok(fs.lstatSync(path.join(out, f)).isFile(), `${f} is a file of its own`);
      victims.check();
    });
  }
});

t.test('the reported case: ln -s ../victim out/.img.mfd-partial, then mfd recv and mfd send, leaves the victim as it was', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(dir, 'victim'), 'ORIGINAL\n');
  fs.symlinkSync('../victim', path.join(out, '.img.mfd-partial'));
  const img = makeImage(path.join(dir, 'img.ram'), 1 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', `${out}/`, '--no-progress']);
  const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--no-progress', `img=${img}`]);
  const [r, s] = await Promise.all([recv.done, send.done]);
  t.equal(r.code, 0, r.stderr);
  t.equal(s.code, 0, s.stderr);
  t.equal(fs.readFileSync(path.join(dir, 'victim'), 'utf8'), 'ORIGINAL\n', 'victim unchanged');
  t.equal(sha256(path.join(out, 'img')), sha256(img));
});

t.test('two outputs that are one file through a linked directory are refused at the hello, before any file is touched', async (t) => {
  const dir = tmpdir(t);
  fs.mkdirSync(path.join(dir, 'real'));
  fs.symlinkSync('real', path.join(dir, 'link'));
  const a = makeImage(path.join(dir, 'c.ram'), 1 << 20, 'mixed', 1);
  const b = makeImage(path.join(dir, 'b.ram'), 1 << 20, 'mixed', 2);
  const recv = await mfdRecv(t, ['--output', path.join(dir, 'link'), '--output', `a=${path.join(dir, 'real', 'b')}`, '--no-progress']);
  const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--no-progress', `a=${a}`, `b=${b}`]);
  const [r, s] = await Promise.all([recv.done, send.done]);
  t.equal(r.code, 2, 'receiver: exit 2');
  t.match(r.stderr, /ram blocks "a" and "b" would both be written to ".*real\/b" and ".*link\/b", both ".*real\/b"/);
  t.equal(s.code, 7, "sender: exit 7, the receiver's reason");
  t.same(fs.readdirSync(path.join(dir, 'real')), [], 'nothing written, no final-named file, no journal');
});

t.test('a resume opens the partial output and reads the journal through no link', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const victims = plant(t, path.join(dir, 'outside'), [path.join(out, '.img.mfd-partial'), path.join(out, '.img.mfd-journal')], 'symlink');
  const e = await rejection(Output.create('img', 11, path.join(out, 'img'), false, true));
  t.match(e, {
    code: 'ERR_ELOOP',
    message: /cannot create output for ram block "img" at ".*\.img\.mfd-partial": .*\(a symbolic link: mfd writes through none\)/,
  });
  t.match(await rejection(loadJournal(path.join(out, '.img.mfd-journal'))), { code: 'ERR_ELOOP', message: /cannot read progress journal/ });
  victims.check();
});
