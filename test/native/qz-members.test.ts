/**
 * qatzip's software members (addon/qz_members.cc): for every engine (zlib at
 * levels 1 and 9; ISA-L where the addon has it), a payload is one QZ-headed
 * gzip member per 64 KiB of input that gunzip reads back to the input (CRC and
 * ISIZE checked), random-looking chunks are stored, text is compressed, and a
 * buffer too small is refused rather than overrun.
 */
import t, { type Test } from 'tap';
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { native } from '../../src/native/load.js';

const PS = 4096;
const CHUNK = 65536;

function text(n: number, seed: number): Buffer {
  const words = ['guest', 'memory', 'page', 'kernel', 'qemu', 'multifd', 'channel', 'zero', 'ramblock', 'migrate'];
  const parts: string[] = [];
  let x = seed;
  while (parts.join(' ').length < n) {
    x = (x * 1103515245 + 12345) >>> 0;
    parts.push(words[x % words.length]!);
  }
  return Buffer.from(parts.join(' ').slice(0, n));
}

/** Each member's header fields, in order; fails the test on a malformed one. */
function members(t: Test, payload: Buffer): { src: number; dest: number }[] {
  const out: { src: number; dest: number }[] = [];
  for (let at = 0; at < payload.length;) {
    const h = payload.subarray(at, at + 24);
    t.ok(
      h[0] === 0x1f &&
        h[1] === 0x8b &&
        h[2] === 8 &&
        h[3] === 4 &&
        h.readUInt16LE(10) === 12 &&
        h.toString('latin1', 12, 14) === 'QZ' &&
        h.readUInt16LE(14) === 8,
      `member ${out.length}: a QZ header`,
    );
    const src = h.readUInt32LE(16);
    const dest = h.readUInt32LE(20);
    t.equal(payload.readUInt32LE(at + 24 + dest + 4), src, `member ${out.length}: ISIZE is src_sz`);
    out.push({ src, dest });
    at += 24 + dest + 8;
  }
  return out;
}

const engines: [string, number, number][] = [
  ['zlib level 1', 1, 0],
  ['zlib level 9', 9, 0],
  ...(native.isalVersion !== null
    ? ([
        ['isa-l level 1', 1, 1],
        ['isa-l level 3', 3, 3],
      ] as [string, number, number][])
    : []),
];

for (const [name, level, isal] of engines) {
  t.test(name, async (t) => {
    // 3 chunks and a partial one: text, random, half text half random, a page of text.
    const input = Buffer.concat([text(CHUNK, 1), randomBytes(CHUNK), text(CHUNK / 2, 2), randomBytes(CHUNK / 2), text(PS, 3)]);
    const out = Buffer.alloc(input.length + 1024 + 4 * 64);
    const n = native.qzMembers(input, level, isal, out);
    const payload = out.subarray(0, n);
    t.same(zlib.gunzipSync(payload), input, 'gunzip reads every member back to the input');
    const m = members(t, payload);
    t.same(
      m.map((x) => x.src),
      [CHUNK, CHUNK, CHUNK, PS],
      'one member per 64 KiB of input',
    );
    t.ok(m[0]!.dest < CHUNK / 2, `text is compressed (${m[0]!.dest} bytes)`);
    t.equal(m[1]!.dest, CHUNK + 10, 'an all-random chunk is stored: two stored blocks');
    t.ok(m[2]!.dest > CHUNK / 2 && m[2]!.dest < CHUNK, 'a chunk only half random is deflated');
    t.throws(() => native.qzMembers(input, level, isal, Buffer.alloc(CHUNK)), { code: 'ERR_QZ' }, 'a buffer too small is refused');
    t.equal(native.qzMembers(Buffer.alloc(0), level, isal, out), 0, 'no input, no member');
  });
}

t.test('levels out of range are refused', async (t) => {
  t.throws(() => native.qzMembers(Buffer.alloc(PS), 0, 0, Buffer.alloc(2 * PS)), RangeError);
  t.throws(() => native.qzMembers(Buffer.alloc(PS), 1, 4, Buffer.alloc(2 * PS)), RangeError);
});

t.test(
  'qzInflate (ISA-L): every member, each checked',
  { skip: native.qzInflate ? false : `ISA-L is not available (${native.isalUnavailable}): the receiver uses Node's gunzip` },
  async (t) => {
    const inflate = native.qzInflate!;
    const input = Buffer.concat([text(CHUNK + 3 * PS, 4), randomBytes(PS)]);
    const out = Buffer.alloc(input.length + 1024);
    const payload = out.subarray(0, native.qzMembers(input, 1, 0, out));
    const back = Buffer.alloc(input.length);
    t.equal(inflate(payload, back), input.length);
    t.same(back, input, 'QZ members read back');
    const plain = Buffer.concat([zlib.gzipSync(input.subarray(0, 5000)), zlib.gzipSync(input.subarray(5000))]);
    back.fill(0);
    t.equal(inflate(plain, back), input.length, 'plain gzip members too');
    t.same(back, input);
    t.throws(() => inflate(payload, Buffer.alloc(input.length - 1)), { code: 'ERR_PAYLOAD_SIZE' }, "more than the packet's pages");
    t.throws(
      () => inflate(payload.subarray(0, payload.length - 3), Buffer.alloc(input.length)),
      { code: 'ERR_PAYLOAD_CORRUPT', message: /truncated/ },
      'a member cut short',
    );
    const badCrc = Buffer.from(payload);
    badCrc[badCrc.length - 8]! ^= 1; // the last member's CRC-32
    t.throws(() => inflate(badCrc, Buffer.alloc(input.length)), { code: 'ERR_PAYLOAD_CORRUPT', message: /checksum/ }, 'a wrong CRC');
    t.throws(
      () => inflate(Buffer.concat([payload, Buffer.from('junk')]), Buffer.alloc(input.length + 10)),
      { code: 'ERR_PAYLOAD_CORRUPT' },
      'bytes after the last member that are no member',
    );
  },
);
