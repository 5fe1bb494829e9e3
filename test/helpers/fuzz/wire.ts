/**
 * Fuzz targets for the wire codec: the init packet (decode + the receiver's
 * checks) and the RAM packet header (decode + checkPacketHeader), from random
 * bytes and from structured mutations of valid headers (fields, counts,
 * offsets, ramblock names, page sizes).
 */
import fc from 'fast-check';
import { checkInitPacket, decodeInitPacket, encodeInitPacket } from '../../../src/wire/init-packet.js';
import {
  checkPacketHeader,
  decodePacketHeader,
  encodePacketHeader,
  type PacketCheckContext,
  type PacketFields,
} from '../../../src/wire/packet.js';
import {
  INIT_PACKET_SIZE,
  MULTIFD_FLAG_COMPRESSION_MASK,
  MULTIFD_FLAG_SYNC,
  MULTIFD_MAGIC,
  MULTIFD_VERSION,
  PAGE_SIZES,
  packetHeaderSize,
  pageCount,
} from '../../../src/wire/constants.js';
import { getMethod, listMethods } from '../../../src/methods/index.js';
import { type FuzzTarget, outcome, violation } from './harness.js';
import { applyByteOps, byteOps, edgeU32, type ByteOp } from './mutate.js';

const UUID = Uint8Array.from([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
const WHERE = 'multifd channel from fuzz';

interface InitInput {
  channels: number;
  bytes: Uint8Array;
}

export function initPacketTarget(): FuzzTarget<InitInput> {
  const valid = [0, 1, 7, 254, 255].map((id) => encodeInitPacket(UUID, id));
  const structured = fc
    .record({
      id: fc.oneof(fc.nat({ max: 255 }), fc.constantFrom(0, 1, 254, 255)),
      magic: fc.oneof({ weight: 4, arbitrary: fc.constant(MULTIFD_MAGIC) }, { weight: 1, arbitrary: edgeU32 }),
      version: fc.oneof({ weight: 4, arbitrary: fc.constant(MULTIFD_VERSION) }, { weight: 1, arbitrary: edgeU32 }),
      otherUuid: fc.option(fc.uint8Array({ minLength: 16, maxLength: 16 }), { freq: 4 }),
      ops: fc.option(byteOps(3), { freq: 4 }),
    })
    .map(({ id, magic, version, otherUuid, ops }) => {
      const b = Buffer.from(encodeInitPacket(otherUuid ?? UUID, id));
      b.writeUInt32BE(magic, 0);
      b.writeUInt32BE(version, 4);
      return ops ? applyByteOps(b, ops) : b;
    });
  const fromCorpus = fc.tuple(fc.constantFrom(...valid), byteOps()).map(([b, ops]) => applyByteOps(b, ops));
  const random = fc.oneof(
    fc.uint8Array({ minLength: INIT_PACKET_SIZE, maxLength: INIT_PACKET_SIZE }),
    fc.uint8Array({ maxLength: 2 * INIT_PACKET_SIZE }),
  );
  return {
    name: 'init-packet',
    corpusSize: valid.length,
    async: false,
    arbitrary: fc.record({
      channels: fc.oneof(fc.constantFrom(1, 2, 8, 255), fc.integer({ min: 1, max: 255 })),
      bytes: fc.oneof({ weight: 3, arbitrary: structured }, { weight: 2, arbitrary: fromCorpus }, { weight: 1, arbitrary: random }),
    }),
    run({ channels, bytes }) {
      return outcome('init packet', () => {
        const p = decodeInitPacket(bytes);
        try {
          checkInitPacket(p, { uuid: UUID, channels }, WHERE);
        } catch (e) {
          if (e instanceof Error && !e.message.startsWith(WHERE)) violation(`init packet error does not name the connection: ${e.message}`);
          throw e;
        }
        // Accepted: exactly what the receiver relies on.
        if (p.magic !== MULTIFD_MAGIC || p.version !== MULTIFD_VERSION) violation(`accepted magic ${p.magic} version ${p.version}`);
        if (Buffer.compare(Buffer.from(p.uuid), Buffer.from(UUID)) !== 0) violation('accepted a foreign uuid');
        if (!Number.isInteger(p.id) || p.id < 0 || p.id >= channels) violation(`accepted channel id ${p.id} with ${channels} channels`);
      });
    },
    close() {},
  };
}

/** The ramblocks every header context knows: page-multiple, ragged, tiny, empty, huge. */
const BLOCKS: Record<string, number> = {
  'pc.ram': 64 << 20,
  'vga.vram': (16 << 20) + 100,
  tiny: 1,
  empty: 0,
  big: 2 ** 44,
};
const BLOCK_NAMES = Object.keys(BLOCKS);

type Field = 'magic' | 'version' | 'flags' | 'pagesAlloc' | 'normalPages' | 'nextPacketSize' | 'zeroPages';
const FIELD_AT: Record<Field, number> = {
  magic: 0,
  version: 4,
  flags: 8,
  pagesAlloc: 12,
  normalPages: 16,
  nextPacketSize: 20,
  zeroPages: 32,
};

type HeaderMutation =
  | { k: 'field'; field: Field; value: number }
  | { k: 'packetNum'; value: bigint }
  | { k: 'offset'; index: number; edge: number; raw: bigint | null }
  | { k: 'name'; name: Uint8Array; terminate: boolean }
  | { k: 'bytes'; ops: ByteOp[] };

interface HeaderInput {
  pageSize: number;
  method: string;
  /** A valid header's fields (before mutations). */
  base: {
    flags: number;
    normalPages: number;
    zeroPages: number;
    payloadFrac: number;
    block: string;
    pages: readonly number[];
    packetNum: bigint;
  };
  mutations: readonly HeaderMutation[];
  /** Use random bytes instead of the structured header. */
  random: Uint8Array | null;
}

const fieldValue = (field: Field): fc.Arbitrary<number> => {
  const near: Record<Field, number[]> = {
    magic: [MULTIFD_MAGIC, MULTIFD_MAGIC ^ 1, 0x44332211],
    version: [0, 1, 2, 0xffffffff],
    flags: [0, 1, 2, 3, 4, 5, 8, 0x10, 0x20, 0x3e, 0x3f, 0x40, 0x41, 0x80, 0x100, 0x80000000, 0xffffffff],
    pagesAlloc: [0, 1, 7, 8, 9, 31, 32, 33, 127, 128, 129, 0xffffffff],
    normalPages: [0, 1, 7, 8, 9, 31, 32, 33, 127, 128, 129, 0x80000000, 0xffffffff],
    zeroPages: [0, 1, 7, 8, 9, 31, 32, 33, 127, 128, 129, 0x80000000, 0xffffffff],
    nextPacketSize: [0, 1, 4095, 4096, 4097, 65536, 524288, 524289, 524288 + 2048, 1 << 20, 0xffffffff],
  };
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...near[field]) }, { weight: 1, arbitrary: edgeU32 });
};

const headerMutation: fc.Arbitrary<HeaderMutation> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .constantFrom(...(Object.keys(FIELD_AT) as Field[]))
      .chain((field) => fc.record({ k: fc.constant('field' as const), field: fc.constant(field), value: fieldValue(field) })),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('packetNum' as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('offset' as const),
      index: fc.nat({ max: 200 }),
      // edge: an offset relative to the block's size and the page size (see offsetFor); raw: any u64.
      edge: fc.nat({ max: 11 }),
      raw: fc.option(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { freq: 3 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('name' as const),
      name: fc.oneof(
        fc.constantFrom(
          ...BLOCK_NAMES.map((n) => Buffer.from(n)),
          Buffer.from('pc.ra'),
          Buffer.from('pc.ram\0x'),
          Buffer.from(''),
          Buffer.alloc(255, 0x61),
          Buffer.alloc(256, 0x61),
        ),
        fc.uint8Array({ maxLength: 260 }),
      ),
      terminate: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('bytes' as const), ops: byteOps(3) }) },
);

function offsetFor(edge: number, size: number, ps: number): number {
  const last = Math.max(0, Math.ceil(size / ps) - 1) * ps;
  const table = [0, ps, last, last + ps, size, size - 1, size + 1, ps - 1, last + 1, 2 ** 32, 2 ** 53 - ps, 2 ** 52];
  return Math.max(0, table[edge % table.length]!);
}

/** The context checkPacketHeader gets on the receiver (the same bounds, same lookups). */
export function headerContext(pageSize: number, method: string, channel = 3): PacketCheckContext {
  const m = getMethod(method);
  return {
    channel,
    pageSize,
    pageCount: pageCount(pageSize),
    methodFlag: m.flag,
    exactPayload: m.exactPayload,
    maxPayload: (n) => m.maxPayload(n, pageSize),
    lookupRamblock: (name) => (Object.hasOwn(BLOCKS, name) ? { size: BLOCKS[name]! } : undefined),
  };
}

export function encodeHeaderInput(x: HeaderInput): Uint8Array {
  if (x.random) return x.random;
  const ps = x.pageSize;
  const hs = packetHeaderSize(ps);
  const n = pageCount(ps);
  const ctx = headerContext(ps, x.method);
  const size = BLOCKS[x.base.block]!;
  const blockPages = Math.ceil(size / ps);
  const normal = Math.min(x.base.normalPages, n, blockPages);
  const zero = Math.min(x.base.zeroPages, n - normal, blockPages - normal);
  // Distinct pages of the block, normal ones ascending.
  const used = new Set<number>();
  const offsets: number[] = [];
  for (const p of x.base.pages) {
    if (offsets.length === normal + zero) break;
    const page = p % Math.max(1, blockPages);
    if (blockPages === 0 || used.has(page)) continue;
    used.add(page);
    offsets.push(page * ps);
  }
  const normalCount = Math.min(normal, offsets.length);
  const zeroCount = offsets.length - normalCount;
  const normalOffsets = offsets.slice(0, normalCount).sort((a, b) => a - b);
  const exact = ctx.exactPayload ? normalCount * ps : Math.max(1, Math.floor(ctx.maxPayload(normalCount) * x.base.payloadFrac));
  const f: PacketFields = {
    flags: (x.base.flags & MULTIFD_FLAG_SYNC) | ctx.methodFlag,
    pagesAlloc: n,
    normalPages: normalCount,
    zeroPages: zeroCount,
    nextPacketSize: normalCount === 0 ? 0 : exact,
    packetNum: x.base.packetNum,
    ramblock: Buffer.from(x.base.block),
    offsets: [...normalOffsets, ...offsets.slice(normalCount)],
  };
  let b: Uint8Array = encodePacketHeader(new Uint8Array(hs), hs, f);
  const dv = () => new DataView(b.buffer, b.byteOffset, b.length);
  for (const m of x.mutations) {
    if (m.k === 'field' && b.length >= FIELD_AT[m.field] + 4) dv().setUint32(FIELD_AT[m.field], m.value);
    else if (m.k === 'packetNum' && b.length >= 32) dv().setBigUint64(24, m.value);
    else if (m.k === 'offset') {
      const at = 320 + 8 * (m.index % n);
      if (b.length >= at + 8) dv().setBigUint64(at, m.raw ?? BigInt(offsetFor(m.edge, size, ps)));
    } else if (m.k === 'name' && b.length >= 320) {
      b.fill(m.terminate ? 0 : 0x61, 64, 320);
      b.set(m.name.subarray(0, 256), 64);
    } else if (m.k === 'bytes') b = applyByteOps(b, m.ops);
  }
  return b;
}

export function headerInput(): fc.Arbitrary<HeaderInput> {
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        pageSize: fc.constantFrom(...PAGE_SIZES),
        method: fc.constantFrom(...listMethods()),
        base: fc.record({
          flags: fc.constantFrom(0, MULTIFD_FLAG_SYNC),
          normalPages: fc.nat({ max: 128 }),
          zeroPages: fc.nat({ max: 128 }),
          payloadFrac: fc.double({ min: 0, max: 1, noNaN: true }),
          block: fc.constantFrom(...BLOCK_NAMES),
          pages: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 128 }),
          packetNum: fc.bigInt({ min: 0n, max: 1000n }),
        }),
        mutations: fc.array(headerMutation, { maxLength: 4 }),
        random: fc.constant(null),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        pageSize: fc.constantFrom(...PAGE_SIZES),
        method: fc.constantFrom(...listMethods()),
        base: fc.constant({ flags: 0, normalPages: 0, zeroPages: 0, payloadFrac: 0, block: 'pc.ram', pages: [], packetNum: 0n }),
        mutations: fc.constant([]),
        random: fc.oneof(
          fc.constantFrom(...PAGE_SIZES).chain((ps) => fc.uint8Array({ minLength: packetHeaderSize(ps), maxLength: packetHeaderSize(ps) })),
          fc.uint8Array({ maxLength: 1400 }),
        ),
      }),
    },
  );
}

export function packetHeaderTarget(): FuzzTarget<HeaderInput> {
  return {
    name: 'packet-header',
    // One valid header per page size, method and block, before mutations.
    corpusSize: PAGE_SIZES.length * listMethods().length * BLOCK_NAMES.length,
    async: false,
    arbitrary: headerInput(),
    run(x) {
      const bytes = encodeHeaderInput(x);
      const ctx = headerContext(x.pageSize, x.method);
      return outcome('packet header', () => {
        const h = decodePacketHeader(bytes, ctx.pageCount);
        let r: ReturnType<typeof checkPacketHeader>;
        try {
          r = checkPacketHeader(h, ctx);
        } catch (e) {
          const err = e as { channel?: number; message?: string };
          if (err.channel !== ctx.channel) violation(`header error does not name channel ${ctx.channel}: ${err.message}`);
          throw e;
        }
        // Accepted: the invariants data-channel.ts relies on before it allocates, reads or writes.
        const pages = h.normalPages + h.zeroPages;
        if (h.pagesAlloc > ctx.pageCount || h.normalPages > h.pagesAlloc || pages > ctx.pageCount)
          violation(`accepted counts alloc ${h.pagesAlloc} normal ${h.normalPages} zero ${h.zeroPages}`);
        if (h.normalPages === 0 && h.nextPacketSize !== 0) violation(`accepted next_packet_size ${h.nextPacketSize} without normal pages`);
        if (h.normalPages > 0) {
          const max = ctx.exactPayload ? h.normalPages * ctx.pageSize : ctx.maxPayload(h.normalPages);
          if (h.nextPacketSize === 0 || h.nextPacketSize > max) violation(`accepted next_packet_size ${h.nextPacketSize}, bound ${max}`);
        }
        if (r === null) {
          if (pages !== 0) violation('pages accepted without a ramblock');
          return;
        }
        if ((h.flags & MULTIFD_FLAG_COMPRESSION_MASK) !== ctx.methodFlag) violation(`accepted method bits ${h.flags}`);
        const block = ctx.lookupRamblock(r.ramblock);
        if (!block || block.size !== r.size) violation(`accepted unknown ramblock ${r.ramblock}`);
        if (h.offsets.length < pages) violation(`accepted ${pages} pages with ${h.offsets.length} offsets decoded`);
        for (let i = 0; i < pages; i++) {
          const o = h.offsets[i]!;
          if (!Number.isSafeInteger(o) || o < 0 || o >= r.size || o % ctx.pageSize !== 0)
            violation(`accepted offset ${o} of page ${i} for a block of ${r.size} bytes`);
        }
      });
    },
    close() {},
  };
}

export { encodeInitPacket, UUID as FUZZ_UUID };
