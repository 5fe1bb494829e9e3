/**
 * mfd inspect decodes every payload by its method (--headers-only skips
 * that), and reports with their byte offset (exit 3): a payload that does not
 * decode, a flag bit no QEMU version defines, a packet kind it cannot read.
 * QEMU 10's device-state packets are listed with their idstr, instance and size.
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

t.test('qpl packets whose page lengths disagree with the payload: an error at each payload, exit 3', async (t) => {
  const file = path.join(tmpdir(t), 'qpl.bin');
  // Page lengths 100 + 100, but 150 bytes of pages follow them.
  const first = Buffer.alloc(8 + 150, 0x55);
  first.writeUInt32BE(100, 0);
  first.writeUInt32BE(100, 4);
  // A page length larger than a page.
  const second = Buffer.alloc(4 + 10, 0x55);
  second.writeUInt32BE(PS + 1, 0);
  fs.writeFileSync(
    file,
    stream(
      header({ flags: MULTIFD_FLAG_QPL, normalPages: 2, nextPacketSize: first.length, offsets: [0, PS] }),
      first,
      header({ flags: MULTIFD_FLAG_QPL, normalPages: 1, nextPacketSize: second.length, packetNum: 1n, offsets: [2 * PS] }),
      second,
    ),
  );
  const r = await inspectStream(file, PS);
  const second_at = INIT_PACKET_SIZE + HS + first.length + HS;
  t.match(r.errors, [
    { at: INIT_PACKET_SIZE + HS, message: /channel 0, packet 0: qpl payload: page lengths add up to 208 bytes, payload has 158/ },
    { at: second_at, message: /channel 0, packet 1: qpl payload: page 0 length received 4097, expected 1\.\.4096/ },
  ]);
  t.equal(r.packets.length, 2, 'both packets listed');
  const c = cli([file]);
  t.equal(c.status, 3);
  t.match(c.out, new RegExp(`error at byte ${INIT_PACKET_SIZE + HS}: channel 0, packet 0: qpl payload`));
});

t.test('flags 0x80000040: a bit no QEMU version defines is an error at the packet, exit 3', async (t) => {
  // A RAM-sized header with those flags, no pages (main before this change listed it and exited 0).
  const asRam = path.join(tmpdir(t), 'as-ram.bin');
  fs.writeFileSync(asRam, stream(header({ flags: 0x80000040 })));
  const a = await inspectStream(asRam, PS);
  t.match(a.errors[0], { at: INIT_PACKET_SIZE, message: /flags 0x80000040: bits 0x80000000 are defined by no QEMU version/ });
  t.match(cli([asRam]), { status: 3, out: new RegExp(`error at byte ${INIT_PACKET_SIZE}: flags 0x80000040: bits 0x80000000`) });
  // A device-state packet with that extra bit.
  const file = path.join(tmpdir(t), 'flags.bin');
  fs.writeFileSync(file, stream(deviceStatePacket(0x80000040, '0000:00:02.0/vfio', 0, Buffer.alloc(32, 1))));
  const r = await inspectStream(file, PS);
  t.match(r.errors, [{ at: INIT_PACKET_SIZE, message: /flags 0x80000040: bits 0x80000000 are defined by no QEMU version/ }]);
  t.match(r.packets, [{ kind: 'device-state', flags: /DEVICE_STATE\|unknown0x80000000/, payloadBytes: 32 }]);
  const c = cli([file]);
  t.equal(c.status, 3);
  t.match(c.out, new RegExp(`error at byte ${INIT_PACKET_SIZE}: flags 0x80000040`));
  // On a RAM packet too.
  const ram = path.join(tmpdir(t), 'ram.bin');
  fs.writeFileSync(ram, stream(header({ flags: MULTIFD_FLAG_SYNC | 0x100 })));
  const rr = await inspectStream(ram, PS);
  t.match(rr.errors, [{ at: INIT_PACKET_SIZE, message: /flags 0x101: bits 0x100 are defined by no QEMU version/ }]);
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
    { kind: 'ram', flags: 'SYNC|none' },
  ]);
  t.match(r.totals, { packets: 3, deviceStatePackets: 1, deviceStateBytes: 1000, decodedPages: 1 });
  const c = cli([good]);
  t.equal(c.status, 0);
  t.match(c.out, /0000:00:02.0\/vfio #3/);
  t.match(c.out, /device state: 1 packets, 1000 bytes/);
  // A compressed device-state packet is a kind no QEMU version defines; an empty or SYNC one is refused by QEMU.
  const bad = path.join(dir, 'bad.bin');
  const compressed = deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE | MULTIFD_FLAG_ZLIB, 'dev', 0, Buffer.alloc(8));
  const empty = deviceStatePacket(MULTIFD_FLAG_DEVICE_STATE | MULTIFD_FLAG_SYNC, 'dev', 0, Buffer.alloc(0));
  fs.writeFileSync(bad, stream(compressed, empty));
  const b = await inspectStream(bad, PS);
  t.match(b.errors, [
    { at: INIT_PACKET_SIZE, message: /device-state packet with compression bits 0x2 .*no QEMU version defines that packet kind/ },
    { at: INIT_PACKET_SIZE + compressed.length, message: /SYNC flag/ },
    { at: INIT_PACKET_SIZE + compressed.length, message: /empty device-state packet/ },
  ]);
  t.equal(cli([bad]).status, 3);
});
