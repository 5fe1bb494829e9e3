/**
 * mfd recv --qemu treats the source as an adversary: regressions for what a peer could make it
 * allocate, loop over, write or wait for. See docs/qemu-peer.md, "Bounds".
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import { rejection } from '../helpers/index.js';
import { receiveStreams } from '../helpers/qemu.js';
import { Writer } from '../../src/qemu/format.js';
import { MAX_DEVICE_STATE, checkStreamEnd } from '../../src/qemu/main-channel.js';
import { EPOCH_CHUNK, EPOCH_SLACK, EpochBudget, MAX_EPOCH, PageEpochs } from '../../src/qemu/page-epochs.js';
import { buildQemuMigration, QEMU_CORPUS } from '../helpers/fuzz/qemu.js';
import { mutateStream } from '../helpers/fuzz/streams.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';

const PS = 4096;
/** Header and configuration "pc-test". */
const header = (): Writer => new Writer().u32(0x5145564d).u32(3).u8(0x07).u32(7).bytes(Buffer.from('pc-test'));
/** RAM START with a MEM_SIZE record of `total` bytes and these blocks. */
const start = (w: Writer, total: number, blocks: [string, number][]): Writer => {
  w.u8(0x01)
    .u32(2)
    .str('ram')
    .u32(0)
    .u32(4)
    .u64(total + 0x04);
  for (const [name, size] of blocks) w.str(name).u64(size);
  return w;
};

t.test('regression: configuration subsections repeated without end are refused (the section was kept whole in memory)', async (t) => {
  const w = header();
  for (let i = 0; i < 1000; i++) w.u8(0x05).str('configuration/uuid').u32(1).bytes(Buffer.alloc(16));
  const { result, out } = await receiveStreams(t, w.take());
  t.match(await rejection(result), {
    code: 'ERR_QEMU_CONFIGURATION',
    message: /configuration subsection "configuration\/uuid" given twice/,
  });
  t.same(fs.readdirSync(out), []);
});

t.test('regression: a MEM_SIZE record of 0 or above 64 TiB is refused before any output is created', async (t) => {
  for (const [total, blocks] of [
    [0, []],
    [
      2 ** 47,
      [
        ['a', 2 ** 46],
        ['b', 2 ** 46],
      ],
    ],
  ] as [number, [string, number][]][]) {
    const { result, out } = await receiveStreams(t, start(header(), total, blocks).take());
    t.match(
      await rejection(result),
      {
        code: 'ERR_QEMU_BLOCKS',
        message: new RegExp(`MEM_SIZE record says ${total} bytes of RAM, expected 1\\.\\.${2 ** 46} \\(64 TiB\\)`),
      },
      `total ${total}`,
    );
    t.same(fs.readdirSync(out), [], `total ${total}: no output`);
  }
});

t.test('regression: the page epoch table of a block of more than 2^32 pages does not alias pages 2^32 apart', async (t) => {
  const e = new PageEpochs('big', 2 ** 33, new EpochBudget());
  e.set(2 ** 32, 7);
  t.equal(e.get(0), -1, 'page 0 was never written (it read 7: chunks were keyed by i >>> 12)');
  t.equal(e.get(2 ** 32), 7);
  t.equal(e.count, 1);
  t.equal(e.firstMissing(), 0);
});

t.test('regression: ZERO records scattered over a huge block are refused instead of allocating a chunk each', async (t) => {
  const pages = (EPOCH_SLACK / EPOCH_CHUNK + 100) * EPOCH_CHUNK; // a 64 GiB sparse block
  const w = start(header(), pages * PS, [['mem', pages * PS]])
    .u64(0x10)
    .u8(0x7e)
    .u32(2);
  w.u8(0x02).u32(2).u64(0x02).str('mem').u8(0);
  // One 9-byte record per 1024-page chunk: 4 KiB of table each, 16 KiB before (chunks of 4096 pages).
  for (let c = 1; c < pages / EPOCH_CHUNK; c++) w.u64(c * EPOCH_CHUNK * PS + 0x22).u8(0);
  const before = process.memoryUsage().arrayBuffers;
  const { result, out } = await receiveStreams(t, w.take());
  const e = await rejection(result);
  t.match(e, {
    code: 'ERR_QEMU_PAGE_SPREAD',
    message: /ramblock "mem": page at offset \d+ would grow the page table to \d+ entries for \d+ pages received/,
  });
  const grew = process.memoryUsage().arrayBuffers - before;
  t.ok(grew < EPOCH_SLACK * 4 + (16 << 20), `array buffers grew by ${grew} bytes`);
  t.same(fs.readdirSync(out), [], 'the sparse output is gone');
});

t.test(
  'regression: an epoch past 2^31 - 1 is refused (stored in an Int32Array, it wrapped to -1, "never written", and below)',
  async (t) => {
    const e = new PageEpochs('mem', 4, new EpochBudget());
    e.set(0, MAX_EPOCH);
    t.equal(e.get(0), MAX_EPOCH);
    t.throws(() => e.set(1, MAX_EPOCH + 1), {
      code: 'ERR_QEMU_SYNC_COUNT',
      message: /ramblock "mem": a page after 2147483648 sync points, expected at most 2147483647/,
    });
    t.equal(e.count, 1);
  },
);

t.test('a legit migration stays far inside the page table budget', async (t) => {
  const b = new EpochBudget();
  const e = new PageEpochs('mem', 10 * EPOCH_CHUNK + 5, b);
  for (let i = 10 * EPOCH_CHUNK + 4; i >= 0; i--) e.set(i, 1);
  t.equal(b.allocated, 10 * EPOCH_CHUNK + 5, 'the last chunk is cut to the block');
  t.equal(b.pages, e.count);
  t.equal(e.firstMissing(), e.pages);
});

t.test(
  'regression: a device-state tail full of 00 06 <length> { candidates is checked in linear time (each was decoded to its end)',
  async (t) => {
    const tail = Buffer.alloc(1 << 20, 0x20);
    for (let at = 0; at + 8 <= tail.length; at += 8) {
      tail[at] = 0;
      tail[at + 1] = 6;
      tail.writeUInt32BE(tail.length - at - 6, at + 2);
      tail[at + 6] = 0x7b;
    }
    tail[tail.length - 1] = 0x78; // no candidate parses
    const t0 = performance.now();
    t.throws(() => checkStreamEnd(tail, tail.length, 'main', PS), { code: 'ERR_QEMU_MAIN_TRUNCATED' });
    const ms = performance.now() - t0;
    t.ok(ms < 1000, `${Math.round(ms)} ms (minutes before)`);
    const desc = Buffer.from('{"page_size": 4096}');
    const good = Buffer.concat([tail.subarray(0, 1000), Buffer.from([0, 6, 0, 0, 0, desc.length]), desc]);
    t.not(checkStreamEnd(good, good.length, 'main', PS), null, 'a VM description whose length has zero bytes is still found');
  },
);

t.test('regression: device state is capped (a source that never ends filled the disk)', async (t) => {
  t.equal(MAX_DEVICE_STATE, 1 << 30);
  const m = await buildQemuMigration(QEMU_CORPUS[0]!);
  const main = Buffer.concat([m.main.subarray(0, m.main.length - m.deviceState.length), Buffer.alloc(256 * 1024, 0x04)]);
  const { result, out } = await receiveStreams(t, main, [], { recv: { maxDeviceStateBytes: 64 * 1024 } });
  t.match(await rejection(result), {
    code: 'ERR_QEMU_DEVICE_STATE_SIZE',
    message: /more than 65536 bytes of device state after the RAM END section/,
  });
  t.same(fs.readdirSync(out), [], 'no output left');
});

t.test(
  "regression: a ramblock name whose file name would be too long is refused as the peer's fault (it was an I/O error, ENAMETOOLONG)",
  async (t) => {
    const name = 'a/'.repeat(100);
    const { result, out } = await receiveStreams(t, start(header(), PS, [[name, PS]]).take());
    t.match(await rejection(result), {
      code: 'ERR_QEMU_BLOCKS',
      exitCode: 3,
      message: /makes a file name of 400 bytes, expected at most 240/,
    });
    t.same(fs.readdirSync(out), []);
  },
);

t.test('regression: a failure while the outputs are being created leaves none of them behind', async (t) => {
  const blocks: [string, number][] = Array.from({ length: 2000 }, (_, i) => [`b${i}`, PS]);
  const abort = new AbortController();
  const { result, out } = await receiveStreams(t, start(header(), 2000 * PS, blocks).take(), [], { recv: { signal: abort.signal } });
  // Abort once some outputs exist: the ones created after it were left as .bNNN.mfd-partial.
  while (fs.readdirSync(out).length < 20) await new Promise((r) => setTimeout(r, 2));
  abort.abort('test');
  t.match(await rejection(result), { code: 'ERR_INTERRUPTED' });
  t.same(fs.readdirSync(out), [], 'nothing left when the failure is reported');
  await new Promise((r) => setTimeout(r, 200));
  t.same(fs.readdirSync(out), [], 'nor later');
});

t.test('regression: multifd channels without a main channel fail after the timeout (the receiver waited for ever)', async (t) => {
  const { result, port } = await receiveStreams(t, Buffer.alloc(0), [], { recv: { timeoutMs: 300 } });
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  s.end(encodeInitPacket(new Uint8Array(16), 0));
  t.match(await rejection(result), {
    code: 'ERR_QEMU_MAIN_MISSING',
    message: 'multifd channels connected, but no main channel within 300 ms (a source connects it first)',
  });
});

t.test(
  'regression: a connection that never identifies itself is dropped after the timeout, and the migration goes on (it failed the migration)',
  async (t) => {
    const { main } = await buildQemuMigration(QEMU_CORPUS[0]!);
    // An idle stranger first, then the real source, which takes longer than the timeout to start.
    const { result, port } = await receiveStreams(t, Buffer.alloc(0), [], { recv: { timeoutMs: 300 } });
    const idle = net.connect(port, '127.0.0.1');
    idle.on('error', () => {});
    const closed = new Promise<number>((resolve) => {
      const at = performance.now();
      idle.on('close', () => resolve(performance.now() - at));
    });
    t.ok((await closed) >= 250, 'the idle stranger is dropped after about the timeout');
    const src = net.connect(port, '127.0.0.1');
    src.on('error', () => {});
    src.end(main);
    t.match(await result, { manifest: { multifd: false } }, 'the migration that came later completes');
  },
);

t.test('regression: connections beyond main + 256 multifd channels are refused (each held a socket until its timeout)', async (t) => {
  const { port } = await receiveStreams(t, Buffer.alloc(0), [], { recv: { timeoutMs: 3000 } });
  const socks = await Promise.all(
    Array.from(
      { length: 300 },
      () =>
        new Promise<net.Socket>((resolve) => {
          const s = net.connect(port, '127.0.0.1', () => resolve(s));
          s.on('error', () => {});
        }),
    ),
  );
  t.teardown(() => socks.forEach((s) => s.destroy()));
  const closed = await new Promise<number>((resolve) => {
    let n = 0;
    for (const s of socks) s.on('close', () => n++);
    setTimeout(() => resolve(n), 500);
  });
  t.ok(closed >= 300 - 264 && closed < 300, `${closed} of 300 connections closed by the receiver`);
  socks.forEach((s) => s.destroy());
});

t.test(
  'regression: multifd bytes that arrive before the block list are buffered up to 64 MiB in all (64 MiB per channel before)',
  async (t) => {
    const { result, port } = await receiveStreams(t, Buffer.alloc(0), [], { recv: { timeoutMs: 1500 } });
    const data = Buffer.alloc(48 << 20, 0x11);
    encodeInitPacket(new Uint8Array(16), 0).forEach((b, i) => (data[i] = b));
    const before = process.memoryUsage().arrayBuffers;
    const socks = [0, 1, 2].map((id) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.write(encodeInitPacket(new Uint8Array(16), id));
      s.write(data.subarray(64));
      return s;
    });
    t.teardown(() => socks.forEach((s) => s.destroy()));
    await new Promise((r) => setTimeout(r, 1000));
    const grew = process.memoryUsage().arrayBuffers - before;
    t.ok(
      grew < 110 << 20,
      `array buffers grew by ${Math.round(grew / 1048576)} MiB for 3 x 48 MiB sent (receiver buffered them all: ~144 MiB)`,
    );
    t.match(await rejection(result), { code: 'ERR_QEMU_MAIN_MISSING' });
  },
);

t.test('records a peer may send anywhere are refused with where and what, before any write', async (t) => {
  const ram = (): Writer =>
    start(header(), 2 * PS, [['mem', 2 * PS]])
      .u64(0x10)
      .u8(0x7e)
      .u32(2)
      .u8(0x02)
      .u32(2);
  const cases: [string, Buffer, string, RegExp][] = [
    ['ZERO|CONTINUE before any block', ram().u64(0x22).u8(0).take(), 'ERR_QEMU_RAM_RECORD', /CONTINUE record without a previous ramblock/],
    [
      'a page past the block',
      ram()
        .u64(2 * PS + 0x02)
        .str('mem')
        .u8(0)
        .take(),
      'ERR_QEMU_RAM_RECORD',
      /page offset 8192 out of range for ramblock "mem" \(expected a multiple of 4096 below 8192\)/,
    ],
    ['an unknown block', ram().u64(0x08).str('pc.ram').take(), 'ERR_QEMU_RAM_RECORD', /unknown ramblock "pc.ram"/],
    [
      'a second MEM_SIZE',
      start(header(), PS, [['mem', PS]])
        .u64(PS + 0x04)
        .str('x')
        .u64(PS)
        .take(),
      'ERR_QEMU_RAM_FLAGS',
      /a second MEM_SIZE record/,
    ],
    [
      'a block size not a multiple of the page',
      start(header(), 2 * PS, [
        ['mem', PS + 1],
        ['b', PS - 1],
      ]).take(),
      'ERR_QEMU_BLOCKS',
      /used_length 4097, expected a positive multiple of 4096/,
    ],
    [
      'a machine type of 4 GiB',
      new Writer().u32(0x5145564d).u32(3).u8(0x07).u32(0xffffffff).take(),
      'ERR_QEMU_CONFIGURATION',
      /machine type of 4294967295 bytes, expected at most 256/,
    ],
  ];
  for (const [what, bytes, code, message] of cases) {
    const { result, out } = await receiveStreams(t, bytes);
    const e = await rejection(result);
    t.equal(e.code, code, `${what}: ${code}`);
    t.match(e.message, message, `${what}: ${e.message}`);
    t.same(fs.readdirSync(out), [], `${what}: nothing left`);
  }
});

t.test('a multifd packet for a block not in the list is refused', async (t) => {
  const m = await buildQemuMigration(QEMU_CORPUS[2]!);
  // Packet 0 is START's SYNC, packet 1 the first with pages: rename its block.
  t.equal(Buffer.from(m.channels[0]!.packets[1]!.header.subarray(64, 68)).toString(), 'mem\0');
  const ch = mutateStream(m.channels[0]!, [{ k: 'name', packet: 1, name: Buffer.from('meh') }]);
  const { result } = await receiveStreams(t, m.main, [ch.subarray(64)]);
  t.match(await rejection(result), { code: 'ERR_PACKET_RAMBLOCK', message: /unknown ram block "meh"/ });
});
