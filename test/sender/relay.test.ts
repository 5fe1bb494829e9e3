/**
 * The compressing methods' packets on plain TCP channels are sent by the channel's compute worker
 * (RelaySink): through a slow peer, whose socket buffers fill so that sends queue on the channels'
 * threads, the outputs are byte-identical, every data packet took that path, and the packet numbers
 * rise on each channel; a data channel reset mid-migration fails the send with the channel named,
 * without a hang; a bandwidth limit keeps the old path (the limiter runs on the main thread).
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { makeImage, rejection, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { readChannelDump } from '../helpers/streams.js';
import { FaultProxy } from '../helpers/proxy.js';
import { send } from '../../src/sender/sender.js';
import { silentLogger } from '../../src/log.js';
import { NativeChannel } from '../../src/transport/native-channel.js';
import { native } from '../../src/native/load.js';
import { ComputePool } from '../../src/compute/pool.js';
import type { ToWorker } from '../../src/compute/messages.js';
import { ConnectionError, NativeIoError } from '../../src/errors.js';

const PS = 4096;

/** Counts the packets handed to compute workers to send (NativeChannel.expectRelay). */
function countRelays(t: Test): { n: number } {
  const count = { n: 0 };
  const orig = NativeChannel.prototype.expectRelay;
  NativeChannel.prototype.expectRelay = function (this: NativeChannel, pieces: Uint8Array[]) {
    count.n++;
    return orig.call(this, pieces);
  };
  t.teardown(() => {
    NativeChannel.prototype.expectRelay = orig;
  });
  return count;
}

/** A receiver writing into a new folder, an image of `size` bytes to send it, and the count of worker-sent packets. */
async function setup(
  t: Test,
  size: number,
  kind: Parameters<typeof makeImage>[2],
  seed: number,
): Promise<{ out: string; img: string; relays: { n: number } } & Awaited<ReturnType<typeof startReceiver>>> {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), size, kind, seed);
  const relays = countRelays(t);
  const { port, result } = await startReceiver({ outputDir: out });
  return { out, img, relays, port, result };
}

for (const compression of ['zstd', 'lz4'] as const) {
  t.test(`${compression} through a slow peer: byte-identical, every data packet sent by its worker, in order`, async (t) => {
    const dir = tmpdir(t);
    const out = path.join(dir, 'out');
    const dump = path.join(dir, 'dump');
    fs.mkdirSync(out);
    fs.mkdirSync(dump);
    const img = makeImage(path.join(dir, 'vm.ram'), 12 << 20, 'random', 3);
    const relays = countRelays(t);
    const { port, result } = await startReceiver({ outputDir: out, dumpStreams: dump });
    const proxy = await FaultProxy.start(t, port, { rate: 24 << 20 });
    const sent = await send({
      host: '127.0.0.1',
      port: proxy.port,
      images: [{ name: 'vm.ram', path: img }],
      channels: 3,
      pageSize: PS,
      compression,
      methodParams: {},
      zeroPageDetection: 'multifd',
      logger: silentLogger,
    });
    await result;
    t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'byte-identical');
    const data = sent.stats.perChannel.reduce((a, c) => a + c.packets - c.syncPackets, 0);
    t.equal(relays.n, data, `all ${relays.n} data packets went through the channels' workers`);
    for (let ch = 0; ch < 3; ch++) {
      const nums = readChannelDump(path.join(dump, `channel-${ch}.bin`), PS).packets.map((p) => p.header.packetNum);
      t.ok(nums.length > 1, `channel ${ch}: ${nums.length} packets`);
      t.ok(
        nums.every((n, i) => i === 0 || n > nums[i - 1]!),
        `channel ${ch}: packet numbers rise`,
      );
    }
  });
}

t.test('a sparse image: packets wholly in holes go out from the main thread, unscanned; the rest through the workers', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  const dump = path.join(dir, 'dump');
  fs.mkdirSync(out);
  fs.mkdirSync(dump);
  // 24 packets of 512 KiB: data in packets 0, 3, 4, 9 and 17, and in the second half of packet 12.
  const img = path.join(dir, 'vm.ram');
  const fd = fs.openSync(img, 'w');
  fs.ftruncateSync(fd, 12 << 20);
  for (const p of [0, 3, 4, 9, 17]) fs.writeSync(fd, randomBytes(512 << 10), 0, 512 << 10, p * (512 << 10));
  fs.writeSync(fd, randomBytes(256 << 10), 0, 256 << 10, 12 * (512 << 10) + (256 << 10));
  fs.closeSync(fd);
  const probe = fs.openSync(img, 'r');
  const sparse = native.dataExtents(probe, 0, 12 << 20).length > 2;
  fs.closeSync(probe);
  if (!sparse) return void t.skip('this file system reports no holes (no SEEK_HOLE)', () => {});
  const relays = countRelays(t);
  // The packets handed to a worker (ComputePool.call's 'packet' messages).
  const toWorkers = { n: 0 };
  const call = ComputePool.prototype.call;
  ComputePool.prototype.call = function <T>(this: ComputePool, channel: number, msg: ToWorker): Promise<T> {
    if (msg.op === 'packet') toWorkers.n++;
    return call.call(this, channel, msg) as Promise<T>;
  };
  t.teardown(() => {
    ComputePool.prototype.call = call;
  });
  const { port, result } = await startReceiver({ outputDir: out, dumpStreams: dump });
  const sent = await send({
    host: '127.0.0.1',
    port,
    images: [{ name: 'vm.ram', path: img }],
    channels: 3,
    pageSize: PS,
    compression: 'zstd',
    methodParams: {},
    zeroPageDetection: 'multifd',
    logger: silentLogger,
  });
  await result;
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'byte-identical');
  // A packet wholly in holes that follows one still on the worker goes through the worker too (its order).
  t.ok(
    toWorkers.n >= 6 && toWorkers.n < 24,
    `the 6 packets with data went through the workers, ${24 - toWorkers.n} wholly in holes did not`,
  );
  t.equal(relays.n, 24, 'every packet went out as the worker sends (in the order the channel handed them out)');
  t.equal(sent.stats.paths.zeroPage.pages['file-hole'], 18 * 128 + 64, 'every page in a hole reported as file-hole');
  t.equal(sent.stats.zeroPages, 18 * 128 + 64, 'and sent as a zero page');
  let packets = 0;
  for (let ch = 0; ch < 3; ch++) {
    const nums = readChannelDump(path.join(dump, `channel-${ch}.bin`), PS).packets.map((p) => p.header.packetNum);
    packets += nums.length;
    t.ok(
      nums.every((n, i) => i === 0 || n > nums[i - 1]!),
      `channel ${ch}: packet numbers rise (${nums.join(', ')})`,
    );
  }
  t.equal(packets, 24 + 3, 'every packet and a SYNC a channel arrived');
});

t.test('zstd, a data channel reset mid-migration: the send fails naming the channel, no hang', async (t) => {
  const { img, relays, port, result } = await setup(t, 32 << 20, 'random', 5);
  result.catch(() => {});
  const proxy = await FaultProxy.start(t, port, { rate: 16 << 20, resetDataChannelAfter: 2 << 20 });
  const e = await rejection(
    send({
      host: '127.0.0.1',
      port: proxy.port,
      images: [{ name: 'vm.ram', path: img }],
      channels: 2,
      pageSize: PS,
      compression: 'zstd',
      methodParams: {},
      zeroPageDetection: 'multifd',
      logger: silentLogger,
      timeoutMs: 20_000,
    }),
  );
  t.ok(proxy.resetAt !== null, 'the proxy reset a data channel');
  t.ok(relays.n > 0, `packets were sent by the workers (${relays.n})`);
  t.ok(
    (e instanceof ConnectionError || e instanceof NativeIoError || e.name === 'RemoteError') && !/ESTALLED|stalled/.test(e.message),
    `a connection failure, not a stall: ${e.name} ${e.code}: ${e.message}`,
  );
  if (e instanceof ConnectionError) t.equal(typeof e.channel, 'number', `it names channel ${e.channel}`);
});

t.test('with --max-bandwidth the main thread sends (the limiter stays in charge)', async (t) => {
  const { out, img, relays, port, result } = await setup(t, 4 << 20, 'mixed', 9);
  await send({
    host: '127.0.0.1',
    port,
    images: [{ name: 'vm.ram', path: img }],
    channels: 2,
    pageSize: PS,
    compression: 'zstd',
    methodParams: {},
    zeroPageDetection: 'multifd',
    logger: silentLogger,
    maxBandwidth: 1 << 30,
  });
  await result;
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'byte-identical');
  t.equal(relays.n, 0, 'no packet went through a worker');
});
