/**
 * Whole multifd channel streams for the fuzz corpus, as mfd's sender writes
 * them: the init packet, data packets (normal pages compressed by the method's
 * own sender, zero pages as offsets only), a SYNC packet; plus the block's
 * digest, so a receiver can verify an unmutated stream end to end. And the
 * structured mutations of such streams (header fields, offsets, names,
 * payload bytes, dropped or replayed packets).
 */
import { PathTally } from '../../../src/offload/paths.js';
import fc from 'fast-check';
import { BlockDigest } from '../../../src/image/digest.js';
import { getMethod } from '../../../src/methods/index.js';
import { native } from '../../../src/native/load.js';
import { encodeInitPacket } from '../../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../../src/wire/packet.js';
import { MULTIFD_FLAG_SYNC, packetHeaderSize, pageCount } from '../../../src/wire/constants.js';
import { applyByteOps, byteOps, edgeU32, makePages, type ByteOp, type PageKind } from './mutate.js';

export interface StreamPacket {
  header: Uint8Array;
  payload: Uint8Array;
}

export interface ChannelStream {
  method: string;
  pageSize: number;
  block: string;
  blockSize: number;
  /** The block's bytes (what an unmutated stream rebuilds). */
  image: Buffer;
  init: Uint8Array;
  packets: StreamPacket[];
  /** crc32c-pages-v1 of the block. */
  digest: string;
}

/** A block of `size` bytes made of runs of page kinds, deterministic in `seed`. */
export function makeImage(size: number, pageSize: number, kinds: readonly PageKind[], seed: number): Buffer {
  const pages = Math.ceil(size / pageSize);
  const parts: Buffer[] = [];
  for (let p = 0; p < pages; p++) parts.push(makePages(kinds[p % kinds.length]!, 1, pageSize, seed + p));
  return Buffer.concat(parts).subarray(0, size);
}

/** One channel carrying every page of one block, `perPacket` pages per packet. */
export async function buildChannelStream(o: {
  method: string;
  pageSize: number;
  block: string;
  image: Buffer;
  uuid: Uint8Array;
  channel: number;
  perPacket: number;
}): Promise<ChannelStream> {
  const m = getMethod(o.method);
  const ps = o.pageSize;
  const hs = packetHeaderSize(ps);
  const pagesInBlock = Math.ceil(o.image.length / ps);
  const zeroCrc = native.crc32c(new Uint8Array(ps));
  const digest = new BlockDigest();
  const tx = m.sendSetup({ channel: o.channel, pageSize: ps, params: m.params({}), tally: new PathTally('fuzz') });
  const packets: StreamPacket[] = [];
  let packetNum = 0n;
  try {
    for (let first = 0; first < pagesInBlock; first += o.perPacket) {
      const normal: number[] = [];
      const zero: number[] = [];
      const data: Buffer[] = [];
      for (let p = first; p < Math.min(pagesInBlock, first + o.perPacket); p++) {
        const page = Buffer.alloc(ps);
        o.image.copy(page, 0, p * ps, Math.min(o.image.length, (p + 1) * ps));
        if (page.every((b) => b === 0)) {
          zero.push(p * ps);
          digest.add(p, zeroCrc);
        } else {
          normal.push(p * ps);
          data.push(page);
          digest.add(p, native.crc32c(page));
        }
      }
      const payload = normal.length > 0 ? Buffer.concat(await tx.prepare([Buffer.concat(data)], normal.length)) : Buffer.alloc(0);
      const header = encodePacketHeader(new Uint8Array(hs), hs, {
        flags: m.flag,
        pagesAlloc: pageCount(ps),
        normalPages: normal.length,
        zeroPages: zero.length,
        nextPacketSize: payload.length,
        packetNum: packetNum++,
        ramblock: Buffer.from(o.block),
        offsets: [...normal, ...zero],
      });
      packets.push({ header, payload });
    }
  } finally {
    tx.cleanup();
  }
  const sync = encodePacketHeader(new Uint8Array(hs), hs, {
    flags: MULTIFD_FLAG_SYNC,
    pagesAlloc: 0,
    normalPages: 0,
    zeroPages: 0,
    nextPacketSize: 0,
    packetNum,
    ramblock: new Uint8Array(0),
    offsets: [],
  });
  packets.push({ header: sync, payload: Buffer.alloc(0) });
  return {
    method: o.method,
    pageSize: ps,
    block: o.block,
    blockSize: o.image.length,
    image: o.image,
    init: encodeInitPacket(o.uuid, o.channel),
    packets,
    digest: digest.hex(),
  };
}

type HeaderField = 'magic' | 'version' | 'flags' | 'pagesAlloc' | 'normalPages' | 'nextPacketSize' | 'zeroPages';
const FIELD_AT: Record<HeaderField, number> = {
  magic: 0,
  version: 4,
  flags: 8,
  pagesAlloc: 12,
  normalPages: 16,
  nextPacketSize: 20,
  zeroPages: 32,
};

export type StreamMutation =
  | { k: 'field'; packet: number; field: HeaderField; value: number }
  | { k: 'delta'; packet: number; field: HeaderField; delta: number }
  | { k: 'packetNum'; packet: number; value: bigint }
  | { k: 'offset'; packet: number; index: number; value: bigint }
  | { k: 'offsetDelta'; packet: number; index: number; delta: number }
  | { k: 'name'; packet: number; name: Uint8Array }
  | { k: 'payload'; packet: number; ops: ByteOp[]; fixLength: boolean }
  | { k: 'drop'; packet: number }
  | { k: 'replay'; packet: number }
  | { k: 'init'; ops: ByteOp[] }
  | { k: 'stream'; ops: ByteOp[] };

const packetIndex = fc.nat({ max: 15 });

export const streamMutation: fc.Arbitrary<StreamMutation> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('field' as const),
      packet: packetIndex,
      field: fc.constantFrom(...(Object.keys(FIELD_AT) as HeaderField[])),
      value: edgeU32,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('delta' as const),
      packet: packetIndex,
      field: fc.constantFrom<HeaderField>('normalPages', 'zeroPages', 'nextPacketSize', 'pagesAlloc'),
      delta: fc.constantFrom(-2, -1, 1, 2, 4096),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('packetNum' as const),
      packet: packetIndex,
      value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('offset' as const),
      packet: packetIndex,
      index: fc.nat({ max: 15 }),
      value: fc.oneof(
        fc.constantFrom(
          0n,
          1n,
          4095n,
          4096n,
          65536n,
          1n << 20n,
          (1n << 20n) + 100n,
          1n << 32n,
          (1n << 53n) - 4096n,
          1n << 53n,
          1n << 63n,
          (1n << 64n) - 1n,
        ),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('offsetDelta' as const),
      packet: packetIndex,
      index: fc.nat({ max: 15 }),
      delta: fc.constantFrom(-4096, -1, 1, 4096, 65536),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('name' as const),
      packet: packetIndex,
      name: fc.oneof(
        fc.constantFrom(Buffer.from('pc.ram'), Buffer.from('pc.raM'), Buffer.from(''), Buffer.alloc(256, 0x41), Buffer.from([0xff, 0xfe])),
        fc.uint8Array({ maxLength: 256 }),
      ),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ k: fc.constant('payload' as const), packet: packetIndex, ops: byteOps(3), fixLength: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('drop' as const), packet: packetIndex }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('replay' as const), packet: packetIndex }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('init' as const), ops: byteOps(2) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('stream' as const), ops: byteOps(3) }) },
);

/** The stream's bytes after the mutations (none: exactly what the sender wrote). */
export function mutateStream(s: Pick<ChannelStream, 'init' | 'packets'>, muts: readonly StreamMutation[]): Buffer {
  let init = Buffer.from(s.init);
  const list = s.packets.map((p) => ({ header: Buffer.from(p.header), payload: Buffer.from(p.payload) }));
  const streamOps: ByteOp[] = [];
  for (const m of muts) {
    if (m.k === 'init') {
      init = Buffer.from(applyByteOps(init, m.ops));
      continue;
    }
    if (m.k === 'stream') {
      streamOps.push(...m.ops);
      continue;
    }
    const n = list.length;
    if (n === 0) continue;
    const i = m.packet % n;
    const p = list[i]!;
    const h = p.header;
    switch (m.k) {
      case 'field':
        h.writeUInt32BE(m.value, FIELD_AT[m.field]);
        break;
      case 'delta':
        h.writeUInt32BE((h.readUInt32BE(FIELD_AT[m.field]) + m.delta) >>> 0, FIELD_AT[m.field]);
        break;
      case 'packetNum':
        h.writeBigUInt64BE(m.value, 24);
        break;
      case 'offset': {
        const used = Math.max(1, h.readUInt32BE(16) + h.readUInt32BE(32));
        h.writeBigUInt64BE(m.value, 320 + 8 * Math.min(m.index % used, (h.length - 328) / 8));
        break;
      }
      case 'offsetDelta': {
        const used = Math.max(1, h.readUInt32BE(16) + h.readUInt32BE(32));
        const at = 320 + 8 * Math.min(m.index % used, (h.length - 328) / 8);
        h.writeBigUInt64BE(BigInt.asUintN(64, h.readBigUInt64BE(at) + BigInt(m.delta)), at);
        break;
      }
      case 'name':
        h.fill(0, 64, 320);
        Buffer.from(m.name.subarray(0, 256)).copy(h, 64);
        break;
      case 'payload': {
        const payload = Buffer.from(applyByteOps(p.payload, m.ops));
        if (m.fixLength) h.writeUInt32BE(payload.length, 20);
        list[i] = { header: h, payload };
        break;
      }
      case 'drop':
        list.splice(i, 1);
        break;
      case 'replay':
        list.splice(i, 0, { header: Buffer.from(h), payload: Buffer.from(p.payload) });
        break;
    }
  }
  const bytes = Buffer.concat([init, ...list.flatMap((p) => [p.header, p.payload])]);
  return streamOps.length > 0 ? Buffer.from(applyByteOps(bytes, streamOps)) : bytes;
}
