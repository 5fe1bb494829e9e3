/**
 * zstd (src/methods/zstd.ts, addon/zstd_stream.cc): the per-channel window
 * (zstdWindowLog): the level's own while all channels' contexts fit the budget,
 * smaller past it; a stream made so declares that window in its frame header
 * and decodes as any other. The two engines, libzstd in the addon and
 * zstd-napi, make one stream per channel that the other decodes, packet after
 * packet, in the caller's buffers; a payload that is wrong is refused with the
 * channel, packet and values.
 */
import t from 'tap';
import { getMethod } from '../../src/methods/index.js';
import { zstdWindowLog } from '../../src/methods/zstd.js';
import { PathTally } from '../../src/offload/paths.js';
import { ProtocolError } from '../../src/errors.js';
import { native } from '../../src/native/load.js';

const PS = 4096;

t.test('the window shrinks with the channel count, never below 2^10', async (t) => {
  t.equal(zstdWindowLog(1), null, 'one channel: the level decides');
  t.equal(zstdWindowLog(4), null, 'four channels: the level decides');
  t.equal(zstdWindowLog(255), 15, '255 channels: 2^15');
  let last = 19;
  for (let n = 1; n <= 100_000; n = Math.ceil(n * 1.5)) {
    const log = zstdWindowLog(n) ?? 19;
    t.ok(log <= last && log >= 10, `${n} channels: 2^${log}`);
    last = log;
  }
});

/** The window a zstd frame header declares (RFC 8878: Window_Descriptor after the magic and the descriptor byte). */
function frameWindowLog(frame: Uint8Array): number {
  t.equal(Buffer.from(frame.subarray(0, 4)).readUInt32LE(0), 0xfd2fb528, 'a zstd frame');
  const fhd = frame[4]!;
  t.equal(fhd & 0x20, 0, 'with a window descriptor (not single-segment)');
  const wd = frame[5]!;
  return 10 + (wd >> 3);
}

const engines = ['libzstd', 'zstd-napi'] as const;
const m = getMethod('zstd');
const tally = (): PathTally => new PathTally('t', false);

/** `n` pages: text-like words with a counter, so they compress and differ. */
function pages(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n * PS);
  for (let i = 0, k = seed; i < b.length; k++) i += b.write(`page ${k % 977} word ${(k * 7) % 13} `, i);
  return b;
}

t.test('the default engine: libzstd where the addon has it, else zstd-napi, saying why', async (t) => {
  const byDefault = m.path({ params: m.params({}), requireHardware: false });
  if (native.zstdVersion !== null) t.match(byDefault, /^software: zstd \d+\.\d+\.\d+ \(libzstd\)$/, 'libzstd by default');
  else t.match(byDefault, /^software: zstd \d.*\(zstd-napi\) \(the addon was built without libzstd\)$/, 'zstd-napi, and why');
  t.match(
    m.path({ params: m.params({ engine: 'zstd-napi' }), requireHardware: false }),
    /^software: zstd \d.*\(zstd-napi\)$/,
    'zstd-napi named',
  );
});

// A fresh clone may build without libzstd-dev (the tests above cover both builds); CI's must have it.
t.test(
  'CI builds the addon with libzstd',
  { skip: !process.env.CI && 'not CI (CI=true): a build without libzstd-dev is allowed' },
  async (t) => {
    t.type(native.zstdVersion, 'string', 'the addon was built with libzstd-dev (.ci/run installs it)');
  },
);

for (const [from, to] of [
  ['libzstd', 'zstd-napi'],
  ['zstd-napi', 'libzstd'],
  ['libzstd', 'libzstd'],
] as const) {
  t.test(`${from} -> ${to}: one stream per channel, packet after packet, several runs each`, async (t) => {
    const tx = m.sendSetup({ channel: 2, channels: 4, pageSize: PS, params: m.params({ engine: from }), tally: tally() });
    const rx = m.recvSetup({ channel: 2, pageSize: PS, params: m.params({ engine: to }), tally: tally() });
    const into = new Uint8Array(128 * PS);
    for (let packet = 0; packet < 4; packet++) {
      // The same pages again in later packets: the stream's history makes those smaller.
      const img = pages(24, packet % 2);
      const runs = [img.subarray(0, 3 * PS), img.subarray(5 * PS, 6 * PS), img.subarray(10 * PS)];
      const joined = Buffer.concat(runs);
      const n = joined.length / PS;
      const out = new Uint8Array(m.maxPayload(n, PS));
      const [payload] = await tx.prepare(runs, n, out);
      t.equal(payload!.buffer, out.buffer, 'compressed into the caller buffer');
      t.equal(payload!.byteOffset, 0, 'from its first byte');
      if (packet === 0) t.equal(Buffer.from(payload!.subarray(0, 4)).readUInt32LE(0), 0xfd2fb528, 'the first payload opens the frame');
      else t.not(Buffer.from(payload!.subarray(0, 4)).readUInt32LE(0), 0xfd2fb528, 'later payloads continue it');
      const cut = Math.min(7, payload!.length - 1);
      const [got] = await rx.recv([payload!.subarray(0, cut), payload!.subarray(cut)], n, BigInt(packet), into);
      t.equal(got!.buffer, into.buffer, 'decoded into the caller buffer');
      t.ok(
        Buffer.from(got!).equals(joined),
        `packet ${packet} (${payload!.length} bytes for ${joined.length}) decodes to its runs joined, from two socket chunks`,
      );
    }
    tx.cleanup();
    rx.cleanup();
  });
}

for (const engine of engines) {
  t.test(`${engine}: a peer payload that is wrong is refused with the channel, packet and values`, async (t) => {
    const params = m.params({ engine });
    const refuse = async (payloads: Uint8Array[], normal: number, code: string, message: RegExp, what: string): Promise<void> => {
      const rx = m.recvSetup({ channel: 5, pageSize: PS, params, tally: tally() });
      for (const [i, p] of payloads.entries()) {
        const attempt = (): unknown => rx.recv([p], i === payloads.length - 1 ? normal : 4, BigInt(7 + i), new Uint8Array(8 * PS));
        if (i < payloads.length - 1) await attempt();
        else t.throws(attempt, { constructor: ProtocolError, code, channel: 5, packetNum: BigInt(7 + i), message }, what);
      }
      rx.cleanup();
    };
    const tx = m.sendSetup({ channel: 0, pageSize: PS, params, tally: tally() });
    const first = Buffer.concat(await tx.prepare([pages(4, 2)], 4));
    const second = Buffer.concat(await tx.prepare([pages(4, 3)], 4));
    await refuse([first], 3, 'ERR_PAYLOAD_SIZE', /more than 12288 bytes/, 'decodes to more than normal_pages x page size');
    await refuse([first], 5, 'ERR_PAYLOAD_SIZE', /packet size received 16384, size expected 20480/, 'decodes to less');
    await refuse([Buffer.concat([first, second])], 4, 'ERR_PAYLOAD_SIZE', /more than 16384 bytes/, 'two packets in one');
    const corrupt = Buffer.from(first);
    corrupt.fill(0xff, 0, 4);
    await refuse([corrupt], 4, 'ERR_PAYLOAD_CORRUPT', /zstd payload cannot be decoded/, 'not a zstd frame');
    const body = Buffer.from(second);
    body.fill(0xff, 0, Math.min(16, body.length));
    await refuse([first, body], 4, 'ERR_PAYLOAD_CORRUPT', /zstd payload cannot be decoded/, 'a corrupt block after a good packet');
    await refuse(
      [second],
      4,
      'ERR_PAYLOAD_CORRUPT',
      /zstd payload cannot be decoded/,
      "a packet from the middle of another channel's stream",
    );
    tx.cleanup();
  });
}

for (const [channels, engine] of [
  [4, 'libzstd'],
  [255, 'libzstd'],
  [4, 'zstd-napi'],
  [255, 'zstd-napi'],
] as const) {
  t.test(`${engine}, ${channels} channels: the stream's window, and it decodes`, async (t) => {
    const params = m.params({ engine });
    const tx = m.sendSetup({ channel: 0, channels, pageSize: PS, params, tally: new PathTally('t', false) });
    const rx = m.recvSetup({ channel: 0, pageSize: PS, params, tally: new PathTally('t', false) });
    const img = Buffer.alloc(128 * PS);
    for (let i = 0; i < img.length; i += 8) img.writeUInt32LE((i * 2654435761) >>> 16, i);
    for (let packet = 0; packet < 3; packet++) {
      const payload = Buffer.concat(await tx.prepare([img], 128));
      if (packet === 0) {
        const log = frameWindowLog(payload);
        if (channels === 255) t.equal(log, 15, 'the frame declares 2^15');
        else t.ok(log >= 19, `the level's window, 2^${log}`);
      }
      t.ok(Buffer.concat(await rx.recv([payload], 128, BigInt(packet))).equals(img), `packet ${packet} decodes`);
    }
    tx.cleanup();
    rx.cleanup();
  });
}
