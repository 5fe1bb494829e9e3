/**
 * One error shape for the addon's I/O: the addon exports its result codes (no copy of their values
 * in TypeScript), every native I/O failure is a NativeIoError with its fields, and nativeIoFailure()
 * is the one place it becomes an MfdError.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from '../helpers/index.js';
import { native } from '../../src/native/load.js';
import { nativeIoError, resultName } from '../../src/native/io-error.js';
import { preadPieces, pwritePieces } from '../../src/native/file-io.js';
import { analysePages, writePacket } from '../../src/native/packet-io.js';
import { ConnectionError, ExitCode, IoError, NativeIoError, asMfdError, errorText, nativeIoFailure } from '../../src/errors.js';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

t.test('the addon exports its result codes, and they name themselves back', async (t) => {
  const codes = native.resultCodes;
  t.same(Object.keys(codes).sort(), ['EPADDING', 'ESHORTREAD', 'ESHORTWRITE', 'ESTALLED']);
  t.ok(Object.isFrozen(codes), 'not to be changed from JS');
  const values = Object.values(codes);
  t.equal(new Set(values).size, values.length, 'distinct');
  const errnos = new Set(Object.values(os.constants.errno).map((e) => -e));
  for (const [name, value] of Object.entries(codes)) {
    t.ok(Number.isInteger(value) && value < 0 && !errnos.has(value), `${name}: negative, never a -errno`);
    t.equal(resultName(value), name, `${name} round-trips`);
    t.equal(nativeIoError(value, { on: 'file', op: 'read' }).code, name);
  }
  t.equal(resultName(-os.constants.errno.ENOSPC), 'ENOSPC', '-errno is its name');
  const e = nativeIoError(-os.constants.errno.ECONNRESET, { on: 'socket', op: 'write' });
  t.match(e, { code: 'ECONNRESET', errno: os.constants.errno.ECONNRESET });
  t.equal(nativeIoError(codes.ESTALLED, { on: 'socket', op: 'read' }).errno, undefined, "the addon's own codes are no errno");
});

t.test('no copy of the result codes in src/', async (t) => {
  const hits: string[] = [];
  const walk = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) walk(p);
      else if (p.endsWith('.ts') && /\b10000[0-3]\b/.test(fs.readFileSync(p, 'utf8'))) hits.push(path.relative(src, p));
    }
  };
  walk(src);
  t.same(hits, [], 'every value comes from native.resultCodes');
});

t.test('a native short read: NativeIoError ESHORTREAD with position and counts', async (t) => {
  const file = path.join(tmpdir(t), 'f');
  fs.writeFileSync(file, Buffer.alloc(100, 1));
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  const e = await preadPieces(fd, [Buffer.alloc(10)], [95]).catch((x: unknown) => x);
  t.ok(e instanceof NativeIoError);
  t.match(e, { name: 'NativeIoError', code: 'ESHORTREAD', on: 'file', op: 'read', at: 95, asked: 10, moved: 5 });
  t.equal((e as NativeIoError).message, 'read at byte 95: end of file, read 5 of 10 bytes');

  // The same class for a scan of a mapping whose file shrank, and for a packet's page write.
  const big = path.join(tmpdir(t), 'g');
  fs.writeFileSync(big, Buffer.alloc(8 * 4096, 1));
  const gfd = fs.openSync(big, 'r+');
  t.teardown(() => fs.closeSync(gfd));
  const map = new Uint8Array(native.mapRange(gfd, 0, 8 * 4096));
  fs.ftruncateSync(gfd, 4096);
  const scan = await analysePages(map, 4096, 8, null, new Uint32Array(8)).catch((x: unknown) => x);
  native.unmapRange(map.buffer as ArrayBuffer);
  t.ok(scan instanceof NativeIoError);
  t.match(scan, { code: 'ESHORTREAD', on: 'pages', op: 'scan' });
  const ro = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(ro));
  const w = await writePacket({
    fd: ro,
    pages: [Buffer.alloc(4096, 7)],
    pageSize: 4096,
    offsets: new Float64Array([0]),
    normal: 1,
    zero: 0,
    blockSize: 4096,
    writeZeros: false,
    crc: new Uint32Array(1),
  }).catch((x: unknown) => x);
  t.ok(w instanceof NativeIoError);
  t.match(w, { code: 'EBADF', errno: os.constants.errno.EBADF, on: 'file', op: 'write' });
});

t.test('nativeIoFailure: the one way to an MfdError, with what the caller knows as fields', async (t) => {
  const full = fs.openSync('/dev/full', 'w');
  t.teardown(() => fs.closeSync(full));
  const e = (await pwritePieces(full, [Buffer.alloc(4096)], [8192]).catch((x: unknown) => x)) as NativeIoError;
  t.match(e, { code: 'ENOSPC', on: 'file', op: 'write', at: 8192, asked: 4096 });
  const io = nativeIoFailure(e, { subject: 'migration file "/dev/full"' });
  t.ok(io instanceof IoError);
  t.match(io, { code: 'ERR_ENOSPC', exitCode: ExitCode.IO, cause: e });
  t.equal(io.message, 'writing migration file "/dev/full" at byte 8192: ENOSPC (4096 bytes)');

  const short = new NativeIoError('ESHORTWRITE', { on: 'file', op: 'write', at: 0, asked: 12288, moved: 8192 });
  t.match(nativeIoFailure(short, { subject: 'image "x"' }), {
    code: 'ERR_SHORT_WRITE',
    message: 'writing image "x" at byte 0: short write, 8192 of 12288 bytes written (disk full, or a file size limit?)',
  });

  const reset = new NativeIoError('ECONNRESET', { on: 'socket', op: 'write', asked: 100, moved: 40 });
  const c = nativeIoFailure(reset, { channel: 2 });
  t.ok(c instanceof ConnectionError);
  t.match(c, { code: 'ERR_CHANNEL_CONNECTION', exitCode: ExitCode.CONNECTION, channel: 2, message: 'write: ECONNRESET' });
  t.equal(errorText(c), 'channel 2: write: ECONNRESET', 'the place once, from the field');
  t.match(nativeIoFailure(reset, { code: 'ERR_QEMU_DESTINATION', subject: 'multifd channel 1', hint: 'is it running?' }), {
    code: 'ERR_QEMU_DESTINATION',
    message: 'multifd channel 1: write: ECONNRESET (is it running?)',
  });

  // Not converted by its caller: still an I/O failure of this host, never an internal error.
  t.match(asMfdError(e), { code: 'ERR_ENOSPC', exitCode: ExitCode.IO });
  t.match(asMfdError(reset), { code: 'ERR_CHANNEL_CONNECTION', exitCode: ExitCode.CONNECTION });
});
