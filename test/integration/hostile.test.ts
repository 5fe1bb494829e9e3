/**
 * The receiver against a hand-driven sender: bad init packets, bad headers,
 * truncation, repeats and lies. Each ends in a typed error naming the channel
 * (and packet) with received vs expected values, the sender is told over the
 * control channel, and no output that looks complete is left behind.
 */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { send } from '../../src/sender/sender.js';
import { silentLogger } from '../../src/log.js';
import { RawSender, rejection, startReceiver, tmpdir, makeImage, migrate } from '../helpers/index.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader, type PacketFields } from '../../src/wire/packet.js';
import { MULTIFD_FLAG_SYNC } from '../../src/wire/constants.js';
import { encodeFrame, type Hello } from '../../src/control/protocol.js';
import { BlockDigest } from '../../src/image/digest.js';
import { native } from '../../src/native/load.js';
import { MfdError, ExitCode, errorText } from '../../src/errors.js';

const PS = 4096;
const SIZE = 1 << 20;

function pkt(over: Partial<PacketFields> = {}, payload?: Uint8Array): Buffer {
  const f: PacketFields = {
    flags: 0,
    pagesAlloc: 128,
    normalPages: 1,
    zeroPages: 0,
    nextPacketSize: PS,
    packetNum: 0n,
    ramblock: Buffer.from('ram0'),
    offsets: [0],
    ...over,
  };
  const h = encodePacketHeader(new Uint8Array(1344), 1344, f);
  return Buffer.concat([h, payload ?? Buffer.alloc(f.nextPacketSize, 0x5a)]);
}
/** A packet with one header field overwritten (BE u32 at `at`), as no honest encoder would write it. */
function withU32(b: Buffer, at: number, v: number): Buffer {
  b.writeUInt32BE(v, at);
  return b;
}
const sync = (n: bigint): Buffer =>
  pkt({
    flags: MULTIFD_FLAG_SYNC,
    pagesAlloc: 0,
    normalPages: 0,
    nextPacketSize: 0,
    packetNum: n,
    ramblock: new Uint8Array(0),
    offsets: [],
  });

async function setup(t: Test, channels = 1) {
  const dir = tmpdir(t);
  const { port, result } = await startReceiver({ outputDir: dir });
  result.catch(() => {});
  const raw = new RawSender(port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ channels }), { type: 'ready' });
  return { dir, raw, result };
}

/** The receiver fails with `code`/`message`; the sender hears it; nothing final or partial is left. */
async function expectFailure(
  t: Test,
  s: Awaited<ReturnType<typeof setup>>,
  code: string,
  message: RegExp,
  exitCode: number = ExitCode.PROTOCOL,
) {
  const e = await rejection(s.result);
  t.ok(e instanceof MfdError, 'a typed error');
  t.match(e, { code, exitCode });
  // `message` is what happened; where (channel, packet) is in fields, and errorText() says both, once.
  t.match(errorText(e), message);
  t.notMatch(e.message, /^channel \d/, 'no place baked into the message');
  const told = await s.raw.control.next().catch(() => null);
  t.match(told, { type: 'error', code, message }, 'the sender is told why, and where');
  t.same(fs.readdirSync(s.dir), [], 'no output and no temporary file left');
}

t.test("init packet with this migration's uuid but a wrong version fails the migration", async (t) => {
  const s = await setup(t);
  const init = Buffer.from(encodeInitPacket(s.raw.uuidBytes, 0));
  init.writeUInt32BE(2, 4);
  await s.raw.channel(init);
  await expectFailure(t, s, 'ERR_INIT_VERSION', /received packet version 2, expected 1/);
});

t.test('channel id >= channel count', async (t) => {
  const s = await setup(t, 2);
  await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 2));
  await expectFailure(t, s, 'ERR_INIT_CHANNEL_ID', /received channel id 2, expected less than 2/);
});

t.test('duplicate channel id', async (t) => {
  const s = await setup(t, 2);
  await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 1));
  await new Promise((r) => setTimeout(r, 50));
  await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 1));
  await expectFailure(t, s, 'ERR_INIT_DUPLICATE', /received id 1, which is already set up/);
});

t.test('a stranger (wrong uuid, wrong magic) is refused without disturbing the migration', async (t) => {
  const s = await setup(t);
  const stranger = await s.raw.channel(encodeInitPacket(new Uint8Array(16).fill(9), 0));
  await new Promise<void>((r) => stranger.once('close', () => r()));
  const junk = await s.raw.channel(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
  await new Promise<void>((r) => junk.once('close', () => r()));
  // The real channel 0 still connects and the migration completes.
  const page = Buffer.alloc(PS, 0x42);
  const digest = new BlockDigest();
  digest.add(0, native.crc32c(page));
  for (let i = 1; i < SIZE / PS; i++) digest.add(i, native.crc32c(new Uint8Array(PS)));
  const zeroOffsets = Array.from({ length: 127 }, (_, i) => (i + 1) * PS);
  const rest = Array.from({ length: SIZE / PS - 128 }, (_, i) => (i + 128) * PS);
  const ch = await s.raw.channel(
    encodeInitPacket(s.raw.uuidBytes, 0),
    pkt({ normalPages: 1, zeroPages: 127, offsets: [0, ...zeroOffsets], packetNum: 0n }, page),
    pkt({ normalPages: 0, zeroPages: 128, nextPacketSize: 0, offsets: rest, packetNum: 1n }),
    sync(2n),
  );
  ch.end();
  s.raw.control.socket.write(encodeFrame({ type: 'complete', packets: [3], digests: { ram0: digest.hex() } }));
  const r = await s.result;
  t.equal(r.stats.normalPages, 1);
  const out = fs.readFileSync(path.join(s.dir, 'ram0'));
  t.equal(out.length, SIZE);
  t.same(out.subarray(0, PS), page);
  t.ok(out.subarray(PS).every((b) => b === 0));
});

const headerCases: [string, Buffer[], string, RegExp][] = [
  ['unknown ram block', [pkt({ ramblock: Buffer.from('other') })], 'ERR_PACKET_RAMBLOCK', /channel 0, packet 0: unknown ram block "other"/],
  [
    'offset out of range',
    [pkt({ offsets: [SIZE] })],
    'ERR_PACKET_OFFSET',
    /channel 0, packet 0: offset 1048576 of page 0 out of range for ram block "ram0" \(received 1048576, expected below 1048576\)/,
  ],
  ['unaligned offset', [pkt({ offsets: [100] })], 'ERR_PACKET_OFFSET', /not aligned \(received 100, expected a multiple of 4096\)/],
  ['wrong method flag', [pkt({ flags: 0x4 })], 'ERR_PACKET_METHOD', /channel 0, packet 0: flags received 0x4, expected 0x0/],
  ['lying next_packet_size', [pkt({ nextPacketSize: 3 * PS })], 'ERR_PACKET_SIZE', /next_packet_size received 12288, expected 4096/],
  // Far more than any packet buffer: the channel's reader stops after the header, and the header check says why.
  [
    'next_packet_size of 4 GiB, no payload behind it',
    [withU32(pkt({}, Buffer.alloc(0)), 20, 0xffffffff)],
    'ERR_PACKET_SIZE',
    /channel 0, packet 0: next_packet_size received 4294967295, expected 4096/,
  ],
  ['bad header magic', [Buffer.alloc(1344, 0x33)], 'ERR_PACKET_MAGIC', /channel 0: received packet magic 0x33333333, expected 0x11223344/],
  [
    'page count over pages_alloc',
    [withU32(pkt(), 16, 129)],
    'ERR_PACKET_NORMAL_PAGES',
    /129 non-zero pages, which exceeds maximum expected pages 128/,
  ],
  [
    'a page sent twice',
    [pkt({ packetNum: 0n }), pkt({ packetNum: 1n })],
    'ERR_PAGE_REPEATED',
    /channel 0, packet 1: page at offset 0 of ram block "ram0" received twice/,
  ],
];
for (const [name, packets, code, message] of headerCases) {
  t.test(`bad packet: ${name}`, async (t) => {
    const s = await setup(t);
    await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 0), ...packets);
    await expectFailure(t, s, code, message);
  });
}

t.test('a channel dropped in the middle of a packet', async (t) => {
  const s = await setup(t);
  const sock = await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 0), pkt().subarray(0, 2000));
  await new Promise((r) => setTimeout(r, 50));
  sock.end();
  await expectFailure(
    t,
    s,
    'ERR_CHANNEL_TRUNCATED',
    /channel 0: connection closed in the middle of a packet payload: received 656 of 4096 bytes/,
    ExitCode.CONNECTION,
  );
});

t.test('a channel dropped in the middle of a header, after whole packets', async (t) => {
  const s = await setup(t);
  const sock = await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 0), pkt(), pkt({ offsets: [PS], packetNum: 1n }).subarray(0, 1000));
  await new Promise((r) => setTimeout(r, 50));
  sock.end();
  const e = await rejection(s.result);
  t.match(e, {
    code: 'ERR_CHANNEL_TRUNCATED',
    channel: 0,
    message: /^connection closed in the middle of a packet header: received 1000 of 1344 bytes/,
    exitCode: ExitCode.CONNECTION,
  });
  // The whole packet before it was written: a dropped connection keeps it, under the temporary name, for a resume.
  t.same(fs.readdirSync(s.dir).sort(), ['.ram0.mfd-journal', '.ram0.mfd-partial'], 'nothing under the final name');
});

t.test('a sender that claims completion with pages missing', async (t) => {
  const s = await setup(t);
  await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 0), pkt(), sync(1n));
  s.raw.control.socket.write(encodeFrame({ type: 'complete', packets: [2], digests: { ram0: '0000000000000000' } }));
  s.raw.sockets[1]!.end();
  await expectFailure(
    t,
    s,
    'ERR_PAGES_MISSING',
    /ram block "ram0": received 1 of 256 pages \(first missing at offset 4096\)/,
    ExitCode.VERIFY,
  );
});

t.test('a packet count that does not match', async (t) => {
  const s = await setup(t);
  await s.raw.channel(encodeInitPacket(s.raw.uuidBytes, 0), pkt(), sync(1n));
  s.raw.control.socket.write(encodeFrame({ type: 'complete', packets: [5], digests: { ram0: '0000000000000000' } }));
  s.raw.sockets[1]!.end();
  await expectFailure(t, s, 'ERR_PACKET_COUNT', /channel 0: received 2 packets, expected 5/, ExitCode.VERIFY);
});

t.test('a digest that does not match the pages', async (t) => {
  const s = await setup(t);
  const all = Array.from({ length: 256 }, (_, i) => i * PS);
  await s.raw.channel(
    encodeInitPacket(s.raw.uuidBytes, 0),
    pkt({ normalPages: 0, zeroPages: 128, nextPacketSize: 0, offsets: all.slice(0, 128) }),
    pkt({ normalPages: 0, zeroPages: 128, nextPacketSize: 0, offsets: all.slice(128), packetNum: 1n }),
    sync(2n),
  );
  s.raw.control.socket.write(encodeFrame({ type: 'complete', packets: [3], digests: { ram0: '0123456789abcdef' } }));
  s.raw.sockets[1]!.end();
  await expectFailure(
    t,
    s,
    'ERR_DIGEST',
    /ram block "ram0": digest of received pages [0-9a-f]{16}, expected 0123456789abcdef/,
    ExitCode.VERIFY,
  );
});

/** A receiver, and a raw sender's hello to it: the reply, the receiver's result and the sender. */
async function helloTo(t: Test, recv: Parameters<typeof startReceiver>[0], hello: Partial<Hello>) {
  const { port, result } = await startReceiver(recv);
  result.catch(() => {});
  const raw = new RawSender(port);
  t.teardown(() => raw.close());
  return { reply: await raw.hello(hello), result, raw };
}

t.test('a ram block name that is no file name (../escape, a/b) is received into the output directory under its escaped name', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const { reply, result, raw } = await helloTo(
    t,
    { outputDir: out },
    {
      ramblocks: [
        { name: '../escape', size: 4096 },
        { name: 'a/b', size: 4096 },
      ],
    },
  );
  t.match(reply, { type: 'ready' });
  t.same(fs.readdirSync(out).sort(), [
    '.%2E.%2Fescape.mfd-journal',
    '.%2E.%2Fescape.mfd-partial',
    '.%2E.%2Fescape.mfd-reserve',
    '.a%2Fb.mfd-journal',
    '.a%2Fb.mfd-partial',
    '.a%2Fb.mfd-reserve',
  ]);
  t.same(fs.readdirSync(dir), ['out'], 'nothing beside the output directory');
  raw.control.socket.write(encodeFrame({ type: 'error', code: 'ERR_TEST', message: 'done' }));
  t.match(await rejection(result), { code: 'ERR_REMOTE' });
});

t.test(
  "hello whose ram block would be written over another block's journal or temporary file is refused; so are two blocks mapped to one file",
  async (t) => {
    for (const side of ['.a.mfd-journal', '.a.mfd-partial', '.a.mfd-journal.tmp']) {
      await t.test(side, async (t) => {
        const dir = tmpdir(t);
        const { reply, result } = await helloTo(
          t,
          { outputDir: dir, outputMap: new Map([['b', path.join(dir, side)]]) },
          {
            ramblocks: [
              { name: 'a', size: 4096 },
              { name: 'b', size: 4096 },
            ],
          },
        );
        t.match(reply, {
          type: 'error',
          code: 'ERR_HELLO_RAMBLOCK',
          message: new RegExp(`ram block "b" would be written to .*\\${side}", which mfd uses beside ram block "a"'s output`),
        });
        t.match(await rejection(result), { code: 'ERR_HELLO_RAMBLOCK' });
        t.same(fs.readdirSync(dir), [], 'no output made');
      });
    }
    const dir = tmpdir(t);
    const { reply, result } = await helloTo(
      t,
      {
        outputMap: new Map([
          ['a', path.join(dir, 'x')],
          ['b', path.join(dir, 'x')],
        ]),
      },
      {
        ramblocks: [
          { name: 'a', size: 4096 },
          { name: 'b', size: 4096 },
        ],
      },
    );
    t.match(reply, { type: 'error', message: /ram blocks "a" and "b" would both be written to ".*\/x"/ });
    t.match(await rejection(result), { code: 'ERR_USAGE' });
    t.same(fs.readdirSync(dir), []);
  },
);

t.test('a second sender while a migration runs is told the receiver is busy (exit 7), and the first goes on', async (t) => {
  const dir = tmpdir(t);
  const { reply, result, raw: first } = await helloTo(t, { outputDir: dir }, {});
  t.match(reply, { type: 'ready' });
  const port = first.port;
  const img = makeImage(path.join(dir, 'b.ram'), 1 << 20, 'mixed');
  const e = await rejection(
    send({
      host: '127.0.0.1',
      port,
      images: [{ name: 'b.ram', path: img }],
      channels: 1,
      pageSize: PS,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
      logger: silentLogger,
    }),
  );
  t.match(e, {
    code: 'ERR_REMOTE',
    exitCode: ExitCode.REMOTE,
    message: /receiver failed: busy with another migration \(00112233-4455-6677-8899-aabbccddeeff\), one at a time/,
  });
  first.control.socket.write(encodeFrame({ type: 'error', code: 'ERR_TEST', message: 'first sender gives up' }));
  t.match(await rejection(result), { code: 'ERR_REMOTE', message: /first sender gives up/ }, "the receiver was still the first sender's");
});

t.test('a peer that is not an mfd receiver (an HTTP server) is told apart from a bad frame', async (t) => {
  const dir = tmpdir(t);
  const http = net.createServer((c) => {
    c.on('error', () => {});
    c.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => http.close());
  const img = makeImage(path.join(dir, 'a.ram'), 1 << 20, 'mixed');
  const port = (http.address() as net.AddressInfo).port;
  const e = await rejection(
    send({
      host: '127.0.0.1',
      port,
      images: [{ name: 'a.ram', path: img }],
      channels: 1,
      pageSize: PS,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
      logger: silentLogger,
    }),
  );
  t.match(e, {
    code: 'ERR_CONTROL_FRAME',
    exitCode: ExitCode.PROTOCOL,
    message:
      /frame of 1213486160 bytes received, expected at most 4194304: the peer does not speak mfd's control protocol \(it sent "HTTP\.\.\."\)/,
  });
});

t.test('a receiver failure reaches the real sender as a RemoteError', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 1 << 20, 'mixed');
  const e = await rejection(
    migrate(
      {
        images: [{ name: 'a.ram', path: img }],
        channels: 2,
        pageSize: PS,
        compression: 'none',
        methodParams: {},
        zeroPageDetection: 'multifd',
      },
      { outputMap: new Map([['a.ram', path.join(dir, 'no-such-dir', 'a.ram')]]) },
    ),
  );
  t.match(e, {
    code: 'ERR_REMOTE',
    exitCode: ExitCode.REMOTE,
    message: /receiver failed: output ".*no-such-dir\/a\.ram" for ram block "a\.ram": its directory ".*no-such-dir": ENOENT/,
  });
});

t.test("a receiver that fails mid-transfer: the sender reports the receiver's reason, not the dropped channels", async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 16 << 20, 'random');
  const { ControlChannel } = await import('../../src/transport/control-channel.js');
  const server = net.createServer();
  t.teardown(() => server.close());
  const conns: net.Socket[] = [];
  let control: InstanceType<typeof ControlChannel> | null = null;
  let dataBytes = 0;
  server.on('connection', (s) => {
    conns.push(s);
    s.on('error', () => {});
    s.once('data', (first: Buffer) => {
      if (first.readUInt32BE(0) === 0x4d464443) {
        control = new ControlChannel(s, 'test', first.subarray(8));
        void control.next().then(() => control!.send({ type: 'ready' }));
        return;
      }
      // A data channel: once some pages have arrived, fail like a receiver whose disk filled up.
      s.on('data', (d: Buffer) => {
        dataBytes += d.length;
        if (dataBytes > 1 << 20 && control) {
          control.send({ type: 'error', code: 'ERR_ENOSPC', message: 'writing ram block "a.ram": ENOSPC' });
          for (const c of conns) c.destroy();
          control = null;
        }
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const e = await rejection(
    send({
      host: '127.0.0.1',
      port,
      images: [{ name: 'a.ram', path: img }],
      channels: 4,
      pageSize: PS,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
      logger: silentLogger,
    }),
  );
  t.match(e, {
    code: 'ERR_REMOTE',
    exitCode: ExitCode.REMOTE,
    message: /receiver failed: writing ram block "a\.ram": ENOSPC \[ERR_ENOSPC\]/,
  });
});

t.test("a sender that reports its own failure: the receiver exits 7 with the sender's reason", async (t) => {
  const s = await setup(t);
  s.raw.control.send({ type: 'error', code: 'ERR_IMAGE_SHRANK', message: 'image "vm.ram" shrank while sending' });
  const e = await rejection(s.result);
  t.match(e, {
    code: 'ERR_REMOTE',
    exitCode: ExitCode.REMOTE,
    message: /sender failed: image "vm\.ram" shrank while sending \[ERR_IMAGE_SHRANK\]/,
  });
  t.same(fs.readdirSync(s.dir), []);
});
