/**
 * A channel's socket on its native thread (addon/socket_channel.cc through
 * transport/native-channel.ts): whole packets out as one batch, a header and
 * then the payload it announces read in, each filling a buffer, bytes libuv
 * had read before the handover, the end of the stream at and inside a packet,
 * timeouts both ways, a peer that hangs up,
 * and destroy() while an operation blocks on the fd.
 */
import t from 'tap';
import net from 'node:net';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import { NativeChannel } from '../../src/transport/native-channel.js';
import { NativeIoError } from '../../src/errors.js';
import { socketPair } from '../helpers/index.js';

const HS = 32; // a toy header: its u32 at SIZE_AT announces the payload
const SIZE_AT = 20;

function packet(payload: Buffer, announced = payload.length): Buffer {
  const h = randomBytes(HS);
  h.writeUInt32BE(announced, SIZE_AT);
  return Buffer.concat([h, payload]);
}

t.test('packets sent in pieces arrive whole, each framed by its header', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const tx = NativeChannel.attach(a, false)!;
  const rx = NativeChannel.attach(b, true)!;
  t.ok(tx && rx, 'plain sockets are taken over');
  const sent = [packet(randomBytes(70_000)), packet(Buffer.alloc(0)), packet(randomBytes(1))];
  // Pieces of odd sizes, so the batch spans many iovecs and partial sends.
  const pieces = (p: Buffer): Buffer[] => [p.subarray(0, 5), p.subarray(5, HS + 3), p.subarray(HS + 3)];
  await Promise.all(sent.map((p) => tx.channel.send(pieces(p), 5000)));
  for (const p of sent) {
    const header = Buffer.alloc(HS);
    t.equal((await rx.channel.recv(header.subarray(0, 5), 0, 5000)).got, 5, 'a buffer is filled, no more');
    t.equal((await rx.channel.recv(header, 5, 5000)).got, HS, 'a read goes on after the bytes the buffer holds');
    const payload = Buffer.alloc(header.readUInt32BE(SIZE_AT));
    t.equal((await rx.channel.recv(payload, 0, 5000)).got, payload.length, 'then exactly the payload the header announced');
    t.same(Buffer.concat([header, payload]), p);
  }
  t.equal((await rx.channel.recv(Buffer.alloc(0), 0, 5000)).got, 0, 'an empty buffer is full at once');
  const half = Buffer.alloc(8);
  t.equal((await rx.channel.recv(half, 8, 5000)).got, 8, 'so is one whose bytes are all there');
  tx.channel.close();
  a.end();
  t.equal((await rx.channel.recv(Buffer.alloc(HS), 0, 5000)).got, 0, 'the end of the stream at a packet boundary reads as 0 bytes');
});

t.test('the next header, as far as it has arrived, comes with the payload before it', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const rx = NativeChannel.attach(b, true)!.channel;
  const p1 = packet(randomBytes(3000));
  const p2 = packet(randomBytes(10));
  a.write(Buffer.concat([p1, p2.subarray(0, HS - 7)]));
  const header = Buffer.alloc(HS);
  t.same(await rx.recv(header, 0, 5000), { got: HS, ahead: 0 }, 'a header alone');
  // The rest of the first packet and most of the second header, all arrived before the payload is asked for.
  await new Promise((r) => setTimeout(r, 100));
  const payload = Buffer.alloc(3000);
  t.same(await rx.recv(payload, 0, 5000, header), { got: 3000, ahead: HS - 7 }, 'the payload, then what arrived of the next header');
  t.same(Buffer.concat([payload]), p1.subarray(HS));
  t.same(header.subarray(0, HS - 7), p2.subarray(0, HS - 7), 'into the buffer given for it');
  a.write(p2.subarray(HS - 7));
  t.same(await rx.recv(header, HS - 7, 5000), { got: HS, ahead: 0 }, 'the header read goes on after it');
  t.same(header, p2.subarray(0, HS));
  t.same(
    await rx.recv(Buffer.alloc(10), 0, 5000, Buffer.alloc(HS)),
    { got: 10, ahead: 0 },
    'with nothing more arrived, nothing is read ahead, and nothing waited for',
  );
});

t.test('recvHeaders: a run of headers without payload in one read, up to the first that announces one', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const rx = NativeChannel.attach(b, true)!.channel;
  const zeros = [packet(Buffer.alloc(0)), packet(Buffer.alloc(0)), packet(Buffer.alloc(0))];
  const withPayload = packet(randomBytes(100));
  const after = packet(Buffer.alloc(0));
  a.write(Buffer.concat([...zeros, withPayload, after]));
  await new Promise((r) => setTimeout(r, 100));
  const batch = Buffer.alloc(8 * HS);
  const got = await rx.recvHeaders(batch, 0, HS, SIZE_AT, 5000);
  t.equal(got, 4 * HS, 'three headers without payload and the one with, no more');
  t.same(batch.subarray(0, 4 * HS), Buffer.concat([...zeros, withPayload.subarray(0, HS)]));
  const payload = Buffer.alloc(100);
  t.equal((await rx.recv(payload, 0, 5000)).got, 100, 'the payload is still in the socket, whole');
  t.same(payload, withPayload.subarray(HS));
  t.equal(await rx.recvHeaders(batch, 0, HS, SIZE_AT, 5000), HS, 'then the last header');
  t.same(batch.subarray(0, HS), after);

  // Room for two: the batch stops at the buffer's end; the rest stays for the next read.
  const run = [packet(Buffer.alloc(0)), packet(Buffer.alloc(0)), packet(Buffer.alloc(0))];
  a.write(Buffer.concat(run));
  await new Promise((r) => setTimeout(r, 100));
  const two = Buffer.alloc(2 * HS + 5);
  t.equal(await rx.recvHeaders(two, 0, HS, SIZE_AT, 5000), 2 * HS, 'whole headers only, as many as fit');
  t.equal(await rx.recvHeaders(two, 0, HS, SIZE_AT, 5000), HS, 'the third with the next read');
  t.same(two.subarray(0, HS), run[2]);

  // A header begun is not taken in part: it comes whole with the next read.
  const next = packet(Buffer.alloc(0));
  const last = packet(Buffer.alloc(0));
  a.write(Buffer.concat([next, last.subarray(0, 10)]));
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await rx.recvHeaders(batch, 0, HS, SIZE_AT, 5000), HS, 'the whole header, not the part of the next');
  t.same(batch.subarray(0, HS), next);
  a.write(last.subarray(10));
  t.equal(await rx.recvHeaders(batch, 0, HS, SIZE_AT, 5000), HS, 'it comes whole with the next read');
  t.same(batch.subarray(0, HS), last);
  const early = packet(Buffer.alloc(0));
  batch.set(early.subarray(0, 4));
  a.write(early.subarray(4));
  t.equal(await rx.recvHeaders(batch, 4, HS, SIZE_AT, 5000), HS, 'a read goes on after the bytes the buffer holds');
  t.same(batch.subarray(0, HS), early);

  await t.rejects(rx.recvHeaders(Buffer.alloc(HS - 1), 0, HS, SIZE_AT, 5000), /headerSize/, 'a buffer shorter than a header is refused');
  a.end();
  t.equal(await rx.recvHeaders(batch, 0, HS, SIZE_AT, 5000), 0, 'the end of the stream at a packet boundary reads as 0 bytes');
});

t.test('small sends go out from the calling thread, in order with large ones queued on the channel thread', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const tx = NativeChannel.attach(a, false)!.channel;
  // Large ones fill the socket's buffers (nothing reads yet), so the small ones after them queue behind.
  const sent = [randomBytes(4 << 20), randomBytes(100), randomBytes(3 << 20), randomBytes(200), randomBytes(300)];
  const done = Promise.all(sent.map((p) => tx.send([p.subarray(0, 7), p.subarray(7)], 5000)));
  const chunks: Buffer[] = [];
  let bytes = 0;
  const total = sent.reduce((n, p) => n + p.length, 0);
  await new Promise<void>((resolve) => {
    b.on('data', (c: Buffer) => {
      chunks.push(c);
      if ((bytes += c.length) === total) resolve();
    });
  });
  await done;
  t.ok(Buffer.concat(chunks).equals(Buffer.concat(sent)), 'every byte, in the order sent');
  // With nothing queued, a small send is done at once.
  const more = randomBytes(64);
  await tx.send([more], 5000);
  const got = await new Promise<Buffer>((resolve) => b.once('data', resolve));
  t.same(got, more, 'a small send on an idle channel');
});

t.test('bytes read before the handover are kept for the first packet', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const p1 = packet(randomBytes(3000));
  const p2 = packet(randomBytes(5000));
  a.write(Buffer.concat([p1, p2]));
  // Let libuv deliver the bytes to the JS socket before the handover.
  await new Promise<void>((r) => b.once('readable', () => r()));
  const rx = NativeChannel.attach(b, true)!;
  const early = Buffer.concat(rx.buffered);
  t.ok(early.length > 0, 'what libuv had read is handed back');
  t.ok(early.length <= p1.length + p2.length);
  // The caller parses those first; the native read continues after them.
  const all = Buffer.alloc(p1.length + p2.length);
  early.copy(all);
  t.equal((await rx.channel.recv(all, early.length, 2000)).got, all.length);
  t.same(all, Buffer.concat([p1, p2]), 'no byte is lost or read twice');
});

t.test('the stream ending inside a packet', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const rx = NativeChannel.attach(b, true)!.channel;
  const p = packet(randomBytes(4000));
  a.end(p.subarray(0, HS + 100));
  t.equal((await rx.recv(Buffer.alloc(HS), 0, 5000)).got, HS);
  t.equal((await rx.recv(Buffer.alloc(4000), 0, 5000)).got, 100, 'what arrived is reported, short of the payload');

  const d = await socketPair(t);
  t.teardown(d.close);
  const rx3 = NativeChannel.attach(d.b, true)!.channel;
  d.a.end(p.subarray(0, 10));
  t.equal((await rx3.recv(Buffer.alloc(HS), 0, 5000)).got, 10, 'a stream ending inside the header');
});

t.test('timeouts: nothing arriving, and a peer that takes nothing', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const rx = NativeChannel.attach(b, true)!.channel;
  const e = await rx.recv(Buffer.alloc(HS), 0, 100).then(
    () => null,
    (x: unknown) => x,
  );
  t.ok(e instanceof NativeIoError && e.code === 'ESTALLED', 'a read that waits longer than its timeout fails as stalled');

  // b is read by nobody now: the kernel buffers fill, then a's send times out.
  const tx = NativeChannel.attach(a, false)!.channel;
  const big = Buffer.alloc(64 << 20);
  const s = await tx.send([big], 200).then(
    () => null,
    (x: unknown) => x,
  );
  t.ok(s instanceof NativeIoError && s.code === 'ESTALLED', 'a send the peer does not take fails as stalled');
  const { asked, moved } = s as NativeIoError;
  t.equal(asked, big.length, 'with the bytes asked for');
  t.ok(moved! > 0 && moved! < big.length, 'and the bytes the kernel took');
});

t.test('a peer that hangs up, and destroy() under a blocked read', async (t) => {
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  const tx = NativeChannel.attach(a, false)!.channel;
  b.destroy();
  await new Promise((r) => setTimeout(r, 50));
  let err: unknown = null;
  for (let i = 0; i < 20 && !err; i++)
    err = await tx.send([Buffer.alloc(1 << 20)], 2000).then(
      () => null,
      (x: unknown) => x,
    );
  // EPIPE/ECONNRESET from the kernel; or Node saw the peer's end first and destroyed the socket,
  // cancelling the operations: they say why (EPIPE), not ECANCELED.
  t.ok(
    err instanceof NativeIoError && ['EPIPE', 'ECONNRESET'].includes(err.code),
    `writing to a closed peer fails (${(err as Error)?.message})`,
  );

  const c = await socketPair(t);
  t.teardown(c.close);
  const rx = NativeChannel.attach(c.b, true)!.channel;
  const blocked = rx.recv(Buffer.alloc(HS), 0, -1);
  await new Promise((r) => setTimeout(r, 50)); // the thread is in poll() now
  const closed = new Promise((r) => c.b.once('close', r));
  c.b.destroy();
  t.equal((await blocked).got, 0, 'the blocked read returns at once, as at the end of the stream');
  await closed;
  t.pass('the socket closes once its fd is no longer used');
  const late = await rx.recv(Buffer.alloc(HS), 0, -1).then(
    () => null,
    (x: unknown) => x,
  );
  t.ok(late instanceof NativeIoError && late.code === 'ECANCELED', 'no operation runs after destroy()');
});

t.test('an operation refused before it is queued leaves the socket free to close', async (t) => {
  const { b, close } = await socketPair(t);
  t.teardown(close);
  const rx = NativeChannel.attach(b, true)!.channel;
  await t.rejects(rx.recv(Buffer.alloc(4), 5, 100), RangeError, 'bytes held past the end of the buffer are refused');
  const closed = new Promise((r) => b.once('close', r));
  b.destroy();
  await closed;
  t.pass('destroy() still closes the socket');
});

t.test('a worker that ends with a channel blocked in a read: its thread stops, the process goes on', async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const addon = path.resolve('build/Release/mfd.node');
  // Plain CommonJS in the worker: the addon itself, no TypeScript loader there.
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const net = require('node:net');
     const addon = require(workerData.addon);
     const s = net.connect(workerData.port, '127.0.0.1', () => {
       const ch = new addon.SocketChannel(s._handle.fd);
       ch.recv(Buffer.alloc(64), 0, null, -1, () => {});
       parentPort.postMessage('blocked');
     });`,
    { eval: true, workerData: { addon, port: (server.address() as net.AddressInfo).port } },
  );
  t.equal(await new Promise((r) => worker.once('message', r)), 'blocked');
  const peer = await accepted;
  const peerClosed = new Promise((r) => peer.once('close', r));
  peer.on('error', () => {});
  await worker.terminate();
  await peerClosed;
  // The orphaned read sees its fd go, finds its environment gone and stops without calling into it.
  await new Promise((r) => setTimeout(r, 500));
  const { a, b, close } = await socketPair(t);
  t.teardown(close);
  a.write(packet(Buffer.from('still here')));
  const buf = Buffer.alloc(HS + 10);
  await NativeChannel.attach(b, true)!.channel.recv(buf, 0, 2000);
  t.equal(buf.subarray(HS).toString(), 'still here', 'channels in this process still work');
});
