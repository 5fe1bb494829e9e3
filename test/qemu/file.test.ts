/**
 * QEMU's own migration files (migrate file:PATH[,offset=N], QEMU 8.2+; mapped-ram 9.0+), against
 * QEMU 10.0 (QEMU 7.2 has no file: URI: its exec: stream is the same bytes and is tested here as
 * the plain layout). mfd recv --qemu --from file: reads what QEMU writes, in the stream layout and
 * in mapped-ram with multifd off, 1 and 4 channels, into the outputs a TCP migration gives; mfd
 * inspect lists the files' sections, ramblocks and pages; mfd send --qemu --to file: [--mapped-ram]
 * writes files QEMU loads with migrate-incoming file: and the guest runs after; a QEMU save read
 * and written back loads with the same RAM. Hand-built mapped-ram files with hostile headers are
 * refused with their code and file byte, leaving nothing in the output directory.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, makeImage, sha256, rejection } from '../helpers/index.js';
import {
  QEMU10,
  QEMU72,
  launch,
  listenQemu,
  noneMachine,
  q35Machine,
  migrateTo,
  waitMigration,
  receiveStreams,
  type QemuBuild,
  type Vm,
} from '../helpers/qemu.js';
import { receiveQemu } from '../../src/qemu/recv.js';
import { sendQemu } from '../../src/qemu/replay.js';
import { inspectQemuFile } from '../../src/qemu/file-inspect.js';
import type { QemuManifest } from '../../src/qemu/manifest.js';
import { unthrottle } from '../../src/qemu/qmp.js';
import { silentLogger } from '../../src/log.js';
import { main } from '../../src/cli/main.js';
import { Writer } from '../../src/qemu/format.js';
import type { FileTarget } from '../../src/file/target.js';
import { schemaErrors } from '../helpers/schema.js';
import { MfdError } from '../../src/errors.js';

const NONE_SIZE = 32 * 1024 * 1024;
const Q35_SIZE = 32 * 1024 * 1024;
const PS = 4096;

interface Mode {
  mappedRam: boolean;
  /** multifd-channels; 0: multifd off. */
  channels: number;
  offset?: number;
}

const label = (m: Mode): string =>
  `${m.mappedRam ? 'mapped-ram' : 'stream'}${m.channels ? `, multifd ${m.channels} channel${m.channels > 1 ? 's' : ''}` : ', no multifd'}${m.offset ? `, offset=${m.offset}` : ''}`;
const uri = (file: string, m: Mode): string => `file:${file}${m.offset ? `,offset=${m.offset}` : ''}`;
const target = (file: string, m: Mode): FileTarget => ({ path: file, offset: m.offset ?? 0 });

/** The capabilities and parameters of `m` on `vm` (source or destination: QEMU wants them equal). */
async function setMode(vm: Vm, m: Mode): Promise<void> {
  await vm.qmp.cmd('migrate-set-capabilities', {
    capabilities: [
      { capability: 'mapped-ram', state: m.mappedRam },
      { capability: 'multifd', state: m.channels > 0 },
    ],
  });
  if (m.channels > 0) await vm.qmp.cmd('migrate-set-parameters', { 'multifd-channels': m.channels, 'multifd-compression': 'none' });
}

/** `vm` saves itself to `file` with `m`; it must complete. A -M none source is made pausable again (cont, stop: no CPU runs). */
async function save(t: Test, vm: Vm, file: string, m: Mode, again = false): Promise<void> {
  await setMode(vm, m);
  await unthrottle(vm.qmp);
  await vm.qmp.cmd('migrate', { uri: uri(file, m) });
  const st = await waitMigration(vm.qmp, 'completed');
  t.equal(st.status, 'completed', `QEMU saved ${label(m)} ${st['error-desc'] ?? ''}`);
  if (again) {
    await vm.qmp.cmd('cont');
    await vm.qmp.cmd('stop');
  }
}

/** mfd recv --qemu --from file: into a fresh directory. */
async function readFile(root: string, name: string, from: FileTarget) {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  const r = await receiveQemu({ host: '', port: 0, outputDir: dir, logger: silentLogger, timeoutMs: 20_000, from });
  return { dir, manifest: r.manifest };
}

/** A migration of `vm` over TCP into mfd recv --qemu (the reference the file outputs are held to). */
async function overTcp(root: string, name: string, vm: Vm) {
  const dir = path.join(root, name);
  fs.mkdirSync(dir);
  const { port, result } = await listenQemu({ outputDir: dir, timeoutMs: 20_000 });
  await migrateTo(vm.qmp, port);
  const { manifest } = await result;
  return { dir, manifest };
}

async function cli(args: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, { stdout: (s) => (stdout += s + '\n'), stderr: (s) => (stderr += s + '\n') });
  return { code, stdout, stderr };
}

/** Pages of `file` that are not all zero. */
function dataPages(file: string): number {
  const b = fs.readFileSync(file);
  let n = 0;
  for (let p = 0; p < b.length; p += PS) if (b.subarray(p, p + PS).some((x) => x !== 0)) n++;
  return n;
}

const blocks = (m: QemuManifest) => m.ramblocks.map((b) => [b.name, b.size, b.digest]);

t.test('QEMU 10.0 migrate file: -> mfd recv --qemu --from file: and mfd inspect (-M none)', { skip: QEMU10.missing }, async (t) => {
  const root = tmpdir(t);
  const image = makeImage(path.join(root, 'src.ram'), NONE_SIZE, 'mixed', 7);
  const vm = await launch(root, 'src', noneMachine(image, NONE_SIZE), QEMU10);
  t.teardown(() => vm.quit());
  await setMode(vm, { mappedRam: false, channels: 0 });
  // Paused as it is for every save after a migration (globalstate "paused", not "prelaunch": the same length).
  await vm.qmp.cmd('cont');
  await vm.qmp.cmd('stop');
  const tcp = await overTcp(root, 'tcp', vm);
  t.equal((await waitMigration(vm.qmp, 'completed')).status, 'completed');
  await vm.qmp.cmd('cont');
  await vm.qmp.cmd('stop');
  const nonZero = dataPages(image);

  const modes: Mode[] = [
    { mappedRam: false, channels: 0 },
    { mappedRam: false, channels: 0, offset: 65536 },
    { mappedRam: true, channels: 0 },
    { mappedRam: true, channels: 1 },
    { mappedRam: true, channels: 4, offset: 12345 },
  ];
  for (const [i, m] of modes.entries()) {
    await t.test(label(m), async (t) => {
      const file = path.join(root, `save-${i}.bin`);
      if (m.offset) fs.writeFileSync(file, Buffer.alloc(m.offset, 0xee));
      await save(t, vm, file, m, true);
      if (m.offset)
        t.ok(
          fs
            .readFileSync(file)
            .subarray(0, m.offset)
            .every((x) => x === 0xee),
          'QEMU kept the bytes before the offset',
        );
      const got = await readFile(root, `from-${i}`, target(file, m));
      const mf = got.manifest;
      t.equal(sha256(path.join(got.dir, 'mem')), sha256(image), 'mem equals the source RAM');
      t.same(blocks(mf), blocks(tcp.manifest), 'the ramblocks a TCP migration gives, byte for byte');
      t.same(mf.file, { path: file, offset: m.offset ?? 0, mappedRam: m.mappedRam });
      t.same(mf.capabilities, m.mappedRam ? ['mapped-ram'] : [], 'capabilities listed in the configuration');
      t.equal(mf.qemu.machineType, 'none');
      t.equal(mf.switchoverStart, true);
      t.ok(fs.readFileSync(path.join(got.dir, 'device-state')).includes(Buffer.from('globalstate')), 'device state saved');
      t.equal(mf.deviceState.vmDescription, true, 'ending with the VM description');
      // Without mapped-ram the file holds the stream a TCP migration without multifd sends (the timer's clock values differ from run to run).
      if (!m.mappedRam) t.equal(mf.deviceState.size, tcp.manifest.deviceState.size, 'as much device state as a TCP migration gives');
      t.same(fs.readdirSync(got.dir).sort(), ['device-state', 'manifest.json', 'mem'], 'the outputs of a TCP migration, nothing else');

      const rep = await inspectQemuFile(target(file, m));
      t.same(rep.errors, [], 'inspect: no errors');
      t.equal(rep.layout, m.mappedRam ? 'mapped-ram' : 'stream');
      t.same(
        rep.ramblocks.map((b) => [b.name, b.size, b.dataPages, b.zeroPages]),
        [['mem', NONE_SIZE, nonZero, NONE_SIZE / PS - nonZero]],
        'inspect: every page once, with data or zero',
      );
      t.same(
        rep.sections.map((x) => x.type),
        ['CONFIGURATION', 'START', ...rep.sections.slice(2, -2).map(() => 'PART'), 'COMMAND', 'END'],
        'inspect: configuration, RAM START, PARTs, SWITCHOVER_START, RAM END',
      );
      t.equal(rep.sections[0]!.at, (m.offset ?? 0) + 8, 'sections at their file bytes');
      if (m.mappedRam) {
        const mr = rep.ramblocks[0]!.mappedRam!;
        t.equal(mr.pagesOffset % (1 << 20), 0, 'the page region at a 1 MiB boundary of the file');
        t.equal(mr.bitmapOffset, mr.headerAt + 28, 'the bitmap right after the 28-byte header');
      }
      t.same(
        rep.deviceState?.devices.map((d) => d.name),
        ['timer', 'globalstate'],
        'inspect: the devices of the VM description',
      );
      t.same(
        fs.readFileSync(path.join(got.dir, 'device-state')),
        fs.readFileSync(file).subarray(rep.deviceState!.at),
        'the device state saved is the file from the RAM END section on',
      );
      const c = await cli(['inspect', uri(file, m)]);
      t.equal(c.code, 0, c.stderr);
      t.match(
        c.stdout,
        new RegExp(`QEMU migration file at byte ${m.offset ?? 0}, .*: ${m.mappedRam ? 'mapped-ram' : 'stream'} layout, machine none`),
      );
      t.match(c.stdout, new RegExp(`ramblock mem: ${NONE_SIZE} bytes, ${NONE_SIZE / PS} pages: ${nonZero} with data`));
      const j = await cli(['inspect', '--json', uri(file, m)]);
      const parsed = JSON.parse(j.stdout) as { qemuFiles: { layout: string }[] };
      t.equal(schemaErrors('InspectJson', parsed), '', 'inspect --json: valid against the JSON Schema');
      t.equal(parsed.qemuFiles[0]!.layout, m.mappedRam ? 'mapped-ram' : 'stream');
    });
  }

  await t.test('through the CLI: recv --qemu --from file:PATH,offset=N', async (t) => {
    const out = path.join(root, 'cli');
    fs.mkdirSync(out);
    const r = await cli(['recv', '--qemu', '--from', `file:${path.join(root, 'save-4.bin')},offset=12345`, '--output', out]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /read QEMU migration file .*save-4\.bin \(mapped-ram, from byte 12345\)/);
    t.equal(sha256(path.join(out, 'mem')), sha256(image));
  });
});

/** A q35 -nodefaults source (TCG, paused) of `b` whose RAM is a copy of the image. */
async function q35Source(root: string, name: string, b: QemuBuild, image: string): Promise<Vm> {
  const ram = path.join(root, `${name}.ram`);
  fs.copyFileSync(image, ram);
  return launch(root, name, q35Machine(ram, Q35_SIZE), b);
}

/** A QEMU 10.0 q35 destination loading `file` with `m` (-incoming defer, then migrate-incoming file:). */
async function load(t: Test, root: string, name: string, file: string, m: Mode) {
  const ram = path.join(root, `${name}.ram`);
  const dst = await launch(root, name, [...q35Machine(ram, Q35_SIZE), '-incoming', 'defer'], QEMU10);
  t.teardown(() => dst.quit());
  await setMode(dst, m);
  await dst.qmp.cmd('migrate-incoming', { uri: uri(file, m) });
  const st = await waitMigration(dst.qmp, 'completed');
  t.equal(st.status, 'completed', `QEMU 10.0 loaded the file ${st['error-desc'] ?? ''}`);
  return { dst, ram };
}

/** Migrates the loaded destination back into mfd over TCP: every ramblock equals `want`'s; then cont runs it. */
async function backAndRun(t: Test, root: string, name: string, dst: Vm, want: QemuManifest) {
  await dst.qmp.cmd('migrate-set-capabilities', {
    capabilities: [
      { capability: 'mapped-ram', state: false },
      { capability: 'multifd', state: false },
    ],
  });
  const back = await overTcp(root, name, dst);
  t.same(blocks(back.manifest), blocks(want), 'the loaded QEMU holds every ramblock, byte for byte');
  t.equal((await waitMigration(dst.qmp, 'completed')).status, 'completed');
  await dst.qmp.cmd('cont');
  t.equal((await dst.qmp.cmd<{ status: string }>('query-status')).status, 'running', 'the guest runs after cont');
}

t.test(
  'mfd send --qemu --to file: -> QEMU 10.0 migrate-incoming file: (q35), and a QEMU save read and written back',
  { skip: QEMU10.missing },
  async (t) => {
    const root = tmpdir(t);
    const image = makeImage(path.join(root, 'image.ram'), Q35_SIZE, 'mixed', 11);
    // A capture over TCP, and a QEMU save (mapped-ram, 4 channels) of an identical VM read back.
    const a = await q35Source(root, 'a', QEMU10, image);
    t.teardown(() => a.quit());
    await setMode(a, { mappedRam: false, channels: 0 });
    const tcp = await overTcp(root, 'tcp', a);
    await a.quit();
    const b = await q35Source(root, 'b', QEMU10, image);
    t.teardown(() => b.quit());
    const saved = path.join(root, 'qemu-save.bin');
    await save(t, b, saved, { mappedRam: true, channels: 4 });
    await b.quit();
    const fromFile = await readFile(root, 'from-file', { path: saved, offset: 0 });
    t.same(
      blocks(fromFile.manifest),
      blocks(tcp.manifest),
      'a q35 save read from the file: every ramblock a TCP migration gives (ROMs, ACPI tables)',
    );
    t.equal(sha256(path.join(fromFile.dir, 'mem')), sha256(image));

    const cases: { name: string; dir: string; m: Mode; back: boolean }[] = [
      { name: 'a TCP capture as a stream file', dir: tcp.dir, m: { mappedRam: false, channels: 0 }, back: true },
      {
        name: 'a TCP capture as a mapped-ram file at offset=1M, loaded with 4 multifd channels',
        dir: tcp.dir,
        m: { mappedRam: true, channels: 4, offset: 1 << 20 },
        back: false,
      },
      {
        name: 'the QEMU save written back as mapped-ram, loaded with 4 multifd channels',
        dir: fromFile.dir,
        m: { mappedRam: true, channels: 4 },
        back: true,
      },
      {
        name: 'the QEMU save written back as mapped-ram, loaded without multifd',
        dir: fromFile.dir,
        m: { mappedRam: true, channels: 0 },
        back: false,
      },
      {
        name: 'the QEMU save written back as a stream file at offset=4096',
        dir: fromFile.dir,
        m: { mappedRam: false, channels: 0, offset: 4096 },
        back: true,
      },
    ];
    for (const [i, c] of cases.entries()) {
      await t.test(c.name, async (t) => {
        const file = path.join(root, `mfd-${i}.bin`);
        if (c.m.offset) fs.writeFileSync(file, Buffer.alloc(c.m.offset, 0xee));
        const r = await sendQemu({
          host: '',
          port: 0,
          dir: c.dir,
          channels: 0,
          compression: 'none',
          methodParams: {},
          connectTimeoutMs: 5000,
          logger: silentLogger,
          file: { target: target(file, c.m), mappedRam: c.m.mappedRam },
        });
        t.equal(
          r.normalPages + r.zeroPages,
          fromFile.manifest.ramblocks.reduce((n, x) => n + x.size / PS, 0),
          'every page of every block written once',
        );
        if (c.m.offset)
          t.ok(
            fs
              .readFileSync(file)
              .subarray(0, c.m.offset)
              .every((x) => x === 0xee),
            'the bytes before the offset kept',
          );
        const { dst, ram } = await load(t, root, `dst-${i}`, file, c.m);
        t.equal(sha256(ram), sha256(image), "the destination's RAM equals the source's");
        if (c.back) await backAndRun(t, root, `back-${i}`, dst, tcp.manifest);
        else {
          await dst.qmp.cmd('cont');
          t.equal((await dst.qmp.cmd<{ status: string }>('query-status')).status, 'running', 'the guest runs after cont');
        }
      });
    }

    await t.test('the mapped-ram file mfd writes from a QEMU save has the layout QEMU wrote', async (t) => {
      const file = path.join(root, 'same.bin');
      const r = await cli(['send', '--qemu', '--to', `file:${file}`, '--mapped-ram', fromFile.dir]);
      t.equal(r.code, 0, r.stderr);
      t.match(r.stdout, /wrote QEMU migration file .*same\.bin \(mapped-ram\)/);
      const [ours, theirs] = [await inspectQemuFile({ path: file, offset: 0 }), await inspectQemuFile({ path: saved, offset: 0 })];
      t.same(ours.ramblocks, theirs.ramblocks, 'the same blocks, headers, bitmaps and region offsets, and pages');
      // Up to the end of the last region (the START section) the files are the same bytes; QEMU then
      // writes as many empty PART sections as it made passes, mfd one.
      const last = theirs.ramblocks[theirs.ramblocks.length - 1]!;
      const end = last.mappedRam!.pagesOffset + last.size;
      t.ok(
        fs.readFileSync(file).subarray(0, end).equals(fs.readFileSync(saved).subarray(0, end)),
        `bytes 0..${end - 1} (header, configuration, block list, bitmaps, regions) equal QEMU's`,
      );
      t.same(
        fs.readFileSync(file).subarray(ours.deviceState!.at),
        fs.readFileSync(saved).subarray(theirs.deviceState!.at),
        'and so does the device state',
      );
    });
  },
);

t.test(
  'QEMU 7.2 (no file: URI; its exec: stream is the stream layout): read, and a file mfd writes loaded',
  { skip: QEMU72.missing },
  async (t) => {
    const root = tmpdir(t);
    const image = makeImage(path.join(root, 'src.ram'), NONE_SIZE, 'mixed', 13);
    const vm = await launch(root, 'src', noneMachine(image, NONE_SIZE), QEMU72);
    t.teardown(() => vm.quit());
    const file = path.join(root, 'save.bin');
    await unthrottle(vm.qmp);
    await vm.qmp.cmd('migrate', { uri: `exec:cat > ${file}` });
    t.equal((await waitMigration(vm.qmp, 'completed')).status, 'completed');
    const got = await readFile(root, 'from', { path: file, offset: 0 });
    t.equal(sha256(path.join(got.dir, 'mem')), sha256(image), 'mem equals the source RAM');
    t.equal(got.manifest.qemu.machineType, 'none');

    const back = path.join(root, 'mfd.bin');
    await sendQemu({
      host: '',
      port: 0,
      dir: got.dir,
      channels: 0,
      compression: 'none',
      methodParams: {},
      connectTimeoutMs: 5000,
      logger: silentLogger,
      file: { target: { path: back, offset: 0 }, mappedRam: false },
    });
    const ram = path.join(root, 'dst.ram');
    const dst = await launch(root, 'dst', [...noneMachine(ram, NONE_SIZE), '-incoming', `exec:cat ${back}`], QEMU72);
    t.teardown(() => dst.quit());
    t.equal((await waitMigration(dst.qmp, 'completed')).status, 'completed', 'QEMU 7.2 loaded the file');
    t.equal(sha256(ram), sha256(image), "the destination's RAM equals the source's");
  },
);

/** A hand-built mapped-ram file: machine none, one ramblock "mem" of `pages` pages; fields of its header as given. */
function mappedRamFile(
  file: string,
  o: {
    at?: number;
    pages?: number;
    version?: number;
    pageSize?: number;
    bitmapOffset?: number;
    pagesOffset?: number;
    extraBit?: boolean;
    cut?: number;
    capability?: string;
  } = {},
) {
  const at = o.at ?? 0;
  const pages = o.pages ?? 8;
  const w = new Writer();
  w.u32(0x5145564d).u32(3);
  w.u8(0x07).u32(4).bytes(Buffer.from('none'));
  w.u8(0x05)
    .str('configuration/capabilities')
    .u32(1)
    .u32(1)
    .str(o.capability ?? 'mapped-ram');
  w.u8(0x01).u32(1).str('ram').u32(0).u32(4);
  w.u64(pages * PS + 0x04)
    .str('mem')
    .u64(pages * PS);
  const head = w.take();
  // Bitmap and pages where QEMU puts them; the header may say otherwise.
  const headerAt = at + head.length;
  const bitmapOffset = headerAt + 28;
  const pagesOffset = Math.ceil((bitmapOffset + 8) / (1 << 20)) * (1 << 20);
  const header = Buffer.alloc(28);
  header.writeUInt32BE(o.version ?? 1, 0);
  header.writeBigUInt64BE(BigInt(o.pageSize ?? PS), 4);
  header.writeBigUInt64BE(BigInt(o.bitmapOffset ?? bitmapOffset), 12);
  header.writeBigUInt64BE(BigInt(o.pagesOffset ?? pagesOffset), 20);
  // Odd pages have data (their number in every byte), even ones are zero.
  const bitmap = Buffer.alloc(8);
  for (let i = 1; i < pages; i += 2) bitmap[i >> 3]! |= 1 << (i & 7);
  if (o.extraBit) bitmap[pages >> 3]! |= 1 << (pages & 7);
  const tail = w.u64(0x10).u8(0x7e).u32(1).u8(0x03).u32(1).u64(0x10).u8(0x7e).u32(1).u8(0x00).take();
  const end = pagesOffset + pages * PS;
  const b = Buffer.alloc(end + tail.length, 0);
  b.fill(0xee, 0, at);
  head.copy(b, at);
  header.copy(b, headerAt);
  bitmap.copy(b, bitmapOffset);
  for (let i = 1; i < pages; i += 2) b.fill(i, pagesOffset + i * PS, pagesOffset + (i + 1) * PS);
  tail.copy(b, end);
  fs.writeFileSync(file, o.cut !== undefined ? b.subarray(0, o.cut) : b);
  return { headerAt, bitmapOffset, pagesOffset, size: b.length };
}

t.test('hostile mapped-ram files: refused with the code and the file byte, nothing left in the output directory', async (t) => {
  const root = tmpdir(t);
  const good = path.join(root, 'good.bin');
  const g = mappedRamFile(good, { at: 4096 });
  const ok = await readFile(root, 'good', { path: good, offset: 4096 });
  const mem = fs.readFileSync(path.join(ok.dir, 'mem'));
  t.equal(mem.length, 8 * PS);
  for (let i = 0; i < 8; i++)
    t.ok(
      mem.subarray(i * PS, (i + 1) * PS).every((x) => x === (i % 2 ? i : 0)),
      `page ${i}: ${i % 2 ? 'its data' : 'zero (bit clear)'}`,
    );
  t.equal(ok.manifest.deviceState.vmDescription, false);

  const cases: [string, Parameters<typeof mappedRamFile>[1], string, RegExp][] = [
    [
      'header version 2',
      { version: 2 },
      'ERR_QEMU_MAPPED_RAM_VERSION',
      new RegExp(`header of ramblock "mem" at byte ${g.headerAt}: version 2, expected 1`),
    ],
    [
      'page size 64 KiB',
      { pageSize: 65536 },
      'ERR_QEMU_MAPPED_RAM_PAGE_SIZE',
      new RegExp(`page size 65536 \\(byte ${g.headerAt + 4}\\), expected 4096`),
    ],
    [
      'bitmap over the header',
      { bitmapOffset: g.headerAt },
      'ERR_QEMU_MAPPED_RAM_OFFSET',
      new RegExp(`bitmap offset ${g.headerAt} \\(byte ${g.headerAt + 12}\\), expected ${g.headerAt + 28} or later`),
    ],
    [
      'bitmap past the end of the file',
      { bitmapOffset: 2 ** 40 },
      'ERR_QEMU_MAPPED_RAM_OFFSET',
      /bitmap offset 1099511627776 .* inside the file's \d+ bytes/,
    ],
    [
      'pages offset not page-aligned',
      { pagesOffset: (1 << 20) + 100 },
      'ERR_QEMU_MAPPED_RAM_ALIGN',
      /pages offset 1048676 \(byte \d+\) is not a multiple of the page size 4096/,
    ],
    [
      'page region over the bitmap',
      { pagesOffset: 0 },
      'ERR_QEMU_MAPPED_RAM_OFFSET',
      new RegExp(`pages offset 0 \\(byte ${g.headerAt + 20}\\) overlaps the bitmap, bytes ${g.bitmapOffset}\\.\\.${g.bitmapOffset + 7}`),
    ],
    [
      'page region past the end of the file',
      { pagesOffset: 1 << 30 },
      'ERR_QEMU_MAPPED_RAM_OFFSET',
      /the page region, bytes 1073741824\.\.1073774591 \(used_length 32768\), ends past the file's \d+ bytes/,
    ],
    [
      'a bitmap bit past the block',
      { extraBit: true },
      'ERR_QEMU_MAPPED_RAM_BITMAP',
      new RegExp(`bit 8 \\(byte ${g.bitmapOffset + 1}\\) is set, but the block has 8 pages`),
    ],
    ['a file cut inside the last page', { cut: g.pagesOffset + 8 * PS - 100 }, 'ERR_QEMU_MAPPED_RAM_OFFSET', /ends past the file's/],
    [
      'a file cut after the pages',
      { cut: g.pagesOffset + 8 * PS + 3 },
      'ERR_QEMU_MAIN_TRUNCATED',
      /the file ends at byte \d+ in the middle of/,
    ],
    [
      'x-ignore-shared',
      { capability: 'x-ignore-shared' },
      'ERR_QEMU_CAPABILITY',
      /capability x-ignore-shared: the pages of shared ramblocks are not in the stream/,
    ],
  ];
  for (const [i, [name, o, code, msg]] of cases.entries()) {
    const file = path.join(root, `bad-${i}.bin`);
    mappedRamFile(file, { at: 4096, ...o });
    const dir = path.join(root, `bad-${i}`);
    fs.mkdirSync(dir);
    const e = await rejection(receiveQemu({ host: '', port: 0, outputDir: dir, logger: silentLogger, from: { path: file, offset: 4096 } }));
    t.equal(e.code, code, `${name}: ${code}`);
    t.match(e.message, msg, `${name}: says what and where`);
    t.same(fs.readdirSync(dir), [], `${name}: nothing left in the output directory`);
    const rep = await inspectQemuFile({ path: file, offset: 4096 });
    t.match(rep.errors[0]?.message ?? '', code, `${name}: inspect reports it`);
  }
  const c = await cli(['inspect', `file:${path.join(root, 'bad-0.bin')},offset=4096`]);
  t.equal(c.code, 3, 'inspect of a hostile file: exit 3');
  t.match(c.stdout, new RegExp(`error at byte ${g.headerAt}: .*version 2, expected 1`));

  // Random bytes over the header, block list, mapped-ram header and bitmap: refused as the peer's
  // fault (an MfdError, never a crash) with nothing left behind, or read into 8 pages of the block.
  const base = fs.readFileSync(good);
  let seed = 42;
  const rand = (n: number): number => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
  let refused = 0;
  for (let i = 0; i < 150; i++) {
    const b = Buffer.from(base);
    for (let k = 1 + rand(3); k > 0; k--) b[4096 + rand(g.bitmapOffset + 8 - 4096)] = rand(256);
    const file = path.join(root, 'mutant.bin');
    fs.writeFileSync(file, b);
    const dir = fs.mkdtempSync(path.join(root, 'mutant-'));
    try {
      const r = await receiveQemu({ host: '', port: 0, outputDir: dir, logger: silentLogger, from: { path: file, offset: 4096 } });
      if (r.manifest.ramblocks.some((x) => x.size !== fs.statSync(path.join(dir, x.file)).size))
        t.fail(`mutant ${i}: an output of another size than its block`);
    } catch (e) {
      refused++;
      if (!(e instanceof MfdError)) t.fail(`mutant ${i}: ${String(e)}`);
      else if (fs.readdirSync(dir).length > 0) t.fail(`mutant ${i}: ${e.code} left ${fs.readdirSync(dir).join(', ')}`);
    }
    fs.rmSync(dir, { recursive: true });
  }
  t.ok(refused > 100, `150 mutated files: ${refused} refused as MfdErrors with nothing left behind, the rest read whole`);

  // QEMU writes mapped-ram to files only: the same bytes over TCP are refused.
  const { result } = await receiveStreams(t, fs.readFileSync(good).subarray(4096));
  await t.rejects(result, {
    code: 'ERR_QEMU_CAPABILITY',
    message: /capability mapped-ram, which QEMU writes to files only: read it with --from file:PATH/,
  });
});
