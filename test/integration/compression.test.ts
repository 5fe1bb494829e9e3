/** Every compression method over loopback, checked by decoders that are not mfd's. */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { makeImage, migrate, sha256, tmpdir, RawSender, startReceiver, rejection } from '../helpers/index.js';
import { readChannelDump, lz4BlockDecode } from '../helpers/streams.js';
import { getMethod } from '../../src/methods/index.js';
import { PathTally } from '../../src/offload/paths.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { encodeFrame } from '../../src/control/protocol.js';
import { MULTIFD_FLAG_ZLIB, MULTIFD_FLAG_ZSTD, MULTIFD_FLAG_QPL, MULTIFD_FLAG_QATZIP, MFD_FLAG_LZ4 } from '../../src/wire/constants.js';
import { ExitCode } from '../../src/errors.js';
import { noIaa, noQat, qplPathNoDevice } from '../helpers/build.js';

const PS = 4096;
const FLAGS: Record<string, number> = {
  zlib: MULTIFD_FLAG_ZLIB,
  zstd: MULTIFD_FLAG_ZSTD,
  lz4: MFD_FLAG_LZ4,
  qpl: MULTIFD_FLAG_QPL,
  qatzip: MULTIFD_FLAG_QATZIP,
};
const METHODS = ['zlib', 'zstd', 'lz4', 'qpl', 'qatzip'] as const;

/** The bytes of every normal page in a dump's packets, in order, from the source image. */
function expectedPages(img: Buffer, packets: ReturnType<typeof readChannelDump>['packets']): Buffer {
  const parts: Buffer[] = [];
  for (const { header: h } of packets) {
    for (let j = 0; j < h.normalPages; j++) {
      const page = Buffer.alloc(PS);
      img.copy(page, 0, h.offsets[j]!, Math.min(img.length, h.offsets[j]! + PS));
      parts.push(page);
    }
  }
  return Buffer.concat(parts);
}

const hasZstdCli = spawnSync('zstd', ['--version']).status === 0;

for (const method of METHODS) {
  for (const channels of [1, 3, 8]) {
    const skip =
      method === 'zstd' && !hasZstdCli ? 'the zstd command (Debian package zstd) is not installed: no independent zstd decoder' : false;
    t.test(`${method}, ${channels} channel(s), two ramblocks: identical, and an independent decoder agrees`, { skip }, async (t) => {
      const dir = tmpdir(t);
      const out = path.join(dir, 'out');
      const dump = path.join(dir, 'dump');
      fs.mkdirSync(out);
      fs.mkdirSync(dump);
      const a = makeImage(path.join(dir, 'pc.ram'), (3 << 20) + 8192, 'mixed', channels);
      const b = makeImage(path.join(dir, 'vram'), (1 << 20) + 100, 'text');
      const { sent, received } = await migrate(
        {
          images: [
            { name: 'pc.ram', path: a },
            { name: 'vram', path: b },
          ],
          channels,
          pageSize: PS,
          compression: method,
          methodParams: {},
          zeroPageDetection: 'multifd',
        },
        { outputDir: out, dumpStreams: dump },
      );
      t.equal(sha256(path.join(out, 'pc.ram')), sha256(a));
      t.equal(sha256(path.join(out, 'vram')), sha256(b));
      t.ok(sent.stats.wireRatio < 0.5, `compressed: wire ratio ${sent.stats.wireRatio}`);
      // The qpl method's software path is libqpl's in a build with QPL (--qpl-sw-engine auto), else mfd's.
      t.match(sent.stats.compressionPath, method === 'qpl' ? qplPathNoDevice : /^software/, 'the summary says which path ran');
      // Every normal page is counted under the path that handled it, on both sides; without IAA or
      // QAT in this build, each is a fallback with the reason, and no page claims hardware.
      const pagesOnPaths = (p: Record<string, number>): number => Object.values(p).reduce((a, n) => a + n, 0);
      t.equal(pagesOnPaths(sent.stats.paths.compression.pages), sent.stats.normalPages, 'sender: every normal page on one path');
      t.equal(pagesOnPaths(received.stats.paths.compression.pages), sent.stats.normalPages, 'receiver: every normal page on one path');
      if (method === 'qpl' || method === 'qatzip') {
        t.match(sent.stats.compressionPath, method === 'qpl' ? noIaa : noQat, 'the summary says why the hardware path did not run');
        t.equal(sent.stats.paths.compression.fallbacks['no-device'], sent.stats.normalPages, 'all pages fell back: no device');
        t.notOk(sent.stats.paths.compression.pages.iaa ?? sent.stats.paths.compression.pages.qat, 'no page claims hardware');
      } else {
        t.same(sent.stats.paths.compression.fallbacks, {}, 'a software-only method has no fallbacks');
      }
      const images: Record<string, Buffer> = { 'pc.ram': fs.readFileSync(a), vram: fs.readFileSync(b) };
      let decodedPages = 0;
      for (let id = 0; id < channels; id++) {
        const { packets } = readChannelDump(path.join(dump, `channel-${id}.bin`));
        const data = packets.filter((p) => p.header.normalPages > 0);
        for (const p of data) t.equal(p.header.flags, FLAGS[method], `packet flags carry ${method}`);
        // Pages of both blocks interleave in channel order; rebuild per packet from its own block.
        const want = Buffer.concat(data.map((p) => expectedPages(images[Buffer.from(p.header.ramblock).toString()]!, [p])));
        let got: Buffer;
        if (method === 'zlib') {
          for (const p of data) t.equal(p.payload.subarray(-4).toString('hex'), '0000ffff', 'each packet ends with a sync flush');
          t.equal(data[0]!.payload[0], 0x78, "the zlib header opens the channel's first payload only");
          got = zlib.inflateSync(Buffer.concat(data.map((p) => p.payload)), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
        } else if (method === 'zstd') {
          const f = path.join(dir, `ch${id}.zst`);
          const stream = Buffer.concat(data.map((p) => p.payload));
          fs.writeFileSync(f, stream);
          const open = spawnSync('zstd', ['-t', f]);
          t.match(open.stderr.toString(), /premature end|truncated/i, 'one frame per channel, never ended');
          // End the frame with an empty last raw block (header 01 00 00) so the CLI decodes it to the end.
          fs.writeFileSync(f, Buffer.concat([stream, Buffer.from([1, 0, 0])]));
          const r = spawnSync('zstd', ['-dc', f], { maxBuffer: 1 << 30 });
          t.equal(r.status, 0, r.stderr.toString());
          got = r.stdout;
        } else if (method === 'lz4') {
          got = Buffer.concat(data.map((p) => lz4BlockDecode(p.payload.subarray(4), p.payload.readUInt32LE(0))));
        } else if (method === 'qpl') {
          got = Buffer.concat(data.map((p) => qplDecode(t, p.payload, p.header.normalPages)));
        } else {
          for (const p of data) checkQzMembers(t, p.payload, p.header.normalPages * PS);
          got = Buffer.concat(data.map((p) => zlib.gunzipSync(p.payload)));
        }
        t.ok(got.equals(want), `channel ${id}: ${got.length} bytes decode to the sent pages`);
        decodedPages += got.length / PS;
      }
      t.equal(decodedPages, sent.stats.normalPages, 'every normal page decoded once');
    });
  }
}

/**
 * qpl payload by hand: BE u32 lengths, then each page raw (length = page size) or raw deflate,
 * decoded with a 4 KiB window: a back-reference further away (which IAA could not follow) fails.
 */
function qplDecode(t: Test, payload: Buffer, normal: number): Buffer {
  const pages: Buffer[] = [];
  let at = 4 * normal;
  for (let j = 0; j < normal; j++) {
    const len = payload.readUInt32BE(4 * j);
    const body = payload.subarray(at, at + len);
    at += len;
    pages.push(len === PS ? body : zlib.inflateRawSync(body, { windowBits: 12 }));
    if (len > PS) t.fail(`page length ${len} over the page size`);
  }
  t.equal(at, payload.length, 'lengths cover the payload exactly');
  return Buffer.concat(pages);
}

/** qatzip payload: one gzip member per 64 KiB of input, each with QATzip's QZ extended header. */
function checkQzMembers(t: Test, payload: Buffer, bytes: number): void {
  let at = 0;
  let members = 0;
  let src = 0;
  while (at < payload.length) {
    const h = payload.subarray(at, at + 24);
    const ok =
      h[0] === 0x1f &&
      h[1] === 0x8b &&
      h[2] === 8 &&
      h[3] === 0x04 &&
      h[9] === 0xff &&
      h.readUInt16LE(10) === 12 &&
      h[12] === 0x51 &&
      h[13] === 0x5a &&
      h.readUInt16LE(14) === 8;
    if (!ok) return void t.fail(`member ${members}: not a QZ header: ${h.toString('hex')}`);
    const srcSz = h.readUInt32LE(16);
    const destSz = h.readUInt32LE(20);
    if (srcSz > 65536) t.fail(`member ${members}: src_sz ${srcSz} over 64 KiB`);
    if (payload.readUInt32LE(at + 24 + destSz + 4) !== srcSz) t.fail(`member ${members}: ISIZE differs from src_sz`);
    src += srcSz;
    at += 24 + destSz + 8;
    members++;
  }
  t.equal(members, Math.ceil(bytes / 65536), `${members} members for ${bytes} bytes`);
  t.equal(src, bytes, 'src_sz adds up to the pages');
}

t.test('qatzip: a payload of plain gzip members (as other QATzip senders may emit) decodes', async (t) => {
  const dir = tmpdir(t);
  const { port, result } = await startReceiver({ outputDir: dir });
  const raw = new RawSender(port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ compression: 'qatzip', ramblocks: [{ name: 'ram0', size: 3 * PS }] }), { type: 'ready' });
  const pages = Buffer.concat([Buffer.alloc(PS, 1), Buffer.alloc(PS, 2), Buffer.alloc(PS, 3)]);
  const payload = Buffer.concat([zlib.gzipSync(pages.subarray(0, 5000)), zlib.gzipSync(pages.subarray(5000))]);
  const h = encodePacketHeader(new Uint8Array(1344), 1344, {
    flags: MULTIFD_FLAG_QATZIP,
    pagesAlloc: 128,
    normalPages: 3,
    zeroPages: 0,
    nextPacketSize: payload.length,
    packetNum: 0n,
    ramblock: Buffer.from('ram0'),
    offsets: [0, PS, 2 * PS],
  });
  const sync = encodePacketHeader(new Uint8Array(1344), 1344, {
    flags: 1,
    pagesAlloc: 0,
    normalPages: 0,
    zeroPages: 0,
    nextPacketSize: 0,
    packetNum: 1n,
    ramblock: new Uint8Array(0),
    offsets: [],
  });
  const ch = await raw.channel(encodeInitPacket(raw.uuidBytes, 0), h, payload, sync);
  ch.end();
  const { BlockDigest } = await import('../../src/image/digest.js');
  const { native } = await import('../../src/native/load.js');
  const d = new BlockDigest();
  for (let i = 0; i < 3; i++) d.add(i, native.crc32c(pages.subarray(i * PS, (i + 1) * PS)));
  raw.control.socket.write(encodeFrame({ type: 'complete', packets: [2], digests: { ram0: d.hex() } }));
  await result;
  t.same(fs.readFileSync(path.join(dir, 'ram0')), pages);
});

/** A valid first payload for `method` (its sender, run here), so tests can break it on purpose. */
function validPayload(method: string, pages: Buffer): Uint8Array {
  const m = getMethod(method);
  const s = m.sendSetup({ channel: 0, pageSize: PS, params: m.params({}), tally: new PathTally('test') });
  const chunks = s.prepare([pages], pages.length / PS) as Uint8Array[];
  return Buffer.concat(chunks);
}

for (const method of METHODS) {
  const pages = Buffer.alloc(2 * PS, 'abcdefgh');
  const good = validPayload(method, pages);
  const cases: [string, Uint8Array, number, string, RegExp][] = [
    ['corrupt payload', Buffer.alloc(good.length, 0xa5), FLAGS[method]!, 'ERR_PAYLOAD_', /^(?!channel)./],
    ['truncated payload', good.subarray(0, Math.max(1, good.length - 7)), FLAGS[method]!, 'ERR_PAYLOAD_', /^(?!channel)./],
    [
      'wrong flag',
      good,
      method === 'zstd' ? MULTIFD_FLAG_ZLIB : MULTIFD_FLAG_ZSTD,
      'ERR_PACKET_METHOD',
      new RegExp(`flags received 0x${(method === 'zstd' ? 2 : 4).toString(16)}, expected 0x${FLAGS[method]!.toString(16)}`),
    ],
  ];
  for (const [name, payload, flags, code, message] of cases) {
    t.test(`${method}: ${name} is refused, nothing left behind`, async (t) => {
      const dir = tmpdir(t);
      const { port, result } = await startReceiver({ outputDir: dir });
      result.catch(() => {});
      const raw = new RawSender(port);
      t.teardown(() => raw.close());
      t.match(await raw.hello({ compression: method }), { type: 'ready' });
      const h = encodePacketHeader(new Uint8Array(1344), 1344, {
        flags,
        pagesAlloc: 128,
        normalPages: 2,
        zeroPages: 0,
        nextPacketSize: payload.length,
        packetNum: 0n,
        ramblock: Buffer.from('ram0'),
        offsets: [0, PS],
      });
      await raw.channel(encodeInitPacket(raw.uuidBytes, 0), h, payload);
      const e = await rejection(result);
      t.match(e, { exitCode: ExitCode.PROTOCOL, channel: 0, packetNum: 0n, message });
      t.ok(e.code.startsWith(code), `${e.code} (${e.message})`);
      t.same(fs.readdirSync(dir), []);
    });
  }
}

t.test('levels: ranges enforced with the valid range in the message, and only for their method', async (t) => {
  t.throws(() => getMethod('zlib').params({ level: 10 }), { message: /Expected an integer in 0\.\.9 for --zlib-level but received 10/ });
  t.throws(() => getMethod('zstd').params({ level: 21 }), { message: /Expected an integer in 0\.\.20 for --zstd-level/ });
  t.same(getMethod('zstd').params({}), { level: 1, engine: 'libzstd' }, 'QEMU default level 1, the libzstd engine');
  t.throws(() => getMethod('lz4').params({ level: 1 }), { message: /takes no parameter "level"/ });
});
