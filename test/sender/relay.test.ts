/**
 * The compressing methods' packets on plain TCP channels are sent by the channel's compute worker
 * (RelaySink): through a slow peer, whose socket buffers fill so that sends queue on the channels'
 * threads, the outputs are byte-identical, every data packet took that path, and the packet numbers
 * rise on each channel; a data channel reset mid-migration fails the send with the channel named,
 * without a hang; a bandwidth limit keeps the old path (the limiter runs on the main thread).
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, rejection, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { readChannelDump } from '../helpers/streams.js';
import { FaultProxy } from '../helpers/proxy.js';
import { send } from '../../src/sender/sender.js';
import { silentLogger } from '../../src/log.js';
import { NativeChannel } from '../../src/transport/native-channel.js';
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
