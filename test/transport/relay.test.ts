/**
 * A packet sent from another thread on a channel's native socket (native.socketChannelSend, what the
 * sender's compute workers do: addon/socket_channel.cc, NativeChannel.expectRelay/relayed): a worker
 * thread's packets and the main thread's keep their order on the wire, what the socket takes at once
 * goes from the worker and the rest from the channel's thread, and a peer that resets mid-packet fails
 * the send (no crash, no hang) and leaves the socket free to close.
 */
import t, { type Test } from 'tap';
import { Worker } from 'node:worker_threads';
import { NativeChannel } from '../../src/transport/native-channel.js';
import { NativeIoError } from '../../src/errors.js';
import { nativeFile } from '../../src/native/load.js';
import { socketPair } from '../helpers/index.js';

/**
 * A worker that sends, on request, a slice of a shared buffer on channel `id` and answers [code, left].
 * Its requests come one at a time: { id, start, end, token }.
 */
const body = `
const { workerData, parentPort } = require('node:worker_threads');
const b = require(workerData.addon);
const data = new Uint8Array(workerData.data);
const result = new Float64Array(2);
parentPort.on('message', ({ id, start, end, token }) => {
  // Two pieces, as a packet's header and payload.
  const cut = start + Math.min(17, end - start);
  b.socketChannelSend(id, [data.subarray(start, cut), data.subarray(cut, end)], 10000, token, result);
  parentPort.postMessage([result[0], result[1]]);
});
`;

/** Bytes 0..n-1 of a pattern no shift of which repeats within n (so a reordering or a lost piece shows). */
function pattern(n: number): Uint8Array {
  const d = new Uint8Array(new SharedArrayBuffer(n));
  let x = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    d[i] = x & 0xff;
  }
  return d;
}

function startWorker(t: Test, data: Uint8Array): (id: number, start: number, end: number, token: number) => Promise<[number, number]> {
  const w = new Worker(body, { eval: true, workerData: { addon: nativeFile, data: data.buffer } });
  t.teardown(() => w.terminate());
  return (id, start, end, token) =>
    new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.postMessage({ id, start, end, token });
    });
}

t.test("a worker's packets and the main thread's arrive in the order they were handed over, through a full socket", async (t) => {
  const { a, b } = await socketPair(t);
  const tx = NativeChannel.attach(a, false)!.channel;
  const data = pattern(24 << 20);
  const send = startWorker(t, data);
  // The receiver reads nothing for a while: the socket fills, and the worker's sends must queue.
  b.pause();
  const got: Buffer[] = [];
  b.on('data', (c: Buffer) => got.push(c));
  setTimeout(() => b.resume(), 300);

  const codes: number[] = [];
  const done: Promise<void>[] = [];
  let at = 0;
  // A small packet first (the empty socket takes it at once), then packets of up to 1 MiB, every third
  // one from the main thread, in between the worker's.
  const sizes = [1000, ...Array.from({ length: 36 }, (_, i) => 64_000 + ((i * 104_729) % (1 << 20)))];
  for (let i = 0; i < sizes.length; i++) {
    const start = at;
    const end = Math.min(data.length, at + sizes[i]!);
    at = end;
    if (i % 3 === 2) {
      done.push(tx.send([data.subarray(start, end)], 10_000));
      continue;
    }
    const pieces = [data.subarray(start, end)];
    const token = tx.expectRelay(pieces);
    const [code, left] = await send(tx.id, start, end, token);
    codes.push(code);
    t.ok(code === 0 || (code === 1 && left > 0 && left <= end - start), `packet ${i}: sent (0) or queued (1), ${left} bytes left`);
    done.push(tx.relayed(token, code, left));
  }
  await Promise.all(done);
  t.equal(codes[0], 0, 'the first packet went from the worker, whole');
  t.ok(
    codes.some((c) => c === 1),
    `with the socket full the rest went to the channel's thread (${codes.filter((c) => c === 1).length} of ${codes.length})`,
  );
  tx.close();
  a.end();
  await new Promise((r) => b.once('end', r));
  const stream = Buffer.concat(got);
  t.equal(stream.length, at, 'every byte arrived, once');
  t.ok(stream.equals(Buffer.from(data.buffer, 0, at)), 'in the order the packets were handed over');
});

t.test('a peer that resets mid-packet: the sends fail with its error, and the socket closes', async (t) => {
  const { a, b } = await socketPair(t);
  const tx = NativeChannel.attach(a, false)!.channel;
  const closed = new Promise((r) => a.once('close', r));
  const data = pattern(8 << 20);
  const send = startWorker(t, data);
  b.pause();
  const results: Promise<unknown>[] = [];
  for (let i = 0, at = 0; i < 8; i++, at += 1 << 20) {
    if (i === 4) {
      // The socket is full, the channel's thread inside a packet: the peer resets.
      b.resetAndDestroy();
    }
    const token = tx.expectRelay([data.subarray(at, at + (1 << 20))]);
    const [code, left] = await send(tx.id, at, at + (1 << 20), token);
    results.push(
      tx.relayed(token, code, left).then(
        () => null,
        (e: unknown) => e,
      ),
    );
  }
  const errors = (await Promise.all(results)).filter((e) => e !== null);
  t.ok(errors.length > 0, `${errors.length} sends failed`);
  for (const e of errors) {
    t.ok(
      e instanceof NativeIoError && ['EPIPE', 'ECONNRESET', 'ECANCELED'].includes(e.code),
      `a NativeIoError: ${(e as NativeIoError).code}, ${(e as NativeIoError).moved} of ${(e as NativeIoError).asked} bytes`,
    );
  }
  t.ok(
    errors.some((e) => ['EPIPE', 'ECONNRESET'].includes((e as NativeIoError).code)),
    'the first says the peer hung up',
  );
  a.destroy();
  await closed;
  t.pass('the socket closed once no send was left');
});

t.test('a packet whose worker never sent it lets the socket go (abandon)', async (t) => {
  const { a } = await socketPair(t);
  const tx = NativeChannel.attach(a, false)!.channel;
  const token = tx.expectRelay([new Uint8Array(10)]);
  a.destroy();
  let closed = false;
  a.once('close', () => (closed = true));
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(closed, 'the socket waits while the packet may still be sent');
  tx.abandon(token);
  await new Promise((r) => a.once('close', r));
  t.pass('and closes once it is abandoned');
  await t.rejects(tx.relayed(token, 0, 0), { code: 'ECANCELED' }, 'a late answer for it is refused');
});
