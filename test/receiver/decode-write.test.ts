/**
 * The receiver's decode-and-write path (receiver/data-channel.ts decodeAndWrite, decoder.ts
 * decodeWrite, the worker's 'decode-write'): with the receiver's own placement and a method on the
 * compute pool, a packet read by a native reader goes to the channel's worker, which decodes it,
 * computes its CRCs and writes its pages; only the CRCs come back. The file, the digest, the pages
 * recorded as written and the read pool must come out as on the old path, and the worker's failures
 * must reach the main thread with their class, channel, packet and stream offset.
 *
 * Without a compute pool, a method whose stream lives in the addon (libzstd's) decodes on the
 * channel's own thread instead (Decoder.thread, SocketChannel.recvWrite with a decoder): read,
 * decoded, digested and written in one operation there. The same outcomes hold, and its refusals
 * are recv()'s for the same bytes.
 */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { DataChannel, packetChecks, readPool, type ChannelHost, type TargetBlock } from '../../src/receiver/data-channel.js';
import { createDecoder } from '../../src/receiver/decoder.js';
import { Output } from '../../src/receiver/output.js';
import { targetBlock } from '../../src/receiver/targets.js';
import { NativeChannel } from '../../src/transport/native-channel.js';
import { ComputePool } from '../../src/compute/pool.js';
import type { ToWorker } from '../../src/compute/messages.js';
import { getMethod, type MethodReceiver } from '../../src/methods/index.js';
import { PathTally } from '../../src/offload/paths.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { packetHeaderSize } from '../../src/wire/constants.js';
import { newChannelCounters } from '../../src/stats/stats.js';
import { BlockDigest } from '../../src/image/digest.js';
import { native } from '../../src/native/load.js';
import { IoError, ProtocolError } from '../../src/errors.js';
import { socketPair, tmpdir } from '../helpers/index.js';

const PS = 4096;
const HS = packetHeaderSize(PS);
const PAGES = 128;
const ZERO_CRC = native.crc32c(new Uint8Array(PS));

interface Packet {
  packetNum: bigint;
  /** Normal pages: offset and bytes. */
  normal: { offset: number; bytes: Uint8Array }[];
  zero: number[];
}

/** A page whose bytes say which one it is. */
function page(seed: number): Uint8Array {
  const p = new Uint8Array(PS);
  for (let i = 0; i < PS; i += 8) p[i] = (seed * 7 + i / 8) & 0xff;
  p[0] = seed & 0xff;
  return p;
}

/**
 * One channel on a native reader, with a compute pool of one worker and a real output of
 * `blockSize` bytes (its descriptor swapped for `fd` when given); the ops sent to the worker are
 * recorded. `packets` are encoded by the method's sender, in order, one stream.
 */
async function rig(
  t: Test,
  methodName: string,
  o: {
    blockSize?: number;
    fd?: number;
    inPlace?: boolean;
    posted?: (op: string, pool: ComputePool) => void;
    pool?: boolean;
    initial?: Packet[];
  } = {},
) {
  const method = getMethod(methodName);
  const params = method.params({});
  const pool = new ComputePool(1);
  t.teardown(() => pool.close());
  const compute = o.pool === false ? null : pool;
  const ops: string[] = [];
  const call = pool.call.bind(pool);
  pool.call = <T>(channel: number, msg: ToWorker): Promise<T> => {
    ops.push(msg.op);
    const r = call<T>(channel, msg);
    o.posted?.(msg.op, pool);
    return r;
  };
  const dir = tmpdir(t);
  const size = o.blockSize ?? 64 * PS;
  const output = await Output.create('ram0', size, path.join(dir, 'ram0'), o.inPlace ?? false);
  t.teardown(() => output.abort());
  if (o.fd !== undefined) {
    // The output's writes go to `fd` instead (/dev/full: every write fails, ENOSPC).
    const own = output as unknown as { fd: number };
    fs.closeSync(own.fd);
    own.fd = o.fd;
  }
  const block: TargetBlock = targetBlock(output, size, PS);
  const blocks = new Map([['ram0', block]]);
  const failures: { e: unknown; at?: number }[] = [];
  const written: number[] = [];
  let pagesDone = 0;
  const reads = readPool();
  const host: ChannelHost = {
    pageSize: PS,
    headerSize: HS,
    check: packetChecks(method, PS, blocks),
    blocks,
    zeroPageCrc: ZERO_CRC,
    inPlace: o.inPlace ?? false,
    readPool: reads,
    readTimeoutMs: 10_000,
    onPages: (bytes) => (pagesDone += bytes / PS),
    onWritten: (_b, offsets, count) => written.push(...Array.from(offsets).slice(0, count)),
    onIdle: () => {},
    fail: (e, at) => failures.push({ e, at }),
  };
  const receivers: MethodReceiver[] = [];
  const tally = new PathTally(`${method.name} decompression`, false);
  const decoder = createDecoder({
    channel: 0,
    method,
    pageSize: PS,
    params,
    tally,
    compute,
    receivers,
    fail: (e) => failures.push({ e }),
  });
  t.teardown(() => receivers.forEach((r) => r.cleanup()));
  const sender = method.sendSetup({ channel: 0, pageSize: PS, params, tally: new PathTally('send', false) });
  t.teardown(() => sender.cleanup());
  const out = new Uint8Array(method.maxPayload(PAGES, PS));
  /** `p` as it goes on the wire, its payload changed by `spoil` if given. */
  const encode = async (p: Packet, spoil?: (payload: Buffer) => void): Promise<Buffer> => {
    const chunks = await sender.prepare(
      p.normal.map((n) => n.bytes),
      p.normal.length,
      out,
    );
    const payload = Buffer.concat(chunks.map((c) => Buffer.from(c)));
    spoil?.(payload);
    const h = encodePacketHeader(new Uint8Array(HS), HS, {
      flags: method.flag,
      pagesAlloc: PAGES,
      normalPages: p.normal.length,
      zeroPages: p.zero.length,
      nextPacketSize: payload.length,
      packetNum: p.packetNum,
      ramblock: Buffer.from('ram0'),
      offsets: [...p.normal.map((n) => n.offset), ...p.zero],
    });
    return Buffer.concat([h, payload]);
  };
  // `o.initial`: packets whose bytes the channel already holds when its native reader starts (read by libuv first).
  const initial: Buffer[] = [];
  for (const p of o.initial ?? []) initial.push(await encode(p));
  const { a, b } = await socketPair(t);
  const nc = NativeChannel.attach(b, true)!;
  new DataChannel(0, nc.channel, Buffer.concat([...initial, ...nc.buffered]), decoder, newChannelCounters(0), host);
  /** Sends `p`, its payload changed by `spoil` if given; returns its length on the wire. */
  const send = async (p: Packet, spoil?: (payload: Buffer) => void): Promise<number> => {
    const bytes = await encode(p, spoil);
    a.write(bytes);
    return bytes.length;
  };
  return {
    pool,
    block,
    output,
    failures,
    written,
    ops,
    send,
    encode,
    raw: (bytes: Uint8Array) => a.write(bytes),
    reads,
    tally,
    pages: () => pagesDone,
    decoder,
  };
}

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 10)))
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
}

/** Counts the packets the rig's channel thread decodes (its thread decoder's decoded()); null without one. */
function decodedOnThread(r: Awaited<ReturnType<typeof rig>>): { n: number } | null {
  const thread = r.decoder.thread;
  if (!thread) return null;
  const count = { n: 0 };
  const decoded = thread.decoded;
  thread.decoded = (n) => {
    count.n++;
    decoded(n);
  };
  return count;
}

/** The rig's file, digest and pages recorded as written are those of `packets`, zeros elsewhere. */
function landed(t: Test, r: Awaited<ReturnType<typeof rig>>, packets: Packet[]): void {
  const want = new Uint8Array(64 * PS);
  const digest = new BlockDigest();
  for (const p of packets) {
    for (const n of p.normal) {
      want.set(n.bytes, n.offset);
      digest.add(n.offset / PS, native.crc32c(n.bytes));
    }
    for (const z of p.zero) digest.add(z / PS, ZERO_CRC);
  }
  t.ok(fs.readFileSync(r.output.writePath).equals(want), 'the file holds every page at its offset, zeros elsewhere');
  t.equal(r.block.digest.hex(), digest.hex(), 'the digest has each page with its CRC');
  t.same(
    r.written.sort((x, y) => x - y),
    packets.flatMap((p) => [...p.normal.map((n) => n.offset), ...p.zero]).sort((x, y) => x - y),
    'every page is recorded as written',
  );
}

for (const name of ['zstd', 'zlib', 'lz4']) {
  t.test(`${name}: the worker decodes, digests and writes; the file, digest and written pages are right`, async (t) => {
    const r = await rig(t, name);
    const packets: Packet[] = [
      {
        packetNum: 0n,
        normal: [0, 5, 6, 7].map((i) => ({ offset: i * PS, bytes: page(i + 1) })),
        zero: [1 * PS, 2 * PS],
      },
      { packetNum: 1n, normal: [40, 41, 63].map((i) => ({ offset: i * PS, bytes: page(i + 1) })), zero: [62 * PS] },
      // The same bytes again: a stream method's history is used, and must be kept in order.
      { packetNum: 2n, normal: [10, 11].map((i) => ({ offset: i * PS, bytes: page(i - 9) })), zero: [] },
    ];
    for (const p of packets) await r.send(p);
    const total = packets.reduce((n, p) => n + p.normal.length + p.zero.length, 0);
    await until('every page is written', () => r.pages() === total || r.failures.length > 0);
    t.same(r.failures, [], 'no failure');
    landed(t, r, packets);
    t.equal(r.ops.filter((op) => op === 'decode-write').length, packets.length, 'each packet went to the worker once, to decode and write');
    t.notOk(r.ops.includes('decode'), 'no decoded pages came back');
    t.equal(r.reads.inUse, 0, 'every payload buffer is back in the read pool');
    const normal = packets.reduce((n, p) => n + p.normal.length, 0);
    t.equal(
      Object.values(r.tally.counts.pages).reduce((a, b) => a + b, 0),
      normal,
      "the worker's path counts came back: every normal page under a path",
    );
  });
}

t.test('in place: the zero pages are written over what the file held', async (t) => {
  const r = await rig(t, 'zstd', { inPlace: true });
  fs.writeFileSync(r.output.writePath, Buffer.alloc(64 * PS, 0xee));
  await r.send({ packetNum: 0n, normal: [{ offset: 3 * PS, bytes: page(3) }], zero: [4 * PS, 9 * PS] });
  await until('the packet is written', () => r.pages() === 3 || r.failures.length > 0);
  t.same(r.failures, []);
  const file = fs.readFileSync(r.output.writePath);
  t.ok(file.subarray(3 * PS, 4 * PS).equals(page(3)), 'the normal page');
  t.ok(
    file.subarray(4 * PS, 5 * PS).equals(Buffer.alloc(PS)) && file.subarray(9 * PS, 10 * PS).equals(Buffer.alloc(PS)),
    'the zero pages zeroed',
  );
  t.ok(file.subarray(5 * PS, 9 * PS).equals(Buffer.alloc(4 * PS, 0xee)), 'the pages no packet named kept');
});

t.test("a write that fails on the worker: an IoError with the ram block, channel and packet, at the header's offset", async (t) => {
  const full = fs.openSync('/dev/full', 'w');
  const r = await rig(t, 'zstd', { fd: full });
  const next = await r.send({ packetNum: 0n, normal: [{ offset: 0, bytes: page(1) }], zero: [] });
  await r.send({ packetNum: 1n, normal: [{ offset: PS, bytes: page(2) }], zero: [] });
  await until('the channel fails', () => r.failures.length > 0);
  const f = r.failures[0]!;
  t.ok(f.e instanceof IoError, 'an IoError');
  t.match(f.e, { code: 'ERR_ENOSPC', channel: 0, packetNum: 0n, message: /^writing ram block "ram0" to ".*ram0.*": ENOSPC/ });
  t.equal(f.at, 0, "named at the packet's header");
  t.ok(next > HS, 'the next packet follows');
  await until('every payload buffer is back', () => r.reads.inUse === 0);
  t.equal(r.written.length, 0, 'no page is recorded as written');
});

t.test('a last page with non-zero bytes past the end of the block: ERR_PAGE_PAST_END from the worker, naming the offset', async (t) => {
  const r = await rig(t, 'zstd', { blockSize: 2 * PS + 100 });
  await r.send({ packetNum: 4n, normal: [{ offset: 2 * PS, bytes: page(9) }], zero: [0] });
  await until('the channel fails', () => r.failures.length > 0);
  const f = r.failures[0]!;
  t.ok(f.e instanceof ProtocolError);
  t.match(f.e, {
    code: 'ERR_PAGE_PAST_END',
    channel: 0,
    packetNum: 4n,
    message: `page at offset ${2 * PS} runs past the end of ram block "ram0" (size ${2 * PS + 100}) with non-zero bytes`,
  });
  t.equal(f.at, 0, "named at the packet's header");
});

t.test("a payload that does not decode on the worker: named at the payload's offset, with its channel and packet", async (t) => {
  const r = await rig(t, 'lz4');
  await r.send({ packetNum: 3n, normal: [{ offset: 0, bytes: page(1) }], zero: [] }, (p) => p.fill(0xff, 0, 8));
  await until('the channel fails', () => r.failures.length > 0);
  const f = r.failures[0]!;
  t.ok(f.e instanceof ProtocolError);
  t.match(f.e, { code: /^ERR_PAYLOAD/, channel: 0, packetNum: 3n });
  t.equal(f.at, HS, "named at the payload's offset");
  t.equal(fs.readFileSync(r.output.writePath).subarray(0, PS).equals(Buffer.alloc(PS)), true, 'nothing written');
});

t.test('the compute pool closed with a packet on its worker (a failed migration): the output still closes', async (t) => {
  let closed: Promise<void> | null = null;
  const r = await rig(t, 'zstd', { posted: (op, pool) => void (op === 'decode-write' && (closed ??= pool.close())) });
  await r.send({ packetNum: 0n, normal: [{ offset: 0, bytes: page(1) }], zero: [] });
  await until('the packet went to the worker', () => closed !== null);
  await closed;
  // The output's gate waits for the packet's write: the call must fail once the worker has exited.
  await r.output.abort();
  await until('the channel fails', () => r.failures.length > 0);
  t.match(r.failures[0]!.e, { code: 'ERR_WORKER' });
  t.equal(r.reads.inUse, 0, 'the payload buffer is back in the read pool');
});

const noLibzstd =
  native.zstdVersion === null ? 'the addon was built without libzstd-dev: zstd decodes with zstd-napi, in recv() only' : false;

/** Why `name`'s stream does not decode on a channel's thread in this build, or false. */
const noThread = (name: string): string | false => {
  const m = getMethod(name);
  return m.threadDecodes?.(m.params({})) ? false : `${name} decodes only in recv() in this build`;
};

for (const name of ['zlib', 'zstd', 'lz4']) {
  t.test(
    `${name} without a compute pool: the channel thread decodes, digests and writes; the same file, digest and pages`,
    { skip: noThread(name) },
    async (t) => {
      // The first packet's bytes are in the channel's hands before its native reader starts: decode() takes it,
      // and the thread the ones after it, on the same stream, in order.
      const first: Packet = { packetNum: 0n, normal: [0, 5].map((i) => ({ offset: i * PS, bytes: page(i + 1) })), zero: [1 * PS] };
      const r = await rig(t, name, { pool: false, initial: [first] });
      const onThread = decodedOnThread(r);
      if (!onThread) return t.fail('the decoder offers no thread decoder');
      await until('the first packet is written', () => r.pages() === 3 || r.failures.length > 0);
      const packets: Packet[] = [
        first,
        { packetNum: 1n, normal: [40, 41, 63].map((i) => ({ offset: i * PS, bytes: page(i + 1) })), zero: [62 * PS] },
        // The same bytes as the first packet's: the stream's history is used, and must be kept in order.
        { packetNum: 2n, normal: [10, 11].map((i) => ({ offset: i * PS, bytes: page(i - 9) })), zero: [] },
        { packetNum: 3n, normal: Array.from({ length: 20 }, (_, i) => ({ offset: (20 + i) * PS, bytes: page(i + 100) })), zero: [] },
      ];
      for (const p of packets.slice(1)) await r.send(p);
      const total = packets.reduce((n, p) => n + p.normal.length + p.zero.length, 0);
      await until('every page is written', () => r.pages() === total || r.failures.length > 0);
      t.same(r.failures, [], 'no failure');
      landed(t, r, packets);
      t.equal(onThread.n, packets.length - 1, 'each packet after the first was decoded on the channel thread');
      t.same(r.ops, [], 'no compute worker was asked for anything');
      t.equal(r.reads.inUse, 0, 'every payload buffer and page room is back in the read pool');
      const normal = packets.reduce((n, p) => n + p.normal.length, 0);
      t.same(r.tally.counts.pages, { software: normal }, 'every normal page counted under the software path');
    },
  );
}

t.test(
  'packets of zero pages still in flight do not keep the next packet with pages off the channel thread',
  { skip: noThread('zstd') },
  async (t) => {
    const first: Packet = { packetNum: 0n, normal: [{ offset: 0, bytes: page(1) }], zero: [] };
    const r = await rig(t, 'zstd', { pool: false, initial: [first] });
    const onThread = decodedOnThread(r)!;
    await until('the first packet is written', () => r.pages() === 1 || r.failures.length > 0);
    // Three packets of zero pages and one with pages, in one write: one native read brings the four headers.
    const packets: Packet[] = [
      first,
      { packetNum: 1n, normal: [], zero: [1, 2, 3].map((i) => i * PS) },
      { packetNum: 2n, normal: [], zero: [4, 5].map((i) => i * PS) },
      { packetNum: 3n, normal: [], zero: [6 * PS] },
      { packetNum: 4n, normal: [7, 9].map((i) => ({ offset: i * PS, bytes: page(i) })), zero: [8 * PS] },
    ];
    r.raw(Buffer.concat(await Promise.all(packets.slice(1).map((p) => r.encode(p)))));
    await until('every page is written', () => r.pages() === 10 || r.failures.length > 0);
    t.same(r.failures, [], 'no failure');
    landed(t, r, packets);
    t.equal(onThread.n, 1, 'the packet with pages was decoded on the channel thread');
    t.equal(r.reads.inUse, 0, 'every payload buffer and page room is back in the read pool');
  },
);

for (const [name, message] of [
  ['zlib', /^zlib payload cannot be decoded: inflate returned /],
  ['zstd', /^zstd payload cannot be decoded: decompressStream returned /],
] as const) {
  t.test(
    `${name} on the channel thread: a payload that does not decode, named at its offset with the channel and packet; nothing written`,
    { skip: noThread(name) },
    async (t) => {
      const r = await rig(t, name, { pool: false });
      const first = await r.send({ packetNum: 0n, normal: [{ offset: 0, bytes: page(1) }], zero: [] });
      await until('the first packet is written', () => r.pages() === 1 || r.failures.length > 0);
      await r.send({ packetNum: 7n, normal: [{ offset: 2 * PS, bytes: page(2) }], zero: [] }, (p) => p.fill(0xff, 0, 8));
      await until('the channel fails', () => r.failures.length > 0);
      const f = r.failures[0]!;
      t.ok(f.e instanceof ProtocolError, 'a ProtocolError');
      t.match(f.e, {
        code: 'ERR_PAYLOAD_CORRUPT',
        channel: 0,
        packetNum: 7n,
        message,
      });
      t.equal(f.at, first + HS, "named at the payload's offset");
      t.ok(
        fs
          .readFileSync(r.output.writePath)
          .subarray(2 * PS, 3 * PS)
          .equals(Buffer.alloc(PS)),
        'nothing written',
      );
      t.same(r.written, [0], 'only the first packet is recorded as written');
      await until('every buffer is back', () => r.reads.inUse === 0);
      t.pass('every buffer is back in the read pool');
    },
  );
}

for (const [what, claimed, sent, message] of [
  ['fewer', 2, 1, `packet size received ${PS}, size expected ${2 * PS}`],
  ['more', 1, 2, `zstd payload cannot be decoded: packet decodes to more than ${PS} bytes`],
] as const) {
  t.test(
    `zstd on the channel thread: a payload that decodes to ${what} bytes than its pages: ERR_PAYLOAD_SIZE`,
    { skip: noLibzstd },
    async (t) => {
      const r = await rig(t, 'zstd', { pool: false });
      // A stream of its own, whose packet holds `sent` pages under a header that claims `claimed`.
      const method = getMethod('zstd');
      const other = method.sendSetup({ channel: 0, pageSize: PS, params: method.params({}), tally: new PathTally('send', false) });
      t.teardown(() => other.cleanup());
      const chunks = await other.prepare(
        Array.from({ length: sent }, (_, i) => page(i + 1)),
        sent,
        new Uint8Array(method.maxPayload(PAGES, PS)),
      );
      const payload = Buffer.concat(chunks.map((c) => Buffer.from(c)));
      const h = encodePacketHeader(new Uint8Array(HS), HS, {
        flags: method.flag,
        pagesAlloc: PAGES,
        normalPages: claimed,
        zeroPages: 0,
        nextPacketSize: payload.length,
        packetNum: 5n,
        ramblock: Buffer.from('ram0'),
        offsets: Array.from({ length: claimed }, (_, i) => i * PS),
      });
      r.raw(Buffer.concat([h, payload]));
      await until('the channel fails', () => r.failures.length > 0);
      const f = r.failures[0]!;
      t.ok(f.e instanceof ProtocolError, 'a ProtocolError');
      t.match(f.e, { code: 'ERR_PAYLOAD_SIZE', channel: 0, packetNum: 5n, message });
      t.equal(f.at, HS, "named at the payload's offset");
      t.same(r.written, [], 'nothing recorded as written');
      t.ok(fs.readFileSync(r.output.writePath).equals(Buffer.alloc(64 * PS)), 'nothing written');
    },
  );
}

for (const [what, spoil] of [
  ['its length prefix changed', (p: Buffer) => p.writeUInt32LE(p.readUInt32LE(0) + 1, 0)],
  ['its block cut short', (p: Buffer) => p.fill(0, p.length - 16)],
  ['its block garbled', (p: Buffer) => p.fill(0xff, 4)],
] as const) {
  t.test(
    `lz4 on the channel thread, a payload with ${what}: the error recv() gives for the same bytes`,
    { skip: noThread('lz4') },
    async (t) => {
      const r = await rig(t, 'lz4', { pool: false });
      const p: Packet = { packetNum: 9n, normal: [2, 3].map((i) => ({ offset: i * PS, bytes: page(i) })), zero: [] };
      let payload: Buffer | null = null;
      await r.send(p, (b) => {
        spoil(b);
        payload = Buffer.from(b);
      });
      await until('the channel fails', () => r.failures.length > 0);
      const method = getMethod('lz4');
      const recv = method.recvSetup({ channel: 0, pageSize: PS, params: method.params({}), tally: new PathTally('recv', false) });
      let expected: unknown = null;
      try {
        await recv.recv([payload!], 2, 9n);
      } catch (e) {
        expected = e;
      }
      t.ok(expected instanceof ProtocolError, `recv() refuses it: ${String(expected)}`);
      const f = r.failures[0]!;
      t.ok(f.e instanceof ProtocolError, 'so does the thread');
      const { code, message, channel, packetNum } = expected as ProtocolError;
      t.match(f.e, { code, message, channel, packetNum }, 'with the same code, message, channel and packet');
      t.equal(f.at, HS, "named at the payload's offset");
      t.same(r.written, [], 'nothing recorded as written');
    },
  );
}
