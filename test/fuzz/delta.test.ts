/** Fuzz: delta reference packets (test/helpers/fuzz/delta.ts), a bounded run with a fixed seed; and the checks' messages. */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { deltaRefsTarget } from '../helpers/fuzz/delta.js';
import { headerContext } from '../helpers/fuzz/wire.js';
import { checkPacketHeader, decodePacketHeader, encodePacketHeader } from '../../src/wire/packet.js';
import { MFD_FLAG_DELTA_REF, SOURCE_MIGRATION, checkRef, encodeRefs } from '../../src/wire/delta-ref.js';

t.test('fuzz: reference packets end in accepted references inside their sources, or a typed error', async (t) => {
  const stats = await assertTarget(deltaRefsTarget(), 4000);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(stats.outcomes.has('ok'), 'some inputs pass every check');
  t.ok(stats.outcomes.has('ERR_DELTA_REF'), 'some references are refused');
});

const refHeader = (size: number): ReturnType<typeof decodePacketHeader> =>
  decodePacketHeader(
    encodePacketHeader(new Uint8Array(1344), 1344, {
      flags: MFD_FLAG_DELTA_REF,
      pagesAlloc: 128,
      normalPages: 0,
      zeroPages: 0,
      nextPacketSize: size,
      packetNum: 4n,
      ramblock: Buffer.from('pc.ram'),
      offsets: [],
    }),
    128,
  );

t.test('a reference packet where delta was not negotiated is refused as a method mismatch, saying what it is', async (t) => {
  t.throws(() => checkPacketHeader(refHeader(24), headerContext(4096, 'none', 1)), {
    code: 'ERR_PACKET_METHOD',
    channel: 1,
    packetNum: 4n,
    message: 'flags received 0x3c (an mfd delta reference packet), expected 0x0: delta transfer was not negotiated',
  });
  t.same(checkPacketHeader(refHeader(48), { ...headerContext(4096, 'zstd', 1), deltaRefs: true }), { ramblock: 'pc.ram', size: 64 << 20 });
  t.throws(() => checkPacketHeader(refHeader(25), { ...headerContext(4096, 'none', 1), deltaRefs: true }), { code: 'ERR_PACKET_SIZE' });
  t.equal(
    encodeRefs([{ source: 1, count: 2, dst: 3, src: 4 }]).toString('hex'),
    '00000001' + '00000002' + '0000000000000003' + '0000000000000004',
    'big-endian source, count, dst, src',
  );
});

t.test('references outside their block or source are refused, received vs expected', async (t) => {
  const limits = { basePages: [10], blockPages: [100, 5] };
  const at = { channel: 0, packetNum: 7n };
  t.doesNotThrow(() => checkRef({ source: 0, count: 10, dst: 90, src: 0 }, 0, 100, limits, 'a', at));
  t.throws(() => checkRef({ source: 0, count: 11, dst: 0, src: 0 }, 1, 100, limits, 'a', at), {
    code: 'ERR_DELTA_REF',
    channel: 0,
    packetNum: 7n,
    message: 'delta reference 1 of ram block "a": source pages 0..10 of base 0 received, expected within its 10 pages',
  });
  t.throws(() => checkRef({ source: 0, count: 2, dst: 99, src: 0 }, 2, 100, limits, 'a', at), {
    message: /pages 99\.\.100 received, expected a run of at least 1 within the block's 100 pages/,
  });
  t.throws(() => checkRef({ source: 1, count: 1, dst: 0, src: 0 }, 3, 100, limits, 'a', at), {
    message: /source base 1 received, expected below 1/,
  });
  t.throws(() => checkRef({ source: SOURCE_MIGRATION | 2, count: 1, dst: 0, src: 0 }, 4, 100, limits, 'a', at), {
    message: /source ram block 2 received, expected below 2/,
  });
  t.throws(() => checkRef({ source: 0, count: 0, dst: 0, src: 0 }, 5, 100, limits, 'a', at), { code: 'ERR_DELTA_REF' });
});
