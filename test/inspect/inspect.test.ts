/** mfd inspect on recorded streams of every method, on QEMU's quirks, and on broken streams. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeImage, migrate, sha256, tmpdir } from '../helpers/index.js';
import { extractSink, inspectStream } from '../../src/inspect/inspect.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { MULTIFD_FLAG_SYNC } from '../../src/wire/constants.js';

const PS = 4096;
const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');

for (const method of ['none', 'zlib', 'zstd', 'lz4', 'qpl', 'qatzip'] as const) {
  t.test(`recorded ${method} streams: packets, totals and an extracted image match the migration`, async (t) => {
    const dir = tmpdir(t);
    const dump = path.join(dir, 'dump');
    const out = path.join(dir, 'out');
    fs.mkdirSync(dump);
    fs.mkdirSync(out);
    const img = makeImage(path.join(dir, 'vm.ram'), (2 << 20) + 4096, 'mixed', 5);
    const { sent } = await migrate(
      {
        images: [{ name: 'vm.ram', path: img }],
        channels: 3,
        pageSize: PS,
        compression: method,
        methodParams: {},
        zeroPageDetection: 'multifd',
      },
      { outputDir: out, dumpStreams: dump },
    );
    const target = path.join(dir, 'extracted.ram');
    const x = extractSink('vm.ram', target, PS);
    let normal = 0;
    let zero = 0;
    let packets = 0;
    for (let id = 0; id < 3; id++) {
      const r = await inspectStream(path.join(dump, `channel-${id}.bin`), PS, x.sink);
      t.same(r.errors, [], `channel ${id}: no errors`);
      t.equal(r.init?.id, id);
      t.equal(r.totals.syncPackets, 1);
      normal += r.totals.normalPages;
      zero += r.totals.zeroPages;
      packets += r.totals.packets;
      t.ok(
        r.packets.every((p) => p.normalPages === 0 || p.method === method),
        'flags decoded to the method',
      );
    }
    t.equal(x.close(), 513, 'every page extracted');
    t.equal(normal, sent.stats.normalPages);
    t.equal(zero, sent.stats.zeroPages);
    t.equal(
      packets,
      sent.stats.perChannel.reduce((a, c) => a + c.packets, 0),
    );
    t.equal(sha256(target), sha256(img), 'extracted image is the sent one');
  });
}

/** A channel as QEMU <= 9.1 may write it. */
function qemuQuirkStream(): { stream: Buffer; pages: Buffer } {
  const uuid = new Uint8Array(16);
  const pages = Buffer.alloc(2 * PS, 0x41);
  const hdr = (f: Parameters<typeof encodePacketHeader>[2]): Uint8Array => encodePacketHeader(new Uint8Array(1344), 1344, f);
  // First SYNC: empty ramblock name, pages_alloc 128, a stale next_packet_size and no payload.
  const sync0 = hdr({
    flags: MULTIFD_FLAG_SYNC,
    pagesAlloc: 128,
    normalPages: 0,
    zeroPages: 0,
    nextPacketSize: 8192,
    packetNum: 0n,
    ramblock: new Uint8Array(0),
    offsets: [],
  });
  // A data packet that also carries SYNC (<= 8.2), with stale offsets after the counted ones.
  const data = hdr({
    flags: MULTIFD_FLAG_SYNC,
    pagesAlloc: 128,
    normalPages: 2,
    zeroPages: 1,
    nextPacketSize: 2 * PS,
    packetNum: 1n,
    ramblock: Buffer.from('pc.ram'),
    offsets: [0, PS, 2 * PS],
  });
  data.fill(0xff, 320 + 3 * 8);
  const stream = Buffer.concat([encodeInitPacket(uuid, 0), sync0, data, pages]);
  return { stream, pages };
}

t.test('QEMU quirks are read as QEMU reads them, without errors', async (t) => {
  const dir = tmpdir(t);
  const f = path.join(dir, 'qemu.bin');
  const { stream, pages } = qemuQuirkStream();
  fs.writeFileSync(f, stream);
  const x = extractSink('pc.ram', path.join(dir, 'pc.ram'), PS);
  const r = await inspectStream(f, PS, x.sink);
  x.close();
  t.same(r.errors, []);
  t.equal(r.packets.length, 2);
  t.match(r.packets[0], { ramblock: '', normalPages: 0, payloadBytes: 0, flags: 'SYNC|none' });
  t.match(r.packets[1], { ramblock: 'pc.ram', normalPages: 2, zeroPages: 1, payloadBytes: 8192, flags: 'SYNC|none' });
  t.same(fs.readFileSync(path.join(dir, 'pc.ram')), Buffer.concat([pages, Buffer.alloc(PS)]));
});

t.test('broken streams: the first problem with its byte offset; the CLI exits 3 with one JSON object', async (t) => {
  const dir = tmpdir(t);
  const { stream } = qemuQuirkStream();
  const badMagic = Buffer.from(stream);
  badMagic.writeUInt32BE(0xdeadbeef, 64 + 1344);
  fs.writeFileSync(path.join(dir, 'magic.bin'), badMagic);
  fs.writeFileSync(path.join(dir, 'short.bin'), stream.subarray(0, stream.length - 100));
  const m = await inspectStream(path.join(dir, 'magic.bin'), PS);
  t.match(m.errors, [{ at: 64 + 1344, code: 'ERR_PACKET_MAGIC', message: /received packet magic 0xdeadbeef, expected 0x11223344/ }]);
  t.equal(m.packets.length, 1, 'the packet before it is listed');
  const s = await inspectStream(path.join(dir, 'short.bin'), PS);
  t.match(s.errors, [
    {
      at: 64 + 2 * 1344,
      code: 'ERR_CHANNEL_TRUNCATED',
      message: /stream ended in the middle of a packet payload: received 8092 of 8192 bytes/,
    },
  ]);
  t.equal(s.packets.length, 1, 'the packet before it is listed, not the one cut short');
  const r = spawnSync(process.execPath, [bin, 'inspect', '--json', path.join(dir, 'short.bin')], { encoding: 'utf8' });
  t.equal(r.status, 3);
  const lines = r.stdout.trim().split('\n');
  t.equal(lines.length, 1, 'one JSON object');
  t.match(JSON.parse(lines[0]!), { streams: [{ errors: [{ at: 64 + 2 * 1344 }] }] });
});
