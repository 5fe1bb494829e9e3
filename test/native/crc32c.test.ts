/**
 * CRC-32C by ISA-L's crc32_iscsi (where ISA-L is available) against the addon's own code
 * (crc32cBuiltin: SSE4.2, or a table): the same value for random bytes of every length from 0 to
 * 9000, at every alignment mod 8, continued from random seeds, for whole pages in a batch
 * (analysePages' CRCs), and for 64 MiB. Where ISA-L is not available crc32c is the built-in code
 * itself, so the comparison is skipped, with the reason; the check values are tested either way.
 */
import t from 'tap';
import { randomBytes, randomInt } from 'node:crypto';
import { native } from '../../src/native/load.js';

const skip = native.isalVersion === null ? `ISA-L is not available: ${native.isalUnavailable}` : false;

t.test('the engine is named, and both give the standard check values', async (t) => {
  t.match(native.crc32cEngine, native.isalVersion === null ? /^(sse4\.2|table)$/ : new RegExp(`^isa-l ${native.isalVersion} crc32_iscsi$`));
  for (const crc of [native.crc32c, native.crc32cBuiltin]) {
    t.equal(crc(Buffer.from('123456789')), 0xe3069283, `${crc.name}: "123456789"`);
    t.equal(crc(new Uint8Array(32)), 0x8a9136aa, `${crc.name}: 32 zero bytes (RFC 3720 B.4)`);
    t.equal(crc(new Uint8Array(32).fill(0xff)), 0x62a8ab43, `${crc.name}: 32 0xff bytes (RFC 3720 B.4)`);
    t.equal(crc(new Uint8Array(0)), 0, `${crc.name}: empty`);
    t.equal(crc(new Uint8Array(0), 0x12345678), 0x12345678, `${crc.name}: empty continues to its seed`);
  }
});

t.test('ISA-L and the built-in code agree on every length from 0 to 9000', { skip }, async (t) => {
  const buf = randomBytes(9000 + 8);
  let differ = 0;
  let first = '';
  for (let len = 0; len <= 9000; len++) {
    const bytes = buf.subarray(len % 8, (len % 8) + len);
    const seed = randomInt(0, 2 ** 32);
    for (const s of [0, seed]) {
      const a = native.crc32c(bytes, s);
      const b = native.crc32cBuiltin(bytes, s);
      if (a !== b) {
        differ++;
        first ||= `length ${len}, offset ${len % 8}, seed ${s}: isa-l ${a.toString(16)}, built-in ${b.toString(16)}`;
      }
    }
  }
  t.equal(differ, 0, first || 'all 18002 agree');
});

t.test('ISA-L and the built-in code agree on 64 MiB, whole and continued', { skip }, async (t) => {
  const big = randomBytes(64 << 20);
  const whole = native.crc32c(big);
  t.equal(whole, native.crc32cBuiltin(big), '64 MiB');
  const cut = randomInt(1, big.length);
  t.equal(native.crc32c(big.subarray(cut), native.crc32c(big.subarray(0, cut))), whole, `continued at ${cut}`);
});

t.test('the batch path (one CRC per page) agrees with the built-in code', { skip }, async (t) => {
  for (const ps of [4096, 16384, 65536]) {
    const count = 7;
    const pages = randomBytes(count * ps);
    const crc = new Uint32Array(count);
    native.analysePagesSync(pages, ps, count, new Uint8Array(count), crc);
    const want = Array.from({ length: count }, (_, i) => native.crc32cBuiltin(pages.subarray(i * ps, (i + 1) * ps)));
    t.same([...crc], want, `${count} pages of ${ps}`);
  }
});
