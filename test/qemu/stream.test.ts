/**
 * mfd recv --qemu against hand-built QEMU streams: the order rules (a page re-sent in a later
 * pass wins, ZERO records overwrite, stale multifd data arriving late loses), the refusals
 * (another iterative section, xbzrle, compress, postcopy commands, unknown section types,
 * device state before the RAM END section) and the SYNC count check. No QEMU needed.
 */
import t from 'tap';
import type { Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import net, { type AddressInfo } from 'node:net';
import { pagesDigest, tmpdir } from '../helpers/index.js';
import { listenQemu, receiveStreams } from '../helpers/qemu.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { Writer } from '../../src/qemu/format.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { packetHeaderSize } from '../../src/wire/constants.js';
import { silentLogger } from '../../src/log.js';
import { sendQemu } from '../../src/qemu/replay.js';
import { MfdError } from '../../src/errors.js';
import { fileSha256 } from '../../src/qemu/manifest.js';

const PS = 4096;
const page = (b: number): Buffer => Buffer.alloc(PS, b);

/** Main-channel builder: header + configuration "pc-test", RAM section id 2. */
function mainStream(): Writer {
  const w = new Writer();
  w.u32(0x5145564d).u32(3).u8(0x07).u32(7).bytes(Buffer.from('pc-test'));
  return w;
}
const start = (w: Writer, pages: number): Writer =>
  w
    .u8(0x01)
    .u32(2)
    .str('ram')
    .u32(0)
    .u32(4)
    .u64(pages * PS + 0x04)
    .str('mem')
    .u64(pages * PS);
const eos = (w: Writer): Writer => w.u64(0x10).u8(0x7e).u32(2);
const part = (w: Writer): Writer => w.u8(0x02).u32(2);
const end = (w: Writer): Writer => w.u8(0x03).u32(2);
const pageRec = (w: Writer, n: number, first: boolean, data: Buffer): Writer =>
  (first ? w.u64(n * PS + 0x08).str('mem') : w.u64(n * PS + 0x28)).bytes(data);
const zeroRec = (w: Writer, n: number, first: boolean): Writer => (first ? w.u64(n * PS + 0x02).str('mem') : w.u64(n * PS + 0x22)).u8(0);

let packetNum = 0n;
function packet(flags: number, offsets: number[], pages: Buffer[], zeroOffsets: number[] = []): Buffer {
  const hs = packetHeaderSize(PS);
  const h = encodePacketHeader(new Uint8Array(hs), hs, {
    flags,
    pagesAlloc: 128,
    normalPages: pages.length,
    zeroPages: zeroOffsets.length,
    nextPacketSize: pages.length * PS,
    packetNum: packetNum++,
    ramblock: Buffer.from(offsets.length + zeroOffsets.length ? 'mem' : ''),
    offsets: [...offsets, ...zeroOffsets].map((o) => o * PS),
  });
  return Buffer.concat([h, ...pages]);
}
const SYNC = packet.bind(null, 0x01, [], []);

const receive = (t: Test, main: Buffer, channels: Buffer[] = [], delayChannelsMs = 0) =>
  receiveStreams(t, main, channels, { delayChannelsMs });

t.test('without multifd: a later pass wins and ZERO records overwrite', async (t) => {
  const w = start(mainStream(), 3);
  eos(w);
  pageRec(part(w), 0, true, page(0xaa));
  pageRec(w, 1, false, page(0xbb));
  zeroRec(w, 2, false);
  eos(w);
  zeroRec(part(w), 0, true);
  pageRec(w, 1, false, page(0xcc));
  eos(w);
  eos(end(w));
  const desc = Buffer.from('{"page_size": 4096, "devices": []}');
  w.u8(0x04).bytes(Buffer.from('device state')).u8(0x00).u8(0x06).u32(desc.length).bytes(desc);
  const { result, out } = await receive(t, w.take());
  const r = await result;
  t.same(fs.readFileSync(path.join(out, 'mem')), Buffer.concat([page(0), page(0xcc), page(0)]));
  t.same(
    fs.readFileSync(path.join(out, 'device-state')),
    Buffer.concat([Buffer.from('\x04device state\x00\x06\x00\x00\x00\x22'), desc]),
    'everything after the RAM END section, verbatim',
  );
  t.equal(r.manifest.deviceState.vmDescription, true, 'ended with the VM description');
  t.equal(r.manifest.qemu.machineType, 'pc-test');
  t.equal(r.manifest.multifd, false);
  t.equal(
    r.manifest.ramblocks[0]!.digest,
    pagesDigest(path.join(out, 'mem')),
    'the digest is of what the file holds, rewritten pages included',
  );
  t.equal(r.manifest.deviceState.sha256, await fileSha256(path.join(out, 'device-state')), "the device state's SHA-256");
});

t.test('multifd: stale data of an earlier pass arriving late loses to a later ZERO record', async (t) => {
  const w = start(mainStream(), 2);
  eos(w); // sync 0
  eos(part(w)); // sync 1: p0 = 0xaa, p1 = 0xbb went over multifd in this section
  zeroRec(part(w), 0, true); // p0 became zero in the next pass
  eos(w); // sync 2
  eos(end(w)); // sync 3
  w.u8(0x00);
  const ch = Buffer.concat([SYNC(), packet(0, [0, 1], [page(0xaa), page(0xbb)]), SYNC(), SYNC(), SYNC()]);
  // The channel's bytes arrive after the whole main channel has been read.
  const { result, out } = await receive(t, w.take(), [ch], 100);
  const r = await result;
  t.same(fs.readFileSync(path.join(out, 'mem')), Buffer.concat([page(0), page(0xbb)]));
  t.equal(r.manifest.counts.stalePages, 1, 'the stale page was counted and not written');
  t.equal(r.manifest.channels, 1);
  t.equal(r.manifest.ramblocks[0]!.digest, pagesDigest(path.join(out, 'mem')), 'the digest is of what the file holds');
});

t.test('multifd: pages re-sent in a later pass are rewritten, and the digest follows what the file holds', async (t) => {
  const w = start(mainStream(), 4);
  eos(w); // sync 0
  eos(part(w)); // sync 1: pass 1 over multifd
  eos(part(w)); // sync 2: pass 2 over multifd
  eos(end(w)); // sync 3
  w.u8(0x00);
  const ch = Buffer.concat([
    SYNC(),
    packet(0, [0, 1, 2, 3], [page(0xa0), page(0xa1), page(0xa2), page(0xa3)]),
    SYNC(),
    // Pass 2: p1 and p2 rewritten (a run), p0 zeroed in the packet.
    packet(0, [1, 2], [page(0xb1), page(0xb2)], [0]),
    SYNC(),
    SYNC(),
  ]);
  const { result, out } = await receive(t, w.take(), [ch]);
  const r = await result;
  const file = fs.readFileSync(path.join(out, 'mem'));
  t.same(file, Buffer.concat([page(0), page(0xb1), page(0xb2), page(0xa3)]));
  t.equal(r.manifest.counts.stalePages, 0);
  t.equal(
    r.manifest.ramblocks[0]!.digest,
    pagesDigest(path.join(out, 'mem')),
    'the digest is of the pages the file holds, not of every page received',
  );
});

t.test(
  "multifd: QEMU's stale next_packet_size on packets without normal pages is not read as a payload (the channel reader's QEMU profile)",
  async (t) => {
    const w = start(mainStream(), 3);
    eos(w); // sync 0
    eos(part(w)); // sync 1
    eos(end(w)); // sync 2
    w.u8(0x00);
    /** A packet without normal pages whose next_packet_size is left over from an earlier one (QEMU <= 9.1). */
    const stale = (p: Buffer): Buffer => {
      p.writeUInt32BE(2 * PS, 20);
      return p;
    };
    const ch = Buffer.concat([
      stale(SYNC()),
      packet(0, [0, 1], [page(0xaa), page(0xbb)]),
      stale(packet(0, [], [], [2])),
      stale(SYNC()),
      stale(SYNC()),
    ]);
    const { result, out } = await receive(t, w.take(), [ch]);
    const r = await result;
    t.same(fs.readFileSync(path.join(out, 'mem')), Buffer.concat([page(0xaa), page(0xbb), page(0)]), 'every page in place');
    t.match(r.manifest.counts, { multifdPackets: 5, syncPackets: 3, multifdNormalPages: 2, multifdZeroPages: 1 });
  },
);

t.test(
  'multifd: a packet is written in runs of adjacent pages; a stale page inside a run splits it, and only it is kept out',
  async (t) => {
    const w = start(mainStream(), 6);
    eos(w); // sync 0
    eos(part(w)); // sync 1: the packet below went over multifd in this section
    zeroRec(part(w), 2, true); // p2 became zero in the next pass
    eos(w); // sync 2
    eos(end(w)); // sync 3
    w.u8(0x00);
    // Offsets 0 1 2 3 5 4: a run of four (p2 stale inside it), then a gap, then a step back.
    const data = [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5].map(page);
    const ch = Buffer.concat([SYNC(), packet(0, [0, 1, 2, 3, 5, 4], data), SYNC(), SYNC(), SYNC()]);
    const { result, out } = await receive(t, w.take(), [ch], 100);
    const r = await result;
    t.same(fs.readFileSync(path.join(out, 'mem')), Buffer.concat([page(0xa0), page(0xa1), page(0), page(0xa3), page(0xa5), page(0xa4)]));
    t.equal(r.manifest.counts.stalePages, 1, 'only the stale page was kept out');
    t.equal(r.manifest.ramblocks[0]!.digest, pagesDigest(path.join(out, 'mem')), 'the digest is of what the file holds');
  },
);

t.test(
  'multifd: a channel accepted after the whole main channel was read is waited for (a small migration sits in the socket buffers, read in any order)',
  async (t) => {
    const w = start(mainStream(), 2);
    eos(w); // sync 0
    eos(end(w)); // sync 1: both pages went over multifd
    w.u8(0x00);
    const ch = Buffer.concat([SYNC(), packet(0, [0, 1], [page(0xaa), page(0xbb)]), SYNC()]);
    const { result, out } = await receiveStreams(t, w.take(), [ch], { delayChannelsMs: 200, channelsLate: true });
    const r = await result;
    t.same(fs.readFileSync(path.join(out, 'mem')), Buffer.concat([page(0xaa), page(0xbb)]));
    t.equal(r.manifest.channels, 1);
  },
);

/**
 * A main channel of two pages that both go over multifd, and three channels: page 0xaa on one, page
 * 0xbb on another, and one (`syncOnly`) that carries nothing but its two SYNCs.
 */
function twoPagesThreeChannels(syncOnly: number): { main: Buffer; chans: Buffer[] } {
  const w = start(mainStream(), 2);
  eos(w);
  eos(end(w));
  w.u8(0x00);
  const withPages = [
    Buffer.concat([SYNC(), packet(0, [0], [page(0xaa)]), SYNC()]),
    Buffer.concat([SYNC(), packet(0, [1], [page(0xbb)]), SYNC()]),
  ];
  const chans = [...withPages];
  chans.splice(syncOnly, 0, Buffer.concat([SYNC(), SYNC()]));
  return { main: w.take(), chans };
}

t.test('multifd: a channel that carries only SYNCs, accepted after every other channel has ended, is waited for', async (t) => {
  const { main, chans } = twoPagesThreeChannels(1);
  const { result, out } = await receiveStreams(t, main, chans, { delayChannelsMs: 300, lateIds: [1] });
  const r = await result;
  t.same(fs.readFileSync(path.join(out, 'mem')), Buffer.concat([page(0xaa), page(0xbb)]));
  t.equal(r.manifest.channels, 3, 'the late channel is counted');
});

t.test('multifd: a channel below the highest that never connects fails after --timeout, naming it, with nothing finished', async (t) => {
  const { main, chans } = twoPagesThreeChannels(1);
  const { result, out } = await receiveStreams(t, main, chans, { missingIds: [1], recv: { timeoutMs: 800 } });
  await t.rejects(result, { code: 'ERR_CHANNEL_MISSING', message: /multifd channels 0, 2 connected: channel 1 never did/ });
  t.notOk(fs.existsSync(path.join(out, 'manifest.json')), 'no manifest');
});

t.test('multifd: with --channels, a missing highest channel (it carried only SYNCs) fails after --timeout, naming it', async (t) => {
  const { main, chans } = twoPagesThreeChannels(2);
  const { result, out } = await receiveStreams(t, main, chans, { missingIds: [2], recv: { timeoutMs: 800, channels: 3 } });
  await t.rejects(result, {
    code: 'ERR_CHANNEL_MISSING',
    message: /multifd channels 0, 1 connected, expected 3 \(--channels\): channel 2 never did/,
  });
  t.notOk(fs.existsSync(path.join(out, 'manifest.json')), 'no manifest');
  // Without the count, the same two channels are a whole migration of two channels: that is all they show.
  const again = twoPagesThreeChannels(2);
  const without = await receiveStreams(t, again.main, again.chans, { missingIds: [2], recv: { timeoutMs: 800 } });
  t.equal((await without.result).manifest.channels, 2, 'without --channels: finished with the two that came');
});

t.test('multifd: with --channels, every channel connected finishes; a channel id past the count is refused', async (t) => {
  const ok = twoPagesThreeChannels(2);
  const { result, out } = await receiveStreams(t, ok.main, ok.chans, { recv: { channels: 3 } });
  t.equal((await result).manifest.channels, 3);
  t.same(fs.readFileSync(path.join(out, 'mem')), Buffer.concat([page(0xaa), page(0xbb)]));
  const past = twoPagesThreeChannels(2);
  const refused = await receiveStreams(t, past.main, past.chans, { recv: { channels: 2 } });
  await t.rejects(refused.result, {
    code: 'ERR_INIT_CHANNEL_ID',
    message: /received channel id 2, expected less than 2 \(--channels 2, the source's multifd-channels\)/,
  });
});

t.test('multifd: a connection that has not said what it is holds the finish until it does or closes', async (t) => {
  const w = start(mainStream(), 1);
  eos(w);
  eos(end(w));
  w.u8(0x00);
  const out = tmpdir(t);
  const stop = new AbortController();
  t.teardown(() => stop.abort('test ended'));
  const { port, result } = await listenQemu({ outputDir: out, timeoutMs: 5000, signal: stop.signal });
  let done = false;
  result.then(
    () => (done = true),
    () => (done = true),
  );
  const open = (): Promise<net.Socket> =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(s));
      s.on('error', () => {});
    });
  const silent = await open();
  const ch = await open();
  ch.end(Buffer.concat([encodeInitPacket(new Uint8Array(16), 0), SYNC(), packet(0, [0], [page(7)]), SYNC()]));
  (await open()).end(w.take());
  await new Promise((r) => setTimeout(r, 400));
  t.notOk(done, 'not finished while a connection has not said what it is');
  silent.destroy();
  const r = await result;
  t.equal(r.manifest.channels, 1);
  t.same(fs.readFileSync(path.join(out, 'mem')), page(7));
});

t.test('multifd: a channel missing a SYNC is a verification failure', async (t) => {
  const w = start(mainStream(), 1);
  eos(w);
  eos(end(w));
  w.u8(0x00);
  const { result } = await receive(t, w.take(), [Buffer.concat([SYNC(), packet(0, [0], [page(1)])])]);
  await t.rejects(result, { code: 'ERR_QEMU_SYNC_COUNT', message: /received 1 SYNC packets, expected 2/ });
});

t.test('refusals: what mfd cannot handle, with what and why', async (t) => {
  const ram = (): Writer => eos(start(mainStream(), 1));
  const cases: [string, Buffer, string, RegExp][] = [
    [
      'block migration',
      mainStream().u8(0x01).u32(3).str('block').u32(0).u32(1).take(),
      'ERR_QEMU_ITERATIVE_SECTION',
      /iterative section "block"/,
    ],
    ['a PART of another section', part(ram()).take().subarray(0, -4), '', /./],
    [
      'xbzrle',
      part(ram())
        .u64(0x40 + 0x20)
        .take(),
      'ERR_QEMU_UNSUPPORTED',
      /XBZRLE.*xbzrle/,
    ],
    [
      'compress',
      part(ram())
        .u64(0x100 + 0x20)
        .take(),
      'ERR_QEMU_UNSUPPORTED',
      /COMPRESS_PAGE.*compress/,
    ],
    ['postcopy', mainStream().u8(0x08).u32(0x00030000).take(), 'ERR_QEMU_COMMAND', /POSTCOPY_ADVISE/],
    ['return path', ram().u8(0x08).u32(0x00010000).take(), 'ERR_QEMU_COMMAND', /OPEN_RETURN_PATH/],
    [
      'switchover-ack',
      ram().u8(0x08).u32(0x00010000).take(),
      'ERR_QEMU_COMMAND',
      /OPEN_RETURN_PATH \(the source opens a return path \(capability return-path, which postcopy-ram and switchover-ack need\)/,
    ],
    [
      'an unknown command, even without data',
      ram().u8(0x08).u32(0x000c0000).take(),
      'ERR_QEMU_COMMAND',
      /migration command 12 \(unknown to mfd, which cannot tell whether it waits for an answer\)/,
    ],
    [
      'SWITCHOVER_START with data',
      ram().u8(0x08).u32(0x000b0001).u8(0).take(),
      'ERR_QEMU_COMMAND',
      /SWITCHOVER_START with 1 bytes of data, expected 0/,
    ],
    [
      'a second SWITCHOVER_START',
      ram().u8(0x08).u32(0x000b0000).u8(0x08).u32(0x000b0000).take(),
      'ERR_QEMU_COMMAND',
      /a second SWITCHOVER_START/,
    ],
    ['an unknown section type', ram().u8(0x42).take(), 'ERR_QEMU_SECTION_TYPE', /section type 0x42/],
    ['device state before RAM END', ram().u8(0x04).u32(0).take(), 'ERR_QEMU_SECTION_ORDER', /FULL section before the RAM END/],
  ];
  const truncated = eos(end(ram())).u8(0x04).bytes(Buffer.from('half a device')).take();
  const cut = await receive(t, truncated);
  await t.rejects(
    cut.result,
    { code: 'ERR_QEMU_MAIN_TRUNCATED', message: /without QEMU's end \(no EOF marker, no VM description/ },
    'a source that died in the device state: refused, exit 4',
  );
  cases[1] = [
    'a PART of another section',
    ram().u8(0x02).u32(9).take(),
    'ERR_QEMU_ITERATIVE_SECTION',
    /iterative section id 9 interleaved with RAM/,
  ];
  for (const [what, bytes, code, message] of cases) {
    const { result } = await receive(t, bytes);
    const e = await result.then(
      () => null,
      (x: MfdError) => x,
    );
    t.ok(e instanceof MfdError, `${what}: refused`);
    t.equal(e?.code, code, `${what}: ${code}`);
    t.match(e?.message, message, `${what}: ${e?.message}`);
    t.equal(e?.exitCode, 3, `${what}: exit 3`);
  }
});

t.test('a device-state packet (QEMU 10.0, flag 0x40: VFIO state over multifd) is refused with what and why', async (t) => {
  const w = start(mainStream(), 1);
  eos(w);
  eos(end(w));
  w.u8(0x00);
  // The 12-byte common header, then idstr[256], instance_id, next_packet_size and the blob.
  const dev = Buffer.alloc(276 + 16);
  dev.writeUInt32BE(0x11223344, 0);
  dev.writeUInt32BE(1, 4);
  dev.writeUInt32BE(0x40, 8);
  dev.write('0000:00:02.0/vfio', 12);
  dev.writeUInt32BE(16, 272);
  const { result } = await receive(t, w.take(), [Buffer.concat([SYNC(), dev])]);
  const e = await result.then(
    () => null,
    (x: MfdError) => x,
  );
  t.equal(e?.code, 'ERR_QEMU_DEVICE_STATE_PACKET');
  t.equal(e?.channel, 0, 'the channel is a field');
  t.match(
    e?.message,
    /^a device-state packet \(flags 0x40: VFIO device state over multifd, QEMU 10\.0\+\): mfd keeps the RAM and the device state of the main channel only; turn x-migration-multifd-transfer off/,
  );
  t.equal(e?.exitCode, 3, 'exit 3');
});

t.test(
  "QEMU 8.1+ shape: syncs per pass (MULTIFD_FLUSH), zero pages in multifd packets, 10.0's SWITCHOVER_START; replayed by mfd send --qemu into mfd recv --qemu",
  async (t) => {
    const FLUSH = 0x200;
    const w = start(mainStream(), 4);
    w.u64(FLUSH); // setup sync
    eos(w);
    eos(part(w)); // pass 1 goes on past the section's end: no sync here
    part(w).u64(FLUSH); // pass 1 complete
    eos(w);
    zeroRec(part(w), 3, true); // legacy zero-page detection still works on the main channel
    eos(w);
    w.u8(0x08).u32(0x000b0000); // QEMU 10.0: MIG_CMD_SWITCHOVER_START, no data, before the END section
    end(w).u64(FLUSH);
    eos(w);
    w.u8(0x04).bytes(Buffer.from('devices')).u8(0x00);
    const ch = [
      Buffer.concat([SYNC(), packet(0, [0], [page(0x11)], [1]), SYNC(), packet(0, [1], [page(0x22)]), SYNC()]),
      Buffer.concat([SYNC(), packet(0, [2], [page(0x33)]), SYNC(), SYNC()]),
    ];
    const { result, out } = await receive(t, w.take(), ch);
    const r = await result;
    t.equal(r.manifest.syncMode, 'round');
    t.equal(r.manifest.counts.flushRecords, 3);
    t.equal(r.manifest.switchoverStart, true, 'SWITCHOVER_START noted');
    const want = Buffer.concat([page(0x11), page(0x22), page(0x33), page(0)]);
    t.same(fs.readFileSync(path.join(out, 'mem')), want, 'page 1: zero in pass 1 (multifd zero page), data in pass 2');

    // Replay the saved directory into a second receiver, over 3 zstd channels and without multifd.
    for (const [channels, compression] of [
      [3, 'zstd'],
      [0, 'none'],
    ] as const) {
      const out2 = tmpdir(t);
      const { port, result: second } = await listenQemu({ outputDir: out2, timeoutMs: 5000 });
      const sent = await sendQemu({
        host: '127.0.0.1',
        port,
        dir: out,
        channels,
        compression,
        methodParams: {},
        connectTimeoutMs: 5000,
        logger: silentLogger,
      });
      const r2 = await second;
      t.equal(sent.zeroPages, 1, `${channels} channels: one zero page as a ZERO record`);
      t.same(fs.readFileSync(path.join(out2, 'mem')), want, `${channels} channels: ramblock replayed`);
      t.same(
        fs.readFileSync(path.join(out2, 'device-state')),
        fs.readFileSync(path.join(out, 'device-state')),
        `${channels} channels: device state replayed`,
      );
      t.equal(r2.manifest.syncMode, channels ? 'round' : 'section', `${channels} channels: sync mode`);
      t.equal(r2.manifest.method, channels ? compression : null);
      t.equal(r2.manifest.configuration, r.manifest.configuration, 'configuration section replayed');
    }

    // A capture changed since it was saved (same size): the pages sent do not have the manifest's
    // digest, and the destination never gets the END section (it fails, nothing looks complete).
    const altered = tmpdir(t);
    for (const f of fs.readdirSync(out)) fs.copyFileSync(path.join(out, f), path.join(altered, f));
    const fd = fs.openSync(path.join(altered, 'mem'), 'r+');
    fs.writeSync(fd, Buffer.from([0x34]), 0, 1, 2 * PS + 100);
    fs.closeSync(fd);
    for (const channels of [2, 0]) {
      const { port, result: third } = await listenQemu({ outputDir: tmpdir(t), timeoutMs: 5000 });
      third.catch(() => {});
      const e = await sendQemu({
        host: '127.0.0.1',
        port,
        dir: altered,
        channels,
        compression: 'none',
        methodParams: {},
        connectTimeoutMs: 5000,
        logger: silentLogger,
      }).catch((e: unknown) => e);
      t.match(
        e,
        {
          code: 'ERR_QEMU_MANIFEST',
          message: new RegExp(
            `ramblock "mem": .*mem has digest [0-9a-f]{16} \\(crc32c-pages-v1\\), the manifest says ${r.manifest.ramblocks[0]!.digest}`,
          ),
        },
        `${channels} channels: an altered capture is refused, with both digests`,
      );
      t.match(await third.catch((e: unknown) => e), { name: 'ConnectionError' }, `${channels} channels: the destination did not complete`);
    }

    // A manifest of an earlier mfd: a SHA-256 per ramblock, checked before anything is sent.
    const old = JSON.parse(fs.readFileSync(path.join(altered, 'manifest.json'), 'utf8')) as { ramblocks: Record<string, unknown>[] };
    delete old.ramblocks[0]!.digest;
    old.ramblocks[0]!.sha256 = await fileSha256(path.join(out, 'mem'));
    fs.writeFileSync(path.join(altered, 'manifest.json'), JSON.stringify(old));
    let connected = false;
    const nobody = net.createServer((s) => ((connected = true), s.destroy()));
    await new Promise<void>((r) => nobody.listen(0, '127.0.0.1', () => r()));
    t.teardown(() => nobody.close());
    const refused = await sendQemu({
      host: '127.0.0.1',
      port: (nobody.address() as AddressInfo).port,
      dir: altered,
      channels: 2,
      compression: 'none',
      methodParams: {},
      connectTimeoutMs: 5000,
      logger: silentLogger,
    }).catch((e: unknown) => e);
    t.match(
      refused,
      { code: 'ERR_QEMU_MANIFEST', message: /mem has SHA-256 [0-9a-f]{64}, the manifest says/ },
      'an old manifest: SHA-256 checked',
    );
    t.equal(connected, false, 'before any connection');
    fs.copyFileSync(path.join(out, 'mem'), path.join(altered, 'mem'));
    const out3 = tmpdir(t);
    const { port: p3, result: fourth } = await listenQemu({ outputDir: out3, timeoutMs: 5000 });
    await sendQemu({
      host: '127.0.0.1',
      port: p3,
      dir: altered,
      channels: 2,
      compression: 'none',
      methodParams: {},
      connectTimeoutMs: 5000,
      logger: silentLogger,
    });
    await fourth;
    t.same(fs.readFileSync(path.join(out3, 'mem')), want, 'an old manifest whose SHA-256 matches: replayed');

    // Interrupted (Ctrl-C) while the destination takes nothing: the interruption is the error, not the hang-up it causes.
    const stalled = net.createServer({ allowHalfOpen: true }, (s) => void s.pause());
    await new Promise<void>((r) => stalled.listen(0, '127.0.0.1', () => r()));
    t.teardown(() => stalled.close());
    const stop = new AbortController();
    const replay = sendQemu({
      host: '127.0.0.1',
      port: (stalled.address() as AddressInfo).port,
      dir: out,
      channels: 2,
      compression: 'none',
      methodParams: {},
      connectTimeoutMs: 5000,
      logger: silentLogger,
      signal: stop.signal,
    });
    setTimeout(() => stop.abort('SIGINT'), 200);
    t.match(await replay.catch((e: unknown) => e), { code: 'ERR_INTERRUPTED', message: 'interrupted by SIGINT' }, 'interrupted, exit 130');
  },
);
