import t from 'tap';
import {
  checkPacketHeader,
  decodePacketHeader,
  encodePacketHeader,
  encodePagesHeader,
  type PacketCheckContext,
  type PacketFields,
} from '../../src/wire/packet.js';
import { packetHeaderSize, pageCount, MULTIFD_FLAG_SYNC, MULTIFD_FLAG_ZLIB } from '../../src/wire/constants.js';

t.test('header sizes follow the page size', async (t) => {
  t.equal(packetHeaderSize(4096), 1344);
  t.equal(packetHeaderSize(16384), 576);
  t.equal(packetHeaderSize(65536), 384);
  t.equal(pageCount(4096), 128);
});

const name = Buffer.from('pc.ram');
function fields(over: Partial<PacketFields> = {}): PacketFields {
  return {
    flags: 0,
    pagesAlloc: 128,
    normalPages: 2,
    zeroPages: 1,
    nextPacketSize: 8192,
    packetNum: 0x0102030405n,
    ramblock: name,
    offsets: [0x1000, 0x2000, 0x100000000],
    ...over,
  };
}

t.test('data packet golden bytes (4 KiB pages)', async (t) => {
  const b = Buffer.from(encodePacketHeader(new Uint8Array(1344), 1344, fields()));
  t.equal(b.length, 1344);
  const head =
    '11223344' +
    '00000001' +
    '00000000' +
    '00000080' +
    '00000002' +
    '00002000' +
    '0000000102030405' +
    '00000001' +
    '00000000' +
    '00'.repeat(24);
  t.equal(
    b.subarray(0, 64).toString('hex'),
    head,
    'magic, version, flags, pages_alloc, normal, next_packet_size, packet_num, zero_pages, unused',
  );
  t.equal(b.subarray(64, 320).toString('hex'), Buffer.concat([name, Buffer.alloc(250)]).toString('hex'), 'ramblock, NUL padded');
  t.equal(
    b.subarray(320, 344).toString('hex'),
    '0000000000001000' + '0000000000002000' + '0000000100000000',
    'normal offsets then zero offsets, BE u64',
  );
  t.ok(
    b.subarray(344).every((x) => x === 0),
    'unused offsets are zero',
  );
});

t.test('SYNC packet golden bytes: full-size header, pages_alloc 0', async (t) => {
  const b = Buffer.from(
    encodePacketHeader(
      new Uint8Array(1344),
      1344,
      fields({
        flags: MULTIFD_FLAG_SYNC,
        pagesAlloc: 0,
        normalPages: 0,
        zeroPages: 0,
        nextPacketSize: 0,
        packetNum: 7n,
        ramblock: new Uint8Array(0),
        offsets: [],
      }),
    ),
  );
  t.equal(
    b.subarray(0, 36).toString('hex'),
    '11223344' + '00000001' + '00000001' + '00000000' + '00000000' + '00000000' + '0000000000000007' + '00000000',
  );
  t.ok(b.subarray(36).every((x) => x === 0));
});

t.test('decode round trip, stale offsets past the counts are not read', async (t) => {
  const b = encodePacketHeader(new Uint8Array(1344), 1344, fields());
  b.fill(0xff, 344); // QEMU <= 9.1 leaves stale offsets behind the counted ones
  const h = decodePacketHeader(b, 3);
  t.equal(h.packetNum, 0x0102030405n);
  t.equal(Buffer.from(h.ramblock).toString(), 'pc.ram');
  t.same([...h.offsets], [0x1000, 0x2000, 0x100000000]);
  t.equal(decodePacketHeader(b, 4).offsets[3], Infinity, 'an offset >= 2^53 decodes as Infinity');
});

function ctx(over: Partial<PacketCheckContext> = {}): PacketCheckContext {
  return {
    channel: 2,
    pageSize: 4096,
    pageCount: 128,
    methodFlag: 0,
    exactPayload: true,
    maxPayload: (n) => n * 4096,
    lookupRamblock: (n) => (n === 'pc.ram' ? { size: 0x100001000 } : undefined),
    ...over,
  };
}

function header(over: Partial<PacketFields> = {}, raw?: (b: Uint8Array) => void) {
  const b = encodePacketHeader(new Uint8Array(1344), 1344, fields(over));
  raw?.(b);
  return decodePacketHeader(b, 128);
}

t.test("a packet of pages: normal pages' offsets first, then the zero pages', from first + i or the list", async (t) => {
  const zero = Uint8Array.of(1, 0, 0, 1, 0);
  const base = { flags: MULTIFD_FLAG_ZLIB, pageSize: 4096, packetNum: 7n, ramblock: name, pages: 5, zero, zeros: 2, payloadBytes: 99 };
  const out = new Uint8Array(1344);
  const offsets: number[] = [];
  encodePagesHeader(out, 1344, { ...base, first: 10, zeroPagesInHeader: true }, offsets);
  t.same(
    offsets,
    [11, 12, 14, 10, 13].map((p) => p * 4096),
  );
  let h = decodePacketHeader(out, 5);
  t.match(h, { flags: MULTIFD_FLAG_ZLIB, pagesAlloc: 128, normalPages: 3, zeroPages: 2, nextPacketSize: 99, packetNum: 7n });
  t.same([...h.offsets], offsets);
  const scratch = new Float64Array(128).fill(-1);
  encodePagesHeader(out, 1344, { ...base, first: 0, list: Uint32Array.of(3, 8, 9, 20, 2 ** 20), zeroPagesInHeader: false }, scratch);
  t.same(
    [...scratch.subarray(0, 5)],
    [8, 9, 2 ** 20, 3, 20].map((p) => p * 4096),
  );
  h = decodePacketHeader(out, 5);
  t.match(h, { normalPages: 3, zeroPages: 0 });
  t.same(
    [...h.offsets.subarray(0, 3)],
    [8, 9, 2 ** 20].map((p) => p * 4096),
  );
});

t.test('a good header passes and names its block', async (t) => {
  t.same(checkPacketHeader(header(), ctx()), { ramblock: 'pc.ram', size: 0x100001000 });
  t.equal(
    checkPacketHeader(
      header({
        flags: MULTIFD_FLAG_SYNC,
        pagesAlloc: 0,
        normalPages: 0,
        zeroPages: 0,
        nextPacketSize: 0,
        ramblock: new Uint8Array(0),
        offsets: [],
      }),
      ctx(),
    ),
    null,
    'SYNC with an empty name is fine',
  );
});

t.test('every receiver check, with channel, packet and received vs expected', async (t) => {
  const cases: [string, ReturnType<typeof header>, string, RegExp, Partial<PacketCheckContext>?][] = [
    ['magic', header({}, (b) => b.set([0, 0, 0, 1], 0)), 'ERR_PACKET_MAGIC', /^received packet magic 0x1, expected 0x11223344$/],
    ['version', header({}, (b) => b.set([0, 0, 0, 2], 4)), 'ERR_PACKET_VERSION', /^received packet version 2, expected 1$/],
    ['unknown flag bits', header({ flags: 0x100 }), 'ERR_PACKET_FLAGS', /^flags received 0x100, expected 0x0/],
    ['device state', header({ flags: 0x40 }), 'ERR_PACKET_FLAGS', /device-state packet/],
    ['pages_alloc', header({ pagesAlloc: 129 }), 'ERR_PACKET_PAGES_ALLOC', /received packet with 129 pages, expected 128/],
    [
      'normal > alloc',
      header({ pagesAlloc: 1, normalPages: 2, zeroPages: 0 }),
      'ERR_PACKET_NORMAL_PAGES',
      /2 non-zero pages, which exceeds maximum expected pages 1/,
    ],
    ['zero bound', header({ pagesAlloc: 2, normalPages: 2, zeroPages: 1 }), 'ERR_PACKET_ZERO_PAGES', /1 zero pages, expected maximum 0/],
    [
      'next_packet_size vs pages',
      header({ nextPacketSize: 4096 }),
      'ERR_PACKET_SIZE',
      /next_packet_size received 4096, expected 8192 \(2 normal pages x 4096\)/,
    ],
    [
      'payload without pages',
      header({ normalPages: 0, zeroPages: 1, nextPacketSize: 10, offsets: [0] }),
      'ERR_PACKET_SIZE',
      /received 10, expected 0 for a packet without normal pages/,
    ],
    ['method flag', header({ flags: MULTIFD_FLAG_ZLIB }), 'ERR_PACKET_METHOD', /flags received 0x2, expected 0x0/],
    ['unknown ramblock', header({ ramblock: Buffer.from('nope') }), 'ERR_PACKET_RAMBLOCK', /unknown ram block "nope"/],
    ['unterminated name', header({}, (b) => b.fill(0x41, 64, 320)), 'ERR_PACKET_RAMBLOCK', /not NUL-terminated/],
    [
      'offset past the block',
      header({ offsets: [0x1000, 0x100001000, 0] }),
      'ERR_PACKET_OFFSET',
      /offset 4294971392 of page 1 out of range for ram block "pc.ram" \(received 4294971392, expected below 4294971392\)/,
    ],
    ['offset >= 2^53', header({}, (b) => b.fill(0xff, 320, 328)), 'ERR_PACKET_OFFSET', /offset >= 2\^53 of page 0 out of range/],
    [
      'unaligned offset',
      header({ offsets: [0x1001, 0x2000, 0] }),
      'ERR_PACKET_OFFSET',
      /offset 4097 of page 0 is not aligned \(received 4097, expected a multiple of 4096\)/,
    ],
    [
      'compressed size bound',
      header({ flags: MULTIFD_FLAG_ZLIB, nextPacketSize: 1 << 30 }),
      'ERR_PACKET_SIZE',
      /next_packet_size received 1073741824, expected 1\.\.100/,
      { methodFlag: 2, exactPayload: false, maxPayload: () => 100 },
    ],
  ];
  for (const [name, h, code, message, c] of cases) {
    t.throws(() => checkPacketHeader(h, ctx(c)), { code, message, channel: 2 }, name);
  }
  t.throws(
    () => checkPacketHeader(header({ flags: 0x100 }), ctx()),
    { code: 'ERR_PACKET_FLAGS', channel: 2, packetNum: 4328719365n },
    'where is in fields, the message says what',
  );
});
