/**
 * The library's one call per side: migrate() and migrateIncoming() take where the migration goes (or
 * comes from) as one typed value, and pick the path by its kind. Over TCP and through a file the image
 * arrives byte for byte; a kind's options are its own (a tcp option on a file is a type error); a QEMU
 * source refuses NAME=PATH outputs before it listens.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { migrate, migrateIncoming, UsageError, type IncomingResult, type SendDestination } from '../../src/index.js';
import { silentLogger } from '../../src/log.js';
import { makeImage, rejection, sha256, tmpdir } from '../helpers/index.js';

const pipeline = {
  channels: 2,
  pageSize: 4096,
  compression: 'zstd' as const,
  methodParams: {},
  zeroPageDetection: 'multifd',
  logger: silentLogger,
};

t.test('tcp: migrateIncoming listens, migrate sends, the image arrives', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'ram0'), 3 << 20, 'mixed');
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  let received!: Promise<IncomingResult>;
  const port = await new Promise<number>((resolve, reject) => {
    received = migrateIncoming(
      { kind: 'tcp', host: '127.0.0.1', port: 0, timeoutMs: 10_000 },
      { outputDir: out, logger: silentLogger, onListening: (a) => resolve(a.port) },
    );
    received.catch(reject);
  });
  const sent = await migrate({ kind: 'tcp', host: '127.0.0.1', port }, { ...pipeline, images: [img] });
  const got = await received;
  t.equal(sent.kind, 'tcp');
  t.equal(got.kind, 'tcp');
  if (sent.kind === 'tcp') t.equal(sent.stats.channels, 2, 'two channels');
  if (sent.kind === 'tcp')
    t.equal(sent.stats.imageAccess, undefined, 'zstd: the compute workers read the pages, no image access to report');
  t.equal(sha256(path.join(out, 'ram0')), sha256(img));
});

t.test('file: migrate writes at the offset, migrateIncoming restores from it', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'ram0'), 2 << 20, 'mixed', 7);
  const file = path.join(dir, 'mig');
  fs.writeFileSync(file, Buffer.alloc(8192, 0xab));
  const dest: SendDestination = { kind: 'file', path: file, offset: 8192 };
  const saved = await migrate(dest, { ...pipeline, images: [`ram0=${img}`] });
  t.equal(saved.kind, 'file');
  if (saved.kind === 'file') t.equal(saved.file.offset, 8192);
  t.same(fs.readFileSync(file).subarray(0, 8192), Buffer.alloc(8192, 0xab), 'the bytes before the offset are untouched');
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const restored = await migrateIncoming({ kind: 'file', path: file, offset: 8192 }, { outputDir: out, logger: silentLogger });
  t.equal(restored.kind, 'file');
  t.equal(sha256(path.join(out, 'ram0')), sha256(img));
});

t.test("a kind's options are its own", async (t) => {
  // @ts-expect-error resume is a tcp destination's option, not a file's
  const bad: SendDestination = { kind: 'file', path: '/x', offset: 0, resume: true };
  // @ts-expect-error a qemu destination has no security (QEMU's channels do not speak mfd's authentication)
  const bad2: SendDestination = { kind: 'qemu', host: 'h', port: 1, security: undefined };
  t.ok(bad && bad2);
});

t.test('a QEMU source takes one output directory, refused before it listens', async (t) => {
  const e = await rejection(
    migrateIncoming(
      { kind: 'qemu', host: '127.0.0.1', port: 0 },
      { outputMap: new Map([['pc.ram', '/tmp/x']]), logger: silentLogger, onListening: () => t.fail('listened') },
    ),
  );
  t.type(e, UsageError);
  t.match(e.message, /--qemu writes every ramblock into one directory/);
});
