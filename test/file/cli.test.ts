/** `mfd send --to file:...`, `mfd recv --from file:...` and `mfd inspect` on migration files, as users run them. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { makeImage, sha256, tmpdir } from '../helpers/index.js';
import { writeError } from '../../src/file/writer.js';
import { NativeIoError } from '../../src/errors.js';
import { parseFileUri } from '../../src/file/target.js';
import { directIoProbe, mfd } from '../helpers/files.js';

t.test('file:PATH,offset=N: the bytes before N are untouched, both layouts; restore and inspect from N', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), (2 << 20) + 4096, 'mixed', 3);
  const lead = randomBytes(20_000);
  for (const layout of [['--compression', 'zstd'], ['--mapped-ram']]) {
    const file = path.join(dir, 'disk.img');
    // A file with other data: the migration starts at 12 KiB, inside it.
    fs.writeFileSync(file, lead);
    const s = mfd('send', '--to', `file:${file},offset=12K`, '--channels', '2', ...layout, '--json', img);
    t.equal(s.status, 0, s.stderr);
    const summary = JSON.parse(s.stdout);
    t.match(summary, { status: 'completed', file: { offset: 12288, layout: layout[0] === '--mapped-ram' ? 'mapped-ram' : 'stream' } });
    const bytes = fs.readFileSync(file);
    t.same(bytes.subarray(0, 12288), lead.subarray(0, 12288), `${layout.join(' ')}: leading 12 KiB byte-for-byte`);
    t.equal(bytes.readUInt32BE(12288), 0x4d464446, 'the header starts exactly at the offset');
    t.equal(bytes.length, 12288 + summary.file.bytes, 'nothing past the migration');

    const out = path.join(dir, `out-${layout[0]}`);
    fs.mkdirSync(out);
    const r = mfd('recv', '--from', `file:${file},offset=12K`, '--output', out, '--json');
    t.equal(r.status, 0, r.stderr);
    t.equal(sha256(path.join(out, 'pc.ram')), sha256(img));
    t.match(JSON.parse(r.stdout), { status: 'completed', file: { offset: 12288 } });

    const i = mfd('inspect', '--json', `file:${file},offset=12K`);
    t.equal(i.status, 0, i.stderr);
    const rep = JSON.parse(i.stdout).files[0];
    t.match(rep, { offset: 12288, header: { uuid: summary.uuid }, trailer: { valid: true }, errors: [] });

    const wrong = mfd('recv', '--from', `file:${file}`, '--output', out);
    t.equal(wrong.status, 3, 'without the offset: not a migration file');
    t.match(wrong.stderr, /not an mfd migration file: bytes 0\.\.3 are 0x[0-9a-f]+, expected 0x4d464446/);
  }
  t.same(parseFileUri('file:/a,b,offset=1M', '--to'), { path: '/a,b', offset: 1 << 20 });
  t.throws(() => parseFileUri('file:/x,offset=0x20M', '--to'), /file URI has bad offset "0x20M"/);
});

t.test('--direct-io: O_DIRECT saves in both layouts restore identically (where the file system takes O_DIRECT)', async (t) => {
  const dir = tmpdir(t);
  const probe = await directIoProbe(dir);
  if (probe !== true) {
    t.skip(probe, () => {});
    return;
  }
  const img = makeImage(path.join(dir, 'pc.ram'), (3 << 20) + 100, 'mixed', 4);
  for (const layout of [['--compression', 'lz4'], ['--mapped-ram'], []]) {
    const file = path.join(dir, 'vm.mfd');
    const s = mfd('send', '--to', `file:${file},offset=8K`, '--direct-io', ...layout, '--json', img);
    t.equal(s.status, 0, s.stderr);
    const summary = JSON.parse(s.stdout);
    t.equal(summary.file.directIo, true);
    t.equal(fs.statSync(file).size % 4096, 0, 'an O_DIRECT file ends on a 4 KiB boundary');
    const out = path.join(dir, `out${layout.join('')}`);
    fs.mkdirSync(out);
    const r = mfd('recv', '--from', `file:${file},offset=8K`, '--output', out);
    t.equal(r.status, 0, r.stderr);
    t.equal(sha256(path.join(out, 'pc.ram')), sha256(img), `${layout.join(' ') || 'none'}: identical`);
  }
  const bad = mfd('send', '--to', `file:${path.join(dir, 'x')},offset=100`, '--direct-io', img);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /with --direct-io the offset must be a multiple of 4096/);
});

t.test('a file system refusing O_DIRECT is named in the error (exit 6)', async (t) => {
  const FAILED_WRITE = { on: 'file', op: 'write', at: 8192, asked: 4096, moved: 0 } as const;
  const e = writeError({ path: '/mnt/x.mfd', offset: 0, fd: -1, direct: true }, new NativeIoError('EINVAL', FAILED_WRITE));
  t.equal(e.code, 'ERR_DIRECT_IO_UNSUPPORTED');
  t.equal(e.exitCode, 6);
  t.match(
    e.message,
    /--direct-io: the file system of "\/mnt\/x\.mfd" refuses O_DIRECT \(write at byte 8192: EINVAL\); save without --direct-io/,
  );
  const buffered = writeError({ path: '/mnt/x.mfd', offset: 0, fd: -1, direct: false }, new NativeIoError('EINVAL', FAILED_WRITE));
  t.equal(buffered.code, 'ERR_EINVAL', 'without O_DIRECT, EINVAL is just EINVAL');
});

t.test('refusals: compression with --mapped-ram, file flags without a file, recv without a source', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 8192, 'random');
  const file = path.join(dir, 'vm.mfd');
  const c = mfd('send', '--to', `file:${file}`, '--mapped-ram', '--compression', 'zstd', img);
  t.equal(c.status, 2);
  t.match(c.stderr, /--mapped-ram stores pages uncompressed .*: drop --compression zstd, or save without --mapped-ram/);
  t.notOk(fs.existsSync(file), 'refused before the file is created');
  const m = mfd('send', '--to', '127.0.0.1:1', '--mapped-ram', img);
  t.equal(m.status, 2);
  t.match(m.stderr, /--mapped-ram is for saving to a file: --to file:PATH/);
  const r = mfd('recv', '--output', dir);
  t.equal(r.status, 2);
  t.match(r.stderr, /give one of --listen HOST:PORT .* or --from file:PATH/);
  const both = mfd('recv', '--listen', ':0', '--from', `file:${file}`, '--output', dir);
  t.equal(both.status, 2);
  const missing = mfd('recv', '--from', `file:${path.join(dir, 'nope.mfd')}`, '--output', dir);
  t.equal(missing.status, 6);
  t.match(missing.stderr, /cannot open migration file ".*nope\.mfd"/);
});

t.test('--help documents the file flags', async (t) => {
  const s = mfd('send', '--help');
  t.match(s.stdout, /--to <host:port\|file:path>[\s\S]*offset=N/);
  t.match(s.stdout, /--mapped-ram[\s\S]*1 MiB-aligned\s+region/);
  t.match(s.stdout, /--direct-io[\s\S]*O_DIRECT/);
  const r = mfd('recv', '--help');
  t.match(r.stdout, /--from <file:path>[\s\S]*incomplete migration file/);
  const i = mfd('inspect', '--help');
  t.match(i.stdout, /migration files/);
});

t.test('inspect: a migration file by its magic, human and JSON; stream and mapped-ram', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 1 << 20, 'mixed', 6);
  const file = path.join(dir, 'vm.mfd');
  t.equal(mfd('send', '--to', `file:${file}`, '--channels', '2', '--compression', 'zlib', img).status, 0);
  const h = mfd('inspect', file);
  t.equal(h.status, 0, h.stderr);
  t.match(h.stdout, /header: version 1, layout stream, uuid [0-9a-f-]{36}, 2 channel\(s\), page size 4096, compression zlib \{"level":1\}/);
  t.match(h.stdout, /ramblock pc\.ram: 1048576 bytes/);
  t.match(h.stdout, /channel 0: \d+ packets \(1 SYNC\)/);
  t.match(h.stdout, /trailer at byte \d+: valid, data ends at byte \d+, packets per channel \d+ \d+/);
  const j = JSON.parse(mfd('inspect', '--json', file).stdout);
  const rep = j.files[0];
  t.equal(
    rep.packets.length,
    rep.channels.reduce((a: number, c: { packets: number }) => a + c.packets, 0),
  );
  t.same(
    rep.trailer.packets,
    rep.channels.map((c: { packets: number }) => c.packets),
    'counted packets agree with the trailer',
  );

  const mr = path.join(dir, 'mr.mfd');
  t.equal(mfd('send', '--to', `file:${mr}`, '--mapped-ram', img).status, 0);
  const m = mfd('inspect', mr);
  t.equal(m.status, 0, m.stderr);
  t.match(m.stdout, /ramblock pc\.ram: 1048576 bytes, bitmap at byte 4096, pages at byte 1048576/);
  t.match(m.stdout, /bitmap pc\.ram: \d+ of 256 pages present, \d+ zero \(holes\)/);
});
