/**
 * Which way a receiver's pages go (src/receiver/data-channel.ts): with compression none, a native reader has
 * the channel's thread read, digest and write each packet (NativeChannel.recvWrite), in place too (zero
 * pages written over the old bytes); the libuv pool's writePacket is left at most the first packet of a
 * channel (bytes libuv read before the handover). A compressing method whose stream lives in the addon
 * (threadDecodes) takes the same way, its payloads decoded there first; one that decodes only in recv()
 * (zstd-napi's engine) never does.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, migrate, sha256, tmpdir } from '../helpers/index.js';
import { NativeChannel } from '../../src/transport/native-channel.js';
import { native } from '../../src/native/load.js';
import { getMethod } from '../../src/methods/index.js';

const MiB = 1 << 20;

/** Counts recvWrite calls, and writePacket calls with normal pages (not a zero-only packet written in place), while the test runs. */
function spy(t: Test): { recvWrite: number; writePacket: number } {
  const n = { recvWrite: 0, writePacket: 0 };
  const proto = NativeChannel.prototype;
  const recvWrite = proto.recvWrite;
  proto.recvWrite = function (this: NativeChannel, ...a: Parameters<typeof recvWrite>) {
    n.recvWrite++;
    return recvWrite.apply(this, a);
  };
  const writePacket = native.writePacket;
  native.writePacket = (...a: Parameters<typeof writePacket>) => {
    if (a[4] > 0) n.writePacket++;
    return writePacket(...a);
  };
  t.teardown(() => {
    proto.recvWrite = recvWrite;
    native.writePacket = writePacket;
  });
  return n;
}

const CHANNELS = 4;

for (const inPlace of [false, true]) {
  t.test(`none${inPlace ? ', in place over other bytes' : ''}: the channels' threads write the pages`, async (t) => {
    const dir = tmpdir(t);
    const img = makeImage(path.join(dir, 'vm.ram'), 9 * MiB + 4096, 'mixed');
    const out = path.join(dir, 'out.ram');
    if (inPlace) fs.writeFileSync(out, Buffer.alloc(9 * MiB + 4096, 0xa5));
    const n = spy(t);
    const { received } = await migrate(
      {
        images: [{ name: 'vm', path: img }],
        channels: CHANNELS,
        pageSize: 4096,
        compression: 'none',
        methodParams: {},
        zeroPageDetection: 'multifd',
      },
      { outputMap: new Map([['vm', out]]), inPlace },
    );
    t.equal(sha256(out), sha256(img), 'byte-identical');
    t.ok(received.stats.zeroPages > 0, 'with zero pages');
    t.ok(n.recvWrite > 0, `recvWrite wrote ${n.recvWrite} packets`);
    t.ok(n.writePacket <= CHANNELS, `the pool wrote the pages of ${n.writePacket}, at most a channel's first packet each`);
    t.same(
      received.stats.paths.compression.pages,
      { uncompressed: received.stats.normalPages },
      "every normal page in the receiver's path tally, whichever thread wrote it",
    );
  });
}

for (const [compression, methodParams] of [
  ['zlib', {}],
  ['zstd', {}],
  ['lz4', {}],
  ['zstd', { engine: 'zstd-napi' }],
] as const) {
  const method = getMethod(compression);
  const onThread = method.threadDecodes?.(method.params(methodParams)) ?? false;
  t.test(
    `${compression} ${JSON.stringify(methodParams)}: ${onThread ? "the channels' threads decode and write the pages" : 'decoded elsewhere: no recvWrite'}`,
    async (t) => {
      const dir = tmpdir(t);
      const img = makeImage(path.join(dir, 'vm.ram'), 3 * MiB, 'mixed');
      const out = path.join(dir, 'out.ram');
      const n = spy(t);
      const { received } = await migrate(
        { images: [{ name: 'vm', path: img }], channels: 2, pageSize: 4096, compression, methodParams, zeroPageDetection: 'multifd' },
        { outputMap: new Map([['vm', out]]) },
      );
      t.equal(sha256(out), sha256(img), 'byte-identical');
      if (onThread) {
        t.ok(n.recvWrite > 0, `recvWrite decoded and wrote ${n.recvWrite} packets`);
        t.ok(n.writePacket <= 2, `the pool wrote the pages of ${n.writePacket}, at most a channel's first packet each`);
      } else t.equal(n.recvWrite, 0, 'no recvWrite');
      t.same(
        Object.values(received.stats.paths.compression.pages).reduce((a, b) => a + b, 0),
        received.stats.normalPages,
        "every normal page in the receiver's path tally, whichever thread decoded it",
      );
    },
  );
}
