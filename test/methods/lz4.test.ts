/**
 * lz4 (src/methods/lz4.ts, addon/lz4_block.cc): a packet's runs joined into
 * one LZ4 block after a little-endian u32 length, written into the caller's
 * buffer; the receiver decodes into its buffer and refuses a wrong prefix, a
 * corrupt block and a block of another length, naming the channel and packet.
 */
import t from 'tap';
import { getMethod } from '../../src/methods/index.js';
import { PathTally } from '../../src/offload/paths.js';
import { ProtocolError } from '../../src/errors.js';
import { lz4BlockDecode } from '../helpers/streams.js';
import { native } from '../../src/native/load.js';

const PS = 4096;
const m = getMethod('lz4');
const liblz4 = native.lz4Version !== null;
const params = m.params({});
const tally = (): PathTally => new PathTally('t', false);

/** `n` pages: text-like words with a counter, so they compress and differ. */
function pages(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n * PS);
  for (let i = 0, k = seed; i < b.length; k++) i += b.write(`page ${k % 977} word ${(k * 7) % 13} `, i);
  return b;
}

t.test('several runs: one block of the runs joined, in the caller buffer, decoded by an independent decoder', async (t) => {
  const tx = m.sendSetup({ channel: 3, pageSize: PS, params, tally: tally() });
  const img = pages(8, 1);
  const runs = [img.subarray(0, PS), img.subarray(2 * PS, 5 * PS), img.subarray(7 * PS)];
  const joined = Buffer.concat(runs);
  const out = new Uint8Array(m.maxPayload(5, PS));
  const [payload] = await tx.prepare(runs, 5, out);
  // liblz4 (the addon's) writes into the caller's buffer; lz4-napi, where the addon has no liblz4, returns its own.
  if (liblz4) t.equal(payload!.buffer, out.buffer, 'written into the caller buffer');
  if (liblz4) t.equal(payload!.byteOffset, 0, 'from its first byte');
  t.ok(payload!.length < joined.length, `compressed: ${payload!.length} of ${joined.length} bytes`);
  t.equal(Buffer.from(payload!.subarray(0, 4)).readUInt32LE(0), joined.length, 'the prefix is the joined length');
  t.ok(lz4BlockDecode(payload!.subarray(4), joined.length).equals(joined), 'the block is the runs joined');
  const rx = m.recvSetup({ channel: 3, pageSize: PS, params, tally: tally() });
  const into = new Uint8Array(8 * PS);
  const [pagesOut] = await rx.recv([payload!.subarray(0, 9), payload!.subarray(9)], 5, 1n, into);
  t.ok(Buffer.from(pagesOut!).equals(joined), 'decodes from two socket chunks');
  if (liblz4) t.equal(pagesOut!.buffer, into.buffer, 'into the caller buffer');
  const [again] = await tx.prepare([img], 8);
  t.ok(Buffer.from((await rx.recv([again!], 8, 2n))[0]!).equals(img), 'without a caller buffer, one run');
});

t.test('a peer payload that is wrong is refused with the channel, packet and values', async (t) => {
  const tx = m.sendSetup({ channel: 0, pageSize: PS, params, tally: tally() });
  const rx = m.recvSetup({ channel: 5, pageSize: PS, params, tally: tally() });
  const [good] = await tx.prepare([pages(4, 2)], 4);
  const payload = Buffer.from(good!);
  const refuse = (p: Uint8Array, normal: number, code: string, message: RegExp, what: string): void => {
    t.throws(
      () => rx.recv([p], normal, 7n, new Uint8Array(4 * PS)),
      { constructor: ProtocolError, code, channel: 5, packetNum: 7n, message },
      what,
    );
  };
  refuse(payload, 3, 'ERR_PAYLOAD_SIZE', /declares 16384 bytes, expected 12288/, 'a prefix that is not normal_pages x page size');
  refuse(payload.subarray(0, 3), 4, 'ERR_PAYLOAD_SIZE', /declares -1 bytes/, 'shorter than the prefix');
  const corrupt = Buffer.from(payload);
  corrupt.fill(0xff, 4, 12);
  refuse(corrupt, 4, 'ERR_PAYLOAD_CORRUPT', /lz4 payload cannot be decoded/, 'a corrupt block');
  const [half] = await tx.prepare([pages(2, 3)], 2);
  const short = Buffer.from(half!);
  short.writeUInt32LE(4 * PS, 0);
  refuse(short, 4, 'ERR_PAYLOAD_SIZE', /packet size received 8192, size expected 16384/, 'a block that decodes short');
});

t.test('the two engines: each decodes what the other makes, and the path names the one that runs', async (t) => {
  const img = pages(16, 4);
  const runs = [img.subarray(0, 5 * PS), img.subarray(9 * PS)];
  const joined = Buffer.concat(runs);
  for (const [from, to] of [
    ['liblz4', 'lz4-napi'],
    ['lz4-napi', 'liblz4'],
  ] as const) {
    const tx = m.sendSetup({ channel: 1, pageSize: PS, params: m.params({ engine: from }), tally: tally() });
    const rx = m.recvSetup({ channel: 1, pageSize: PS, params: m.params({ engine: to }), tally: tally() });
    const payload = Buffer.concat(await tx.prepare(runs, 12, new Uint8Array(m.maxPayload(12, PS))));
    t.ok(lz4BlockDecode(payload.subarray(4), joined.length).equals(joined), `${from}: a standard LZ4 block`);
    t.ok(Buffer.from((await rx.recv([payload], 12, 1n))[0]!).equals(joined), `${from} -> ${to}: decodes`);
  }
  t.match(m.path({ params: m.params({ engine: 'lz4-napi' }), requireHardware: false }), /lz4_flex \(lz4-napi\)$/, 'lz4-napi named');
  const byDefault = m.path({ params: m.params({}), requireHardware: false });
  if (liblz4) t.match(byDefault, /^software: liblz4 \d/, 'liblz4 by default');
  else
    t.match(byDefault, /lz4_flex \(lz4-napi\) \(the addon was built without liblz4\)$/, 'lz4-napi where the addon has no liblz4, and why');
});
