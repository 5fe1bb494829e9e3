/**
 * mfd inspect decodes every payload by its method (--headers-only skips
 * that), and reports the first error with its byte offset (exit 3): a
 * payload that does not decode, a flag bit no QEMU version defines, a packet
 * kind it cannot read. QEMU 10's device-state packets are listed with their
 * idstr, instance and size.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from '../helpers/index.js';
import { inspectStream } from '../../src/inspect/inspect.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader, type PacketFields } from '../../src/wire/packet.js';
import { DEVICE_STATE_HEADER_SIZE } from '../../src/wire/device-state.js';
import {
  INIT_PACKET_SIZE,
  MULTIFD_FLAG_DEVICE_STATE,
  MULTIFD_FLAG_QPL,
  MULTIFD_FLAG_SYNC,
  MULTIFD_FLAG_ZLIB,
  MULTIFD_MAGIC,
  MULTIFD_VERSION,
  packetHeaderSize,
} from '../../src/wire/constants.js';

const PS = 4096;
const HS = packetHeaderSize(PS);
const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');

const header = (f: Partial<PacketFields>): Uint8Array =>
  encodePacketHeader(new Uint8Array(HS), HS, {
    flags: 0,
    pagesAlloc: 128,
    normalPages: 0,
    zeroPages: 0,
    nextPacketSize: 0,
    packetNum: 0n,
    ramblock: Buffer.from('pc.ram'),
    offsets: [],
    ...f,
  });

/** A QEMU 10 device-state packet: flags, idstr, instance_id, then `blob`. */
function deviceStatePacket(flags: number, idstr: string, instance: number, blob: Buffer): Buffer {
  const h = Buffer.alloc(DEVICE_STATE_HEADER_SIZE);
  h.writeUInt32BE(MULTIFD_MAGIC, 0);
  h.writeUInt32BE(MULTIFD_VERSION, 4);
  h.writeUInt32BE(flags, 8);
  h.write(idstr, 12, 'latin1');
  h.writeUInt32BE(instance, 268);
  h.writeUInt32BE(blob.length, 272);
  return Buffer.concat([h, blob]);
}

const stream = (...packets: Uint8Array[]): Buffer => Buffer.concat([encodeInitPacket(new Uint8Array(16), 0), ...packets]);

function cli(args: string[]): { status: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [bin, 'inspect', ...args], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

t.test('a zlib packet whose payload is 64 random bytes: an error at the payload, exit 3; --headers-only does not decode it', async (t) => {
  const file = path.join(tmpdir(t), 'zlib.bin');
  fs.writeFileSync(
    file,
    stream(header({ flags: MULTIFD_FLAG_ZLIB, normalPages: 1, nextPacketSize: 64, offsets: [0] }), crypto.randomBytes(64)),
  );
  const r = await inspectStream(file, PS);
  t.match(r.errors, [
    {
      at: INIT_PACKET_SIZE + HS,
      message: /channel 0, packet 0: (zlib payload cannot be decoded|packet size received \d+, size expected 4096)/,
    },
  ]);
  t.equal(r.totals.decodedPages, 0);
  const c = cli(['--json', file]);
  t.equal(c.status, 3, 'exit 3');
  t.match(JSON.parse(c.out), { streams: [{ decoded: true, errors: [{ at: INIT_PACKET_SIZE + HS }] }] });
  const h = cli([file, '--headers-only']);
  t.equal(h.status, 0, '--headers-only: the headers are fine');
  t.match(h.out, /payloads not decoded \(--headers-only\)/);
  t.match(cli([file, '--headers-only', '--extract', `pc.ram=${file}.out`]), { status: 2, err: /--extract .* --headers-only/ });
});

t.test('qpl packets whose page lengths disagree with the payload: an error at the first such payload, exit 3', async (t) => {
  const dir = tmpdir(t);
  // Page lengths 100 + 100, but 150 bytes of pages follow them.
  const first = Buffer.alloc(8 + 150, 0x55);
  first.writeUInt32BE(100, 0);
  first.writeUInt32BE(100, 4);
  // A page length larger than a page.
  const second = Buffer.alloc(4 + 10, 0x55);
  second.writeUInt32BE(PS + 1, 0);
  const firstPacket = header({ flags: MULTIFD_FLAG_QPL, normalPages: 2, nextPacketSize: first.length, offsets: [0, PS] });
  const secondPacket = (packetNum: bigint): Uint8Array =>
    header({ flags: MULTIFD_FLAG_QPL, normalPages: 1, nextPacketSize: second.length, packetNum, offsets: [2 * PS] });
  const both = path.join(dir, 'qpl.bin');
  fs.writeFileSync(both, stream(firstPacket, first, secondPacket(1n), second));
  const r = await inspectStream(both, PS);
  t.match(r.errors, [
    {
      at: INIT_PACKET_SIZE + HS,
      code: 'ERR_PAYLOAD_SIZE',
      message: /^channel 0, packet 0: qpl payload: page lengths add up to 208 bytes, payload has 158$/,
    },
  ]);
  t.equal(r.errors.length, 1, 'reading stops at the first error');
  t.match(
    r.packets,
    [{ packetNum: '0', method: 'qpl', normalPages: 2, payloadBytes: first.length }],
    'the packet whose payload failed is listed',
  );
  t.equal(r.packets.length, 1);
  const c = cli([both]);
  t.equal(c.status, 3);
  t.match(
    c.out,
    new RegExp(
      `error at byte ${INIT_PACKET_SIZE + HS}: channel 0, packet 0: qpl payload.*\\[ERR_PAYLOAD_SIZE\\]\n  \\(reading stops at the first error\\)`,
    ),
  );
  // --headers-only reads past it: both headers are fine.
  const h = await inspectStream(both, PS, undefined, { headersOnly: true });
  t.same(h.errors, []);
  t.equal(h.packets.length, 2);
  // The second kind of disagreement, at its own payload's offset.
  const alone = path.join(dir, 'qpl-page.bin');
  fs.writeFileSync(alone, stream(header({ flags: MULTIFD_FLAG_SYNC, packetNum: 0n }), secondPacket(1n), second));
  const a = await inspectStream(alone, PS);
  t.match(a.errors, [
    { at: INIT_PACKET_SIZE + 2 * HS, message: /channel 0, packet 1: qpl payload: page 0 length received 4097, expected 1\.\.4096/ },
  ]);
  t.equal(a.packets.length, 2);
});

t.test('flags 0x80000040: a bit no QEMU version defines is an error at the packet, exit 3', async (t) => {
  const undefinedBits = /flags received 0x80000040, expected 0x40 \(unknown bits 0x80000000: no QEMU version defines them\)/;
  // A RAM-sized header with those flags, no pages (main before this change listed it and exited 0).
  const asRam = path.join(tmpdir(t), 'as-ram.bin');
  fs.writeFileSync(asRam, stream(header({ flags: 0x80000040 })));
  const a = await inspectStream(asRam, PS);
  t.match(a.errors, [{ at: INIT_PACKET_SIZE, code: 'ERR_PACKET_FLAGS', message: undefinedBits }]);
  t.match(cli([asRam]), { status: 3, out: new RegExp(`error at byte ${INIT_PACKET_SIZE}: channel 0: flags received 0x80000040`) });
  // A device-state packet with that extra bit, after a good one.
  const file = path.join(tmpdir(t), 'flags.bin');
  const good = deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE, '0000:00:02.0/vfio', 0, Buffer.alloc(16, 1));
  fs.writeFileSync(file, stream(good, deviceStatePacket(0x80000040, '0000:00:02.0/vfio', 0, Buffer.alloc(32, 1))));
  const r = await inspectStream(file, PS);
  t.match(r.errors, [{ at: INIT_PACKET_SIZE + good.length, code: 'ERR_PACKET_FLAGS', message: undefinedBits }]);
  t.match(r.packets, [{ kind: 'device-state', flags: 'DEVICE_STATE', payloadBytes: 16 }]);
  const c = cli([file]);
  t.equal(c.status, 3);
  t.match(c.out, new RegExp(`error at byte ${INIT_PACKET_SIZE + good.length}: channel 0: flags received 0x80000040`));
  // On a RAM packet too.
  const ram = path.join(tmpdir(t), 'ram.bin');
  fs.writeFileSync(ram, stream(header({ flags: MULTIFD_FLAG_SYNC | 0x100 })));
  const rr = await inspectStream(ram, PS);
  t.match(rr.errors, [
    {
      at: INIT_PACKET_SIZE,
      message: /channel 0, packet 0: flags received 0x101, expected 0x0 \(unknown bits 0x100: no QEMU version defines them\)/,
    },
  ]);
  // And on a packet with normal pages (whose method is learned from its flags).
  const data = path.join(tmpdir(t), 'data.bin');
  fs.writeFileSync(data, stream(header({ flags: 0x100, normalPages: 1, nextPacketSize: PS, offsets: [0] }), Buffer.alloc(PS)));
  t.match((await inspectStream(data, PS)).errors, [
    { at: INIT_PACKET_SIZE, message: /flags received 0x100, expected 0x0 \(unknown bits 0x100/ },
  ]);
});

t.test('QEMU 10 device-state packets are listed (idstr, instance, size) between RAM packets; broken ones are errors', async (t) => {
  const dir = tmpdir(t);
  const page = Buffer.alloc(PS, 0x42);
  const dev = deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE, '0000:00:02.0/vfio', 3, Buffer.alloc(1000, 7));
  const good = path.join(dir, 'good.bin');
  fs.writeFileSync(
    good,
    stream(header({ normalPages: 1, nextPacketSize: PS, offsets: [0] }), page, dev, header({ flags: MULTIFD_FLAG_SYNC, packetNum: 1n })),
  );
  const r = await inspectStream(good, PS);
  t.same(r.errors, []);
  t.match(r.packets, [
    { kind: 'ram', normalPages: 1 },
    {
      kind: 'device-state',
      at: INIT_PACKET_SIZE + HS + PS,
      packetNum: '-',
      ramblock: '0000:00:02.0/vfio',
      instanceId: 3,
      payloadBytes: 1000,
      flags: 'DEVICE_STATE',
    },
    { kind: 'ram', at: INIT_PACKET_SIZE + HS + PS + dev.length, flags: 'SYNC|none' },
  ]);
  t.match(r.totals, { packets: 3, deviceStatePackets: 1, deviceStateBytes: 1000, decodedPages: 1 });
  const c = cli([good]);
  t.equal(c.status, 0);
  t.match(c.out, /0000:00:02.0\/vfio #3/);
  t.match(c.out, /device state: 1 packets, 1000 bytes/);
  // A compressed device-state packet is a kind no QEMU version defines; an empty or SYNC one, or one whose idstr has no NUL, QEMU refuses.
  const unterminated = deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE, 'd', 0, Buffer.alloc(8));
  unterminated.fill(0x61, 12, 12 + 256);
  const cases: [string, Buffer, string, RegExp][] = [
    [
      'compressed',
      deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE | MULTIFD_FLAG_ZLIB, 'dev', 0, Buffer.alloc(8)),
      'ERR_PACKET_FLAGS',
      /device-state packet with compression bits 0x2 \(flags 0x42\): no QEMU version defines that packet kind/,
    ],
    ['SYNC', deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE | MULTIFD_FLAG_SYNC, 'dev', 0, Buffer.alloc(8)), 'ERR_PACKET_FLAGS', /SYNC flag/],
    ['empty', deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE, 'dev', 0, Buffer.alloc(0)), 'ERR_PACKET_SIZE', /empty device-state packet/],
    ['idstr', unterminated, 'ERR_PACKET_IDSTR', /idstr is not NUL-terminated/],
  ];
  for (const [name, bad, code, message] of cases) {
    const f = path.join(dir, `${name}.bin`);
    // After a good device-state packet: the error is at the bad one's offset.
    fs.writeFileSync(f, stream(dev, bad));
    const b = await inspectStream(f, PS);
    t.match(b.errors, [{ at: INIT_PACKET_SIZE + dev.length, code, message }], name);
    t.equal(b.packets.length, 1, `${name}: the good one before it is listed`);
    t.equal(cli([f]).status, 3, `${name}: exit 3`);
  }
  // Its state cut short.
  const cut = path.join(dir, 'cut.bin');
  fs.writeFileSync(cut, stream(dev).subarray(0, INIT_PACKET_SIZE + DEVICE_STATE_HEADER_SIZE + 10));
  t.match((await inspectStream(cut, PS)).errors, [
    {
      at: INIT_PACKET_SIZE + DEVICE_STATE_HEADER_SIZE,
      code: 'ERR_CHANNEL_TRUNCATED',
      message: /stream ended in the middle of a packet device state: received 10 of 1000 bytes/,
    },
  ]);
});

t.test('the first error in stream order: a payload that does not decode comes before a bad header after it', async (t) => {
  const dir = tmpdir(t);
  const page = Buffer.alloc(PS, 0x42);
  const bad = crypto.randomBytes(64);
  const file = path.join(dir, 'order.bin');
  // Packet 0: a zlib payload that does not decode; packet 1: fine headers; packet 2: a bad magic.
  const broken = Buffer.from(header({ packetNum: 2n }));
  broken.writeUInt32BE(0xdeadbeef, 0);
  fs.writeFileSync(
    file,
    stream(
      header({ flags: MULTIFD_FLAG_ZLIB, normalPages: 1, nextPacketSize: bad.length, offsets: [0] }),
      bad,
      header({ flags: MULTIFD_FLAG_SYNC, packetNum: 1n }),
      broken,
    ),
  );
  const r = await inspectStream(file, PS);
  t.match(r.errors, [{ at: INIT_PACKET_SIZE + HS, message: /channel 0, packet 0: / }], "packet 0's payload, not packet 2's header");
  t.equal(r.errors.length, 1);
  t.equal(r.packets.length, 1, 'nothing after it is listed');
  // Without decoding, the bad header is the first error.
  const h = await inspectStream(file, PS, undefined, { headersOnly: true });
  t.match(h.errors, [{ at: INIT_PACKET_SIZE + 2 * HS + bad.length, code: 'ERR_PACKET_MAGIC' }]);
  t.equal(h.packets.length, 2);
  // A stream whose method changes: an error at the packet that changes it, as recv --qemu refuses it.
  const mixed = path.join(dir, 'mixed.bin');
  fs.writeFileSync(
    mixed,
    stream(
      header({ normalPages: 1, nextPacketSize: PS, offsets: [0] }),
      page,
      header({ flags: MULTIFD_FLAG_ZLIB, normalPages: 1, nextPacketSize: 64, packetNum: 1n, offsets: [PS] }),
      bad,
    ),
  );
  const m = await inspectStream(mixed, PS);
  t.match(m.errors, [
    {
      at: INIT_PACKET_SIZE + HS + PS,
      code: 'ERR_PACKET_METHOD',
      message: /channel 0, packet 1: flags received 0x2 \(zlib\), expected 0x0 \(none, the method of earlier packets\)/,
    },
  ]);
  t.match(m.totals, { packets: 1, decodedPages: 1 });
});
