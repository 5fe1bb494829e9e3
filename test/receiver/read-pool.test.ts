/**
 * The native readers' payload buffers (receiver/data-channel.ts readPool()):
 * one pool for all of a host's channels, bounded in bytes. A buffer is taken
 * only once a judged header says how long its payload is, and only that long;
 * peers announcing the largest payloads on more channels than the pool holds
 * get no more than the pool, the others wait and go on as room comes back; a
 * header announcing too much is refused before anything is taken; a payload
 * cut short gives its buffer back; the buffers of finished packets are used
 * again.
 */
import type { Test } from 'tap';
import t from 'tap';
import net from 'node:net';
import {
  DataChannel,
  READ_POOL_BYTES,
  packetChecks,
  readPool,
  type ChannelHost,
  type TargetBlock,
} from '../../src/receiver/data-channel.js';
import { NativeChannel } from '../../src/transport/native-channel.js';
import { getMethod } from '../../src/methods/index.js';
import { encodePacketHeader, type PacketFields } from '../../src/wire/packet.js';
import { packetHeaderSize } from '../../src/wire/constants.js';
import { newChannelCounters } from '../../src/stats/stats.js';
import type { BytePool } from '../../src/io/byte-pool.js';
import { socketPair } from '../helpers/index.js';

const PS = 4096;
const HS = packetHeaderSize(PS);
const PAGES = 128;
const zstd = getMethod('zstd');
/** The largest payload a zstd packet of 128 pages may announce. */
const MAX = zstd.maxPayload(PAGES, PS);

function header(f: Partial<PacketFields>): Buffer {
  return Buffer.from(
    encodePacketHeader(new Uint8Array(HS), HS, {
      flags: zstd.flag,
      pagesAlloc: PAGES,
      normalPages: PAGES,
      zeroPages: 0,
      nextPacketSize: MAX,
      packetNum: 0n,
      ramblock: Buffer.from('ram0'),
      offsets: Array.from({ length: PAGES }, (_, i) => i * PS),
      ...f,
    }),
  );
}

/** A payload whose bytes say which channel and packet it is. */
function payload(channel: number, packet: number, size = MAX): Buffer {
  const p = Buffer.alloc(size, (channel * 31 + packet) & 0xff);
  if (size >= 8) {
    p.writeUInt32BE(channel, 0);
    p.writeUInt32BE(packet, 4);
  }
  return p;
}

interface Seen {
  channel: number;
  packetNum: bigint;
  bytes: Buffer;
}

/**
 * `n` channels on native readers, one host (one read pool): each packet's payload is handed
 * through as its pages (the decoder is the identity) and copied into `seen` when it is placed.
 */
async function channels(t: Test, n: number, pool: BytePool = readPool()) {
  const blocks = new Map<string, TargetBlock>([['ram0', { size: 1 << 30 } as TargetBlock]]);
  const seen: Seen[] = [];
  const failures: { e: unknown; at?: number }[] = [];
  const host: ChannelHost = {
    pageSize: PS,
    headerSize: HS,
    check: packetChecks(zstd, PS, blocks),
    blocks,
    zeroPageCrc: 0,
    inPlace: false,
    readPool: pool,
    readTimeoutMs: 10_000,
    onPages: () => {},
    onIdle: () => {},
    fail: (e, at) => failures.push({ e, at }),
  };
  const peers: net.Socket[] = [];
  for (let id = 0; id < n; id++) {
    const { a, b } = await socketPair(t);
    const native = NativeChannel.attach(b, true)!;
    peers.push(a);
    const placer = {
      claim: (h: { packetNum: bigint }) => (pages: Uint8Array[]) => {
        seen.push({ channel: id, packetNum: h.packetNum, bytes: Buffer.from(pages[0]!) });
      },
    };
    new DataChannel(id, native.channel, Buffer.concat(native.buffered), { decode: (p) => p }, newChannelCounters(id), host, placer);
  }
  return { pool, peers, seen, failures };
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 10)))
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
}

t.test('the largest payloads announced on more channels than the pool holds: no more than the pool is taken', async (t) => {
  const n = 70;
  const fit = Math.floor(READ_POOL_BYTES / (Math.ceil(MAX / 4096) * 4096));
  t.ok(fit < n, `${n} channels announcing ${MAX} bytes each are more than the pool's ${fit}`);
  const { pool, peers, seen, failures } = await channels(t, n);
  // Every peer sends a header and the first bytes of its payload, then stalls.
  peers.forEach((a, id) => a.write(Buffer.concat([header({ packetNum: BigInt(id) }), payload(id, 0).subarray(0, 100)])));
  await until('the pool is full and the rest wait', () => pool.waiting === n - fit);
  t.equal(pool.inUse, fit * Math.ceil(MAX / 4096) * 4096, 'the pool holds one payload per channel it has room for');
  t.ok(pool.inUse <= READ_POOL_BYTES, `${pool.inUse} bytes taken, within the pool's ${READ_POOL_BYTES}`);
  t.equal(seen.length, 0, 'no packet is complete');
  // The rest of each payload: every packet arrives whole, those that waited as room comes back.
  peers.forEach((a, id) => a.write(payload(id, 0).subarray(100)));
  await until('every packet is placed', () => seen.length === n || failures.length > 0);
  t.same(failures, [], 'no channel failed');
  for (const s of seen) t.ok(s.bytes.equals(payload(s.channel, 0)) && s.packetNum === BigInt(s.channel), `channel ${s.channel} whole`);
  t.equal(pool.inUse, 0, 'every buffer is back');
  t.ok(pool.peak <= READ_POOL_BYTES, `at most ${pool.peak} bytes out at once`);
});

t.test('a header announcing more than the method allows is refused before its payload takes any room', async (t) => {
  const { pool, peers, seen, failures } = await channels(t, 1);
  peers[0]!.write(header({ nextPacketSize: 0x7fffffff }));
  peers[0]!.write(Buffer.alloc(1 << 20));
  await until('the channel fails', () => failures.length > 0);
  t.match(failures[0]!.e, { code: 'ERR_PACKET_SIZE', channel: 0, message: `next_packet_size received 2147483647, expected 1..${MAX}` });
  t.equal(failures[0]!.at, 0, 'named at the header');
  t.equal(pool.peak, 0, 'nothing was taken from the pool');
  t.equal(seen.length, 0);
});

t.test('a payload cut short gives its buffer back', async (t) => {
  const { pool, peers, failures } = await channels(t, 1);
  peers[0]!.end(Buffer.concat([header({}), payload(0, 0).subarray(0, 1000)]));
  await until('the channel fails', () => failures.length > 0);
  t.match(failures[0]!.e, { code: 'ERR_CHANNEL_TRUNCATED', channel: 0, message: `payload: received 1000 of ${MAX} bytes` });
  t.equal(failures[0]!.at, HS, "named at the payload's offset");
  t.equal(pool.inUse, 0, 'the buffer is back in the pool');
});

t.test('payloads of the sizes announced, their buffers used again once their packets are placed', async (t) => {
  const { pool, peers, seen, failures } = await channels(t, 2);
  const sizes = [MAX, 1, 70_000, 4097, MAX, 12_345, 300_000, 2, MAX, 8192];
  for (const [id, a] of peers.entries())
    for (const [k, size] of sizes.entries())
      a.write(Buffer.concat([header({ packetNum: BigInt(k), nextPacketSize: size }), payload(id, k, size)]));
  await until('every packet is placed', () => seen.length === 2 * sizes.length || failures.length > 0);
  t.same(failures, []);
  for (const id of [0, 1]) {
    const mine = seen.filter((s) => s.channel === id);
    t.same(
      mine.map((s) => s.packetNum),
      sizes.map((_, k) => BigInt(k)),
      `channel ${id}: every packet, in order`,
    );
    t.ok(
      mine.every((s, k) => s.bytes.equals(payload(id, k, sizes[k]))),
      `channel ${id}: each payload has the size announced and its own bytes`,
    );
  }
  t.equal(pool.inUse, 0, 'every buffer is back');
  // At most MAX_IN_FLIGHT packets and the one being read per channel were ever out at once.
  t.ok(pool.peak <= 2 * 5 * (Math.ceil(MAX / 4096) * 4096), `${pool.peak} bytes at most: buffers were used again, not one per packet`);
});
