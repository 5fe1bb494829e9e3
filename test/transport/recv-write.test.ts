/**
 * A packet whose payload is its pages as they are (compression none), read, digested and written by the
 * channel's native thread in one operation (SocketChannel.recvWrite through NativeChannel.recvWrite, what
 * the receiver's DataChannel uses for them): the pages land at their offsets, their CRCs come back, zero
 * pages are written only when asked, the next header is read ahead; a stream that ends inside the payload
 * writes nothing; a write that fails (a full disk, non-zero bytes past the block's end) is the file's
 * error, not the socket's, and the process lives on.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { NativeChannel, type PageWriteTo } from '../../src/transport/native-channel.js';
import { NativeIoError } from '../../src/errors.js';
import { native } from '../../src/native/load.js';
import { socketPair, tmpdir } from '../helpers/index.js';

const PS = 4096;

async function channel(t: Test): Promise<{ a: import('node:net').Socket; rx: NativeChannel }> {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  return { a, rx: NativeChannel.attach(b, true)!.channel };
}

function output(t: Test, size: number, fill = 0): { fd: number; file: string } {
  const file = path.join(tmpdir(t), 'out.img');
  fs.writeFileSync(file, Buffer.alloc(size, fill));
  const fd = fs.openSync(file, 'r+');
  t.teardown(() => fs.closeSync(fd));
  return { fd, file };
}

t.test('pages land at their offsets with their CRCs; zero pages are written only when asked; the next header comes ahead', async (t) => {
  const { a, rx } = await channel(t);
  const size = 16 * PS;
  const { fd, file } = output(t, size, 0xee);
  // Two runs of consecutive pages, out of order, then two zero pages.
  const offsets = new Float64Array([5 * PS, 6 * PS, 7 * PS, 1 * PS, 12 * PS, 13 * PS]);
  const pages = randomBytes(4 * PS);
  const next = randomBytes(20);
  a.write(Buffer.concat([pages, next]));
  await new Promise((r) => setTimeout(r, 50));
  const w: PageWriteTo = { fd, pageSize: PS, offsets, normal: 4, zero: 2, blockSize: size, writeZeros: true };
  const crc = new Uint32Array(4);
  const ahead = Buffer.alloc(32);
  const r = await rx.recvWrite(Buffer.alloc(4 * PS), w, crc, 5000, ahead);
  t.same(r, { got: 4 * PS, ahead: 20 }, 'the payload, then what had arrived of the next header');
  t.same(ahead.subarray(0, 20), next);
  const got = fs.readFileSync(file);
  for (let i = 0; i < 4; i++) {
    const page = pages.subarray(i * PS, (i + 1) * PS);
    t.same(got.subarray(offsets[i]!, offsets[i]! + PS), page, `page ${i} at offset ${offsets[i]}`);
    t.equal(crc[i], native.crc32c(page), `page ${i}'s CRC`);
  }
  t.ok(
    got.subarray(12 * PS, 14 * PS).every((b) => b === 0),
    'zero pages written as zeros',
  );
  t.ok(got.subarray(0, PS).every((b) => b === 0xee) && got.subarray(14 * PS).every((b) => b === 0xee), 'nothing else touched');

  const more = randomBytes(PS);
  a.write(more);
  const keep = { ...w, offsets: new Float64Array([0, 15 * PS]), normal: 1, zero: 1, writeZeros: false };
  t.same(await rx.recvWrite(Buffer.alloc(PS), keep, new Uint32Array(1), 5000), { got: PS, ahead: 0 });
  const again = fs.readFileSync(file);
  t.same(again.subarray(0, PS), more);
  t.ok(
    again.subarray(15 * PS).every((b) => b === 0xee),
    'a zero page is left alone without writeZeros',
  );
});

t.test('a stream that ends inside the payload reads short and writes nothing', async (t) => {
  const { a, rx } = await channel(t);
  const { fd, file } = output(t, 4 * PS, 0xee);
  a.end(randomBytes(PS + 100));
  const w: PageWriteTo = { fd, pageSize: PS, offsets: new Float64Array([0, PS]), normal: 2, zero: 0, blockSize: 4 * PS, writeZeros: false };
  t.same(await rx.recvWrite(Buffer.alloc(2 * PS), w, new Uint32Array(2), 5000), { got: PS + 100, ahead: 0 });
  t.ok(
    fs.readFileSync(file).every((b) => b === 0xee),
    'the file is as it was',
  );
});

t.test(
  'a full disk is the file write failure ENOSPC, not the socket failing; the channel lives on',
  { skip: !fs.existsSync('/dev/full') },
  async (t) => {
    const { a, rx } = await channel(t);
    const fd = fs.openSync('/dev/full', 'w');
    t.teardown(() => fs.closeSync(fd));
    a.write(randomBytes(PS));
    const w: PageWriteTo = { fd, pageSize: PS, offsets: new Float64Array([0]), normal: 1, zero: 0, blockSize: PS, writeZeros: false };
    const e = await rx.recvWrite(Buffer.alloc(PS), w, new Uint32Array(1), 5000).catch((x: unknown) => x);
    t.ok(e instanceof NativeIoError, 'a NativeIoError');
    t.match(e, { code: 'ENOSPC', on: 'file', op: 'write' });
    a.write(Buffer.from('next'));
    const after = Buffer.alloc(4);
    t.same(await rx.recv(after, 0, 5000), { got: 4, ahead: 0 }, 'the socket reads on');
    t.equal(after.toString(), 'next');
  },
);

t.test('non-zero bytes past the end of the block are EPADDING, naming the page', async (t) => {
  const { a, rx } = await channel(t);
  const size = 2 * PS - 100;
  const { fd } = output(t, size);
  a.write(randomBytes(2 * PS));
  const w: PageWriteTo = { fd, pageSize: PS, offsets: new Float64Array([0, PS]), normal: 2, zero: 0, blockSize: size, writeZeros: false };
  const e = await rx.recvWrite(Buffer.alloc(2 * PS), w, new Uint32Array(2), 5000).catch((x: unknown) => x);
  t.match(e, { code: 'EPADDING', on: 'file', op: 'write', badPage: 1 });
});

t.test('a buffer that is not the pages is refused before anything is read', async (t) => {
  const { rx } = await channel(t);
  const w: PageWriteTo = { fd: 0, pageSize: PS, offsets: new Float64Array([0]), normal: 1, zero: 0, blockSize: PS, writeZeros: false };
  await t.rejects(rx.recvWrite(Buffer.alloc(PS - 1), w, new Uint32Array(1), 5000), RangeError);
  await t.rejects(rx.recvWrite(Buffer.alloc(PS), { ...w, normal: 2 }, new Uint32Array(2), 5000), RangeError);
});
