/** The natives behind migration files: positional I/O with short-write detection, aligned buffers, copy + CRC. */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tmpdir } from '../helpers/index.js';
import { native } from '../../src/native/load.js';
import { alignedBuffer, preadPieces, pwritePieces } from '../../src/native/file-io.js';
import { NativeIoError } from '../../src/errors.js';

t.test('crc32c continues from a seed; copyCrc32c copies and checksums in one pass', async (t) => {
  const a = Buffer.from('hello, ');
  const b = Buffer.from('migration file');
  const whole = native.crc32c(Buffer.concat([a, b]));
  t.equal(native.crc32c(b, native.crc32c(a)), whole);
  t.equal(native.crc32c(Buffer.from('123456789')), 0xe3069283, 'the CRC-32C check value');
  const dst = new Uint8Array(64);
  const crc = native.copyCrc32c(dst.subarray(3), b, native.crc32c(a));
  t.equal(crc, whole);
  t.same(Buffer.from(dst.subarray(3, 3 + b.length)), b);
  t.throws(() => native.copyCrc32c(new Uint8Array(2), b, 0), /dst shorter than src/);
});

t.test('alignedBuffer: zeroed, a multiple of 4096, refuses other sizes', async (t) => {
  const buf = alignedBuffer(8192);
  t.equal(buf.length, 8192);
  t.ok(buf.every((x) => x === 0));
  t.throws(() => alignedBuffer(1000), /multiple of 4096/);
});

t.test('positional writes and reads of pieces; contiguous pieces share a call', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'f');
  const fd = fs.openSync(file, 'w+');
  t.teardown(() => fs.closeSync(fd));
  await pwritePieces(fd, [Buffer.from('abc'), Buffer.from('def'), Buffer.from('XYZ')], [10, 13, 100]);
  const content = fs.readFileSync(file);
  t.equal(content.length, 103);
  t.equal(content.subarray(10, 16).toString(), 'abcdef');
  t.equal(content.subarray(100).toString(), 'XYZ');
  t.ok(
    content.subarray(0, 10).every((x) => x === 0),
    'nothing written before the first position',
  );
  const x = Buffer.alloc(4);
  const y = Buffer.alloc(3);
  await preadPieces(fd, [x, y], [12, 100]);
  t.equal(x.toString(), 'cdef');
  t.equal(y.toString(), 'XYZ');
  const e = await preadPieces(fd, [Buffer.alloc(10)], [98]).then(
    () => null,
    (err: unknown) => err,
  );
  t.ok(e instanceof NativeIoError);
  t.match(e, { code: 'ESHORTREAD', on: 'file', op: 'read', at: 98, asked: 10, moved: 5 });
  // Writing with writeback started at once (buffered saves) writes the same bytes.
  await pwritePieces(fd, [Buffer.from('wb')], [200], true);
  t.equal(fs.readFileSync(file).subarray(200).toString(), 'wb');
});

t.test('a failed write is reported with errno, position and size', async (t) => {
  const fd = fs.openSync('/dev/full', 'w');
  t.teardown(() => fs.closeSync(fd));
  const e = await pwritePieces(fd, [Buffer.alloc(4096)], [0]).then(
    () => null,
    (err: unknown) => err,
  );
  t.match(e, { code: 'ENOSPC', errno: os.constants.errno.ENOSPC, on: 'file', op: 'write', at: 0, asked: 4096 });
});

t.test('a short write is an error at once (file size limit), never retried into a silent success', async (t) => {
  // RLIMIT_FSIZE makes the kernel accept only part of a write that crosses it.
  const dir = tmpdir(t);
  const file = path.join(dir, 'f');
  const script = `
    import fs from 'node:fs';
    import { pwritePieces } from ${JSON.stringify(path.resolve('dist/native/file-io.js'))};
    const fd = fs.openSync(${JSON.stringify(file)}, 'w');
    pwritePieces(fd, [Buffer.alloc(3 * 4096, 1)], [0]).then(() => console.log('ok'), (e) => console.log(JSON.stringify({ code: e.code, at: e.at, asked: e.asked, moved: e.moved })));
  `;
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync('sh', ['-c', `ulimit -f 8; unset NODE_OPTIONS; exec "${process.execPath}" --input-type=module -e "$0"`, script], {
    encoding: 'utf8',
  });
  t.equal(r.status, 0, r.stderr);
  const e = JSON.parse(r.stdout) as { code: string; at: number; asked: number; moved: number };
  t.match(e, { code: 'ESHORTWRITE', at: 0, asked: 12288 }, 'reported as a short write');
  t.ok(e.moved > 0 && e.moved < e.asked, `part of the write went through (${e.moved} bytes)`);
  t.equal(fs.statSync(file).size, e.moved, 'the reported count is what reached the file');
});
