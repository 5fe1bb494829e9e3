/**
 * Ramblock names as QEMU gives them (`/rom@etc/acpi/tables`, `0000:00:01.0/vga.vram`) through
 * mfd send and mfd recv, into their default file names or mapped with --output NAME=PATH; and
 * names that try to forge a line on the terminal (newline, ANSI escape), which must be shown
 * escaped wherever they are printed or logged.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, sha256, tmpdir } from '../helpers/index.js';
import { mfd, mfdRecv } from '../helpers/procs.js';
import { ramblockFileName, splitNamedSpec } from '../../src/image/ramblock.js';
import { printable } from '../../src/text.js';
import { formatQemuRecv } from '../../src/qemu/cli.js';
import type { QemuRecvResult } from '../../src/qemu/recv.js';

/** A booted q35 machine's ramblocks in QEMU's order (reference/qemu-main-channel.md), sizes scaled down 256 times (the smallest kept at one page). */
const Q35: [string, number][] = [
  ['pc.ram', 0x40000000],
  ['0000:00:01.0/vga.vram', 0x1000000],
  ['/rom@etc/acpi/tables', 0x20000],
  ['pc.bios', 0x40000],
  ['0000:00:02.0/e1000e.rom', 0x40000],
  ['pc.rom', 0x20000],
  ['0000:00:01.0/vga.rom', 0x10000],
  ['/rom@etc/table-loader', 0x1000],
  ['/rom@etc/acpi/rsdp', 0x1000],
];

const FORGER = 'vm\nsent: FAKE LINE status completed\x1b[31m';

t.test('NAME in NAME=PATH: %XX stands for a byte, so a name with / or = can be written; a plain name is as it was', async (t) => {
  t.same(splitNamedSpec('%2From@etc%2Facpi%2Ftables=out/acpi'), { name: '/rom@etc/acpi/tables', path: 'out/acpi' });
  t.same(splitNamedSpec('a%3Db=x=y'), { name: 'a=b', path: 'x=y' });
  t.same(splitNamedSpec('pc.ram=/p/ram'), { name: 'pc.ram', path: '/p/ram' });
  t.same(splitNamedSpec('50%=x'), { name: '50%', path: 'x' }, 'a % not followed by two hex digits is itself');
  t.equal(splitNamedSpec('a/b=out/m'), null, 'a / before the = makes it a path');
  for (const name of [...Q35.map(([n]) => n), FORGER, '50%', 'a=b', '..', '.hidden', 'é']) {
    const file = ramblockFileName(name);
    // eslint-disable-next-line no-control-regex -- control characters are what this looks for
    t.notOk(/[/\x00-\x1f]/.test(file) || file.startsWith('.'), `${JSON.stringify(name)} -> ${file}: a plain, visible file name`);
    t.equal(splitNamedSpec(`${file}=x`)!.name, name, `${file} names ${JSON.stringify(name)} back`);
  }
});

t.test("a q35 machine's real ramblock names, through mfd send and mfd recv: default file names and --output NAME=PATH", async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  const other = path.join(dir, 'other');
  fs.mkdirSync(out);
  fs.mkdirSync(other);
  const images = Q35.map(([name, size], i) => ({
    name,
    file: makeImage(path.join(dir, `img-${i}`), Math.max(4096, size / 256), 'mixed', i + 1),
  }));
  const mapped = new Map([
    ['/rom@etc/acpi/tables', path.join(other, 'acpi-tables')],
    ['0000:00:02.0/e1000e.rom', path.join(other, 'e1000e.rom')],
  ]);
  const recv = await mfdRecv(t, [
    '--output',
    out,
    ...[...mapped].flatMap(([n, p]) => ['--output', `${ramblockFileName(n)}=${p}`]),
    '--no-progress',
    '--json',
  ]);
  const send = mfd(t, [
    'send',
    '--to',
    `127.0.0.1:${recv.port}`,
    '--channels',
    '3',
    '--no-progress',
    ...images.map((i) => `${ramblockFileName(i.name)}=${i.file}`),
  ]);
  const [r, s] = await Promise.all([recv.done, send.done]);
  t.equal(s.code, 0, s.stderr);
  t.equal(r.code, 0, r.stderr);
  const got = (JSON.parse(r.stdout) as { ramblocks: { name: string; path: string }[] }).ramblocks;
  t.same(
    got.map((b) => b.name),
    Q35.map(([n]) => n),
    "the names on the wire are QEMU's",
  );
  for (const i of images) {
    const at = mapped.get(i.name) ?? path.join(out, ramblockFileName(i.name));
    t.equal(sha256(at), sha256(i.file), `${i.name} -> ${path.relative(dir, at)}`);
    t.equal(got.find((b) => b.name === i.name)?.path, at, `${i.name}: the path the receiver reports`);
  }
  t.same(
    fs.readdirSync(out).sort(),
    images
      .filter((i) => !mapped.has(i.name))
      .map((i) => ramblockFileName(i.name))
      .sort(),
    'nothing else in the output directory',
  );
});

t.test('a ramblock name that would forge a line is shown escaped: summaries, the error the sender shows, the logs', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const spec = `${ramblockFileName(FORGER)}=${img}`;
  const shown = 'vm\\nsent: FAKE LINE status completed\\x1b[31m';
  const clean = (what: string, text: string): void => {
    t.notOk(text.includes('\x1b'), `${what}: no escape character`);
    t.notOk(/^sent: FAKE/m.test(text), `${what}: no forged line`);
  };
  await t.test("received: both summaries and the receiver's logs", async (t) => {
    const recv = await mfdRecv(t, ['--output', out, '--no-progress', '--log-level', 'info']);
    const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--no-progress', spec]);
    const [r, s] = await Promise.all([recv.done, send.done]);
    t.equal(r.code, 0, r.stderr);
    t.equal(s.code, 0, s.stderr);
    t.ok(r.stdout.includes(`  ramblock ${shown}: `), `receiver's summary: ${r.stdout.split('\n').slice(-1)[0]}`);
    t.ok(s.stdout.includes(`  ramblock ${shown}: `), "sender's summary");
    for (const [what, text] of [
      ['receiver stdout', r.stdout],
      ['receiver stderr (logs)', r.stderr],
      ['sender stdout', s.stdout],
      ['sender stderr', s.stderr],
    ] as const)
      clean(what, text);
    t.equal(sha256(path.join(out, ramblockFileName(FORGER))), sha256(img));
  });
  await t.test("refused: the receiver's error message, shown by the sender", async (t) => {
    const recv = await mfdRecv(t, ['--output', `${ramblockFileName(FORGER)}=${path.join(dir, 'missing', 'x')}`, '--no-progress']);
    const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--no-progress', spec]);
    const [r, s] = await Promise.all([recv.done, send.done]);
    t.equal(s.code, 7);
    t.match(
      s.stderr,
      `mfd send: error: receiver failed: output "${printable(path.join(dir, 'missing', 'x'))}" for ram block "${shown}": its directory`,
    );
    t.equal(s.stderr.trim().split('\n').length, 1, 'one line');
    clean('sender stderr', s.stderr);
    clean('receiver stderr', r.stderr);
  });
  await t.test('recv --qemu: the summary of a QEMU migration', async (t) => {
    const r = {
      totalTimeMs: 1,
      manifestPath: '/x/manifest.json',
      manifest: {
        qemu: { machineType: `pc\n${FORGER}` },
        multifd: false,
        syncMode: 'round',
        ramblocks: [{ name: FORGER, size: 4096, file: ramblockFileName(FORGER), sha256: '0'.repeat(64) }],
        deviceState: { size: 1, file: 'device-state' },
      },
    } as unknown as QemuRecvResult;
    const text = formatQemuRecv(r);
    clean('summary', text);
    t.equal(text.split('\n').length, 4, 'four lines, as for any name');
    t.ok(text.includes(`ramblock ${shown}: 4096 bytes -> vm%0Asent%3A%20FAKE%20LINE%20status%20completed%1B%5B31m`));
  });
});

t.test('printable: control characters, separators and direction marks as escapes; a backslash doubled; the rest as it is', async (t) => {
  t.equal(printable('a\nb\r\t\x1b[31m\x7f\x9b\u2028\u202e\\é /rom@etc'), 'a\\nb\\r\\t\\x1b[31m\\x7f\\x9b\\u2028\\u202e\\\\é /rom@etc');
  t.equal(printable('plain name.ram'), 'plain name.ram');
});
