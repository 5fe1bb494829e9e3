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

const noLibzstd = native.zstdVersion === null ? 'the addon was built without libzstd-dev (no ZstdStream)' : false;

/** `pages` as one packet of a fresh zstd stream (ZstdStream, level 1). */
function zstdPacket(pages: Uint8Array): Buffer {
  const z = new native.ZstdStream!(false, 1, 0);
  const out = Buffer.alloc(pages.length + 1024);
  const n = z.compress([pages], out);
  z.close();
  return out.subarray(0, n);
}

t.test(
  "with a stream's decoder: the payload is decoded into the pages' room, then written and digested; the stream closed meanwhile is still whole",
  { skip: noLibzstd },
  async (t) => {
    const { a, rx } = await channel(t);
    const size = 8 * PS;
    const { fd, file } = output(t, size, 0xee);
    const pages = Buffer.concat([randomBytes(PS), Buffer.alloc(PS, 7)]);
    const payload = zstdPacket(pages);
    const z = new native.ZstdStream!(true, 0, 27);
    const decoder = z.decoder();
    // The JS object lets its stream go; the operation that runs the decoder keeps it.
    z.close();
    a.write(payload);
    const w: PageWriteTo = {
      fd,
      pageSize: PS,
      offsets: new Float64Array([3 * PS, 0]),
      normal: 2,
      zero: 0,
      blockSize: size,
      writeZeros: false,
    };
    const crc = new Uint32Array(2);
    const room = Buffer.alloc(2 * PS);
    const r = await rx.recvWrite(Buffer.alloc(payload.length), w, crc, 5000, undefined, { decoder, pages: room });
    t.same(r, { got: payload.length, ahead: 0 }, 'the whole payload read, nothing refused');
    const got = fs.readFileSync(file);
    t.ok(
      got.subarray(3 * PS, 4 * PS).equals(pages.subarray(0, PS)) && got.subarray(0, PS).equals(pages.subarray(PS)),
      'the decoded pages at their offsets',
    );
    t.ok(got.subarray(PS, 3 * PS).equals(Buffer.alloc(2 * PS, 0xee)), 'nothing else written');
    t.same(Array.from(crc), [native.crc32c(pages.subarray(0, PS)), native.crc32c(pages.subarray(PS))], 'their CRCs');
  },
);

t.test(
  "with a stream's decoder: a payload it refuses is written nowhere and comes back with the decoder's reason",
  { skip: noLibzstd },
  async (t) => {
    const { a, rx } = await channel(t);
    const { fd, file } = output(t, 4 * PS, 0xee);
    const decoder = new native.ZstdStream!(true, 0, 27).decoder();
    const w: PageWriteTo = {
      fd,
      pageSize: PS,
      offsets: new Float64Array([0, PS]),
      normal: 2,
      zero: 0,
      blockSize: 4 * PS,
      writeZeros: false,
    };
    // One page where the header says two: decoded to half the room.
    const short = zstdPacket(randomBytes(PS));
    a.write(short);
    const r1 = await rx.recvWrite(Buffer.alloc(short.length), w, new Uint32Array(2), 5000, undefined, {
      decoder,
      pages: Buffer.alloc(2 * PS),
    });
    t.same(r1, { got: short.length, ahead: 0, refused: { decoded: PS, code: null, message: '' } }, 'decoded to fewer bytes than the pages');
    const junk = Buffer.alloc(64, 0xff);
    a.write(junk);
    const d2 = new native.ZstdStream!(true, 0, 27).decoder();
    const r2 = await rx.recvWrite(junk, w, new Uint32Array(2), 5000, undefined, { decoder: d2, pages: Buffer.alloc(2 * PS) });
    t.match(r2, { got: 64, refused: { decoded: -1, code: 'ERR_PAYLOAD_CORRUPT', message: /^decompressStream returned / } }, 'not zstd');
    t.ok(fs.readFileSync(file).equals(Buffer.alloc(4 * PS, 0xee)), 'the file as it was');
  },
);

t.test("a decoder that is not a stream's, or a room that is not the pages, is refused before anything is read", async (t) => {
  const { rx } = await channel(t);
  const w: PageWriteTo = { fd: 0, pageSize: PS, offsets: new Float64Array([0]), normal: 1, zero: 0, blockSize: PS, writeZeros: false };
  const fake = {} as unknown as import('../../src/native/binding.js').DecoderHandle;
  await t.rejects(
    rx.recvWrite(Buffer.alloc(10), w, new Uint32Array(1), 5000, undefined, { decoder: fake, pages: Buffer.alloc(PS) }),
    TypeError,
  );
  if (native.ZstdStream) {
    const decoder = new native.ZstdStream(true, 0, 27).decoder();
    await t.rejects(
      rx.recvWrite(Buffer.alloc(10), w, new Uint32Array(1), 5000, undefined, { decoder, pages: Buffer.alloc(PS - 1) }),
      RangeError,
    );
  }
});
