/**
 * Damaged migration files: a save killed mid-write, a file cut short, a bit
 * flipped in the header, a packet, the trailer, a mapped-ram page or bitmap.
 * Each is refused with an error naming what is wrong (and where), exit codes
 * as documented, and no output is left behind.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { makeImage, rejection, tmpdir } from '../helpers/index.js';
import { generateImage } from '../../src/image/generate.js';
import { inspectFile } from '../../src/inspect/file.js';
import { ExitCode } from '../../src/errors.js';
import { bin, flip, mfd, restore, save } from '../helpers/files.js';
import type { MethodName } from '../../src/methods/index.js';

/** A 3-channel stream-layout file of a mixed image, and its inspection. */
async function streamFile(dir: string, method: MethodName = 'none') {
  const img = makeImage(path.join(dir, 'pc.ram'), 3 << 20, 'mixed', 5);
  const file = path.join(dir, `vm-${method}.mfd`);
  const saved = await save([{ name: 'pc.ram', path: img }], file, { compression: method });
  const report = await inspectFile({ path: file, offset: 0 });
  return { img, file, saved, report };
}

function outDir(dir: string): string {
  const out = path.join(dir, `out-${Math.random().toString(36).slice(2)}`);
  fs.mkdirSync(out);
  return out;
}

t.test('a save killed mid-write is refused on restore: incomplete migration file (both layouts)', async (t) => {
  const dir = tmpdir(t);
  // 96 MiB of random pages: every page is written, so the save takes a while.
  const img = path.join(dir, 'big.ram');
  generateImage(img, { size: 96 << 20, profile: 'random', seed: 3 });
  for (const layout of ['stream', 'mapped-ram']) {
    const file = path.join(dir, `${layout}.mfd`);
    const child = spawn(
      process.execPath,
      [bin, 'send', '--to', `file:${file}`, ...(layout === 'mapped-ram' ? ['--mapped-ram'] : []), img],
      { stdio: 'ignore' },
    );
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    // Once 8 MiB are in the file, freeze the sender and kill it: it is mid-write, far from its trailer.
    for (;;) {
      const size = fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;
      if (size >= 8 << 20 || child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    child.kill('SIGSTOP');
    t.equal(child.exitCode, null, `${layout}: the sender had not finished when it was stopped`);
    child.kill('SIGKILL');
    t.equal(await exited, 'SIGKILL');
    const out = outDir(dir);
    const e = await rejection(restore(file, out));
    t.equal(e.code, 'ERR_FILE_INCOMPLETE', `${layout}: ${e.message}`);
    t.match(e.message, /^incomplete migration file: no trailer at its end/);
    t.equal(e.exitCode, ExitCode.VERIFY);
    t.same(fs.readdirSync(out), [], `${layout}: no output created`);
    const r = mfd('recv', '--from', `file:${file}`, '--output', out, '--json');
    t.equal(r.status, 5);
    t.match(r.stderr, /incomplete migration file/);
    t.match(JSON.parse(r.stdout), { status: 'failed', error: { code: 'ERR_FILE_INCOMPLETE' } });
  }
});

t.test('a file cut short: incomplete, whether cut in the records, the trailer or the header', async (t) => {
  const dir = tmpdir(t);
  const { file, saved } = await streamFile(dir);
  const whole = fs.readFileSync(file);
  for (const [what, length] of [
    ['in the records', saved.file.trailerOffset - 10_000],
    ['by one byte', whole.length - 1],
    ['inside the header', 40],
    ['to nothing', 0],
  ] as const) {
    const cut = path.join(dir, 'cut.mfd');
    fs.writeFileSync(cut, whole.subarray(0, length));
    const e = await rejection(restore(cut, outDir(dir)));
    t.equal(e.code, 'ERR_FILE_INCOMPLETE', `cut ${what}: ${e.message}`);
    t.match(e.message, /^incomplete migration file: /);
  }
  // inspect shows the packets up to the cut and says where it ends.
  const cut = path.join(dir, 'cut.mfd');
  fs.writeFileSync(cut, whole.subarray(0, saved.file.trailerOffset - 10_000));
  const r = await inspectFile({ path: cut, offset: 0 });
  t.equal(r.trailer.valid, false);
  t.ok(r.packets.length > 0, 'packets before the cut are listed');
  t.match(r.errors.at(-1), { message: /record at byte \d+ runs past the end of the records .*no valid trailer/ });
});

t.test(
  'a flipped bit in the header, a packet header, a payload or the trailer: the checksum that caught it, with byte offsets',
  async (t) => {
    const dir = tmpdir(t);
    const { file, report } = await streamFile(dir, 'zstd');
    const whole = fs.readFileSync(file);
    const rec = report.packets.find((p) => p.normalPages > 0 && p.payloadBytes > 1000)!;
    const trailerAt = report.trailer.valid ? report.trailer.at : -1;
    const cases = [
      {
        what: 'header page size field',
        at: 16,
        code: 'ERR_FILE_HEADER_CRC',
        message:
          /^migration file: header checksum \(byte \d+\) received 0x[0-9a-f]+, computed 0x[0-9a-f]+ over bytes 0\.\.\d+: the header is corrupt$/,
      },
      {
        what: 'packet header (normal pages)',
        at: rec.at + 12 + 19,
        code: 'ERR_FILE_RECORD_CRC',
        message: new RegExp(
          `^migration file: record at byte ${rec.at} \\(channel ${rec.channel}, \\d+ bytes\\): checksum received 0x[0-9a-f]+, computed 0x[0-9a-f]+: the record is corrupt$`,
        ),
      },
      {
        what: 'compressed payload',
        at: rec.at + 12 + 1344 + 500,
        code: 'ERR_FILE_RECORD_CRC',
        message: new RegExp(`record at byte ${rec.at} `),
      },
      {
        what: 'trailer digest',
        at: trailerAt + 60,
        code: 'ERR_FILE_TRAILER_CRC',
        message: new RegExp(
          `^migration file: trailer checksum \\(byte \\d+\\) received 0x[0-9a-f]+, computed 0x[0-9a-f]+ over bytes ${trailerAt}\\.\\.\\d+: the trailer is corrupt$`,
        ),
      },
      {
        what: 'file magic',
        at: 1,
        code: 'ERR_FILE_MAGIC',
        message: /not an mfd migration file: bytes 0\.\.3 are 0x4d564446, expected 0x4d464446/,
      },
    ];
    for (const c of cases) {
      const bad = path.join(dir, 'bad.mfd');
      fs.writeFileSync(bad, whole);
      flip(bad, c.at);
      const out = outDir(dir);
      const e = await rejection(restore(bad, out));
      t.equal(e.code, c.code, `${c.what}: ${e.message}`);
      t.match(e.message, c.message);
      t.equal(e.exitCode, ExitCode.PROTOCOL);
      t.same(fs.readdirSync(out), [], `${c.what}: no output left behind`);
    }
    const bad = path.join(dir, 'bad.mfd');
    fs.writeFileSync(bad, whole);
    flip(bad, rec.at + 12 + 1344 + 500);
    const r = mfd('recv', '--from', `file:${bad}`, '--output', outDir(dir));
    t.equal(r.status, 3, 'corrupt content exits 3');
    t.match(r.stderr, /mfd recv: error: migration file: record at byte \d+ .*checksum/);
    const i = mfd('inspect', bad);
    t.equal(i.status, 3);
    t.match(i.stdout, new RegExp(`error at byte ${rec.at}: migration file: record at byte ${rec.at} `));
  },
);

t.test('mapped-ram: a flipped page bit fails the digest; a flipped bitmap bit disagrees with the trailer', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 3 << 20, 'mixed', 9);
  const file = path.join(dir, 'vm.mfd');
  await save([{ name: 'pc.ram', path: img }], file, { mappedRam: true });
  const report = await inspectFile({ path: file, offset: 0 });
  const b = report.ramblocks[0]!;
  const whole = fs.readFileSync(file);
  // First present page: its bit in the bitmap.
  const map = whole.subarray(b.bitmapOffset, b.bitmapOffset + 96);
  let first = 0;
  while (!(map[first >>> 3]! & (1 << (first & 7)))) first++;

  const page = path.join(dir, 'page.mfd');
  fs.writeFileSync(page, whole);
  flip(page, b.regionOffset + first * 4096 + 123);
  const e = await rejection(restore(page, outDir(dir)));
  t.equal(e.code, 'ERR_DIGEST', e.message);
  t.match(e.message, /^ram block "pc\.ram": digest of received pages [0-9a-f]{16}, expected [0-9a-f]{16}$/);
  t.equal(e.exitCode, ExitCode.VERIFY);

  const bitmap = path.join(dir, 'bitmap.mfd');
  fs.writeFileSync(bitmap, whole);
  flip(bitmap, b.bitmapOffset + (first >>> 3)); // clears or sets a page's bit
  const m = await rejection(restore(bitmap, outDir(dir)));
  t.equal(m.code, 'ERR_FILE_BITMAP', m.message);
  t.match(m.message, /ram block "pc\.ram": bitmap has \d+ pages present, the trailer counts \d+/);
});

t.test('a failed write fails the save at once with the byte and counts (file size limit), exit 6', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 3 << 20, 'random');
  for (const layout of [[], ['--mapped-ram']]) {
    const file = path.join(dir, 'limited.mfd');
    // 2048 blocks: 1 MiB (dash counts 512-byte blocks) or 2 MiB (bash): either way below the 3 MiB the save needs.
    const { spawnSync } = await import('node:child_process');
    // Node ignores SIGXFSZ, so writes past the limit fail (short, then EFBIG) instead of killing the
    // process. tap puts a hook in every child's NODE_OPTIONS that listens for SIGXFSZ and re-raises it:
    // the shell drops it before starting mfd.
    const r = spawnSync(
      'sh',
      [
        '-c',
        `ulimit -f 2048; unset NODE_OPTIONS; exec "${process.execPath}" "${bin}" send --to file:${file} ${layout.join(' ')} --json ${img}`,
      ],
      { encoding: 'utf8' },
    );
    t.equal(r.status, 6, `${r.stderr} (signal ${r.signal})`);
    const err = JSON.parse(r.stdout).error as { code: string; message: string };
    t.ok(['ERR_SHORT_WRITE', 'ERR_EFBIG'].includes(err.code), err.code);
    t.match(err.message, /^writing migration file ".*limited\.mfd" at byte \d+/);
  }
});
