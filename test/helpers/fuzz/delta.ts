/**
 * Fuzz target for delta reference packets (src/wire/delta-ref.ts): a header with
 * the 0x3c compression field and a payload of references, from valid packets
 * mutated (header fields, reference fields, payload bytes, truncation) and
 * from random bytes, through checkPacketHeader, decodeRefs and checkRef as the
 * receiver runs them. Accepted references must lie inside their ramblock and
 * their source; everything else ends in a typed error.
 */
import fc from 'fast-check';
import { checkPacketHeader, decodePacketHeader, encodePacketHeader } from '../../../src/wire/packet.js';
import { packetHeaderSize } from '../../../src/wire/constants.js';
import {
  MFD_FLAG_DELTA_REF,
  REF_ENTRY_SIZE,
  SOURCE_MIGRATION,
  checkRef,
  decodeRefs,
  encodeRefs,
  type PageRef,
} from '../../../src/wire/delta-ref.js';
import { type FuzzTarget, outcome, violation } from './harness.js';
import { applyByteOps, byteOps, edgeU32, type ByteOp } from './mutate.js';
import { headerContext } from './wire.js';

const PS = 4096;
/** The receiver's sources: base sizes and ramblock sizes in pages (headerContext's blocks, in its order). */
const LIMITS = { basePages: [0, 1, 1000, 2 ** 32 - 2], blockPages: [16384, 4097, 1, 0, 2 ** 32] };
const BLOCK = 'pc.ram';
const BLOCK_PAGES = 16384;

interface RefInput {
  refs: PageRef[];
  header: { flags: number; pagesAlloc: number; normal: number; zero: number; size: number | null; name: string };
  ops: ByteOp[] | null;
  random: Uint8Array | null;
}

const u64 = fc.oneof(fc.constantFrom(0, 1, 4095, 4096, 16383, 16384, 2 ** 32, 2 ** 53 - 1), fc.nat());
const ref: fc.Arbitrary<PageRef> = fc.record({
  source: fc.oneof(
    fc.constantFrom(0, 1, 2, 3, 4, SOURCE_MIGRATION, SOURCE_MIGRATION | 1, SOURCE_MIGRATION | 4, SOURCE_MIGRATION | 5, 0x7fffffff),
    edgeU32,
  ),
  count: fc.oneof(fc.constantFrom(0, 1, 2, 128, 16384, 0xffffffff), edgeU32),
  dst: u64,
  src: u64,
});

export function deltaRefsTarget(): FuzzTarget<RefInput> {
  const hs = packetHeaderSize(PS);
  return {
    name: 'delta-refs',
    corpusSize: 1,
    async: false,
    arbitrary: fc.record({
      refs: fc.array(ref, { minLength: 0, maxLength: 8 }),
      header: fc.record({
        flags: fc.oneof(
          { weight: 6, arbitrary: fc.constant(MFD_FLAG_DELTA_REF) },
          { weight: 1, arbitrary: fc.constantFrom(0x3c | 1, 0x3e, 0, 0x7c) },
        ),
        pagesAlloc: fc.oneof({ weight: 6, arbitrary: fc.constant(128) }, { weight: 1, arbitrary: fc.constantFrom(0, 127, 129) }),
        normal: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1, 128) }),
        zero: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1, 128) }),
        size: fc.option(fc.constantFrom(0, 1, 23, 25, 524280, 524304, 0xffffffff), { freq: 5 }),
        name: fc.constantFrom(BLOCK, BLOCK, 'nope', ''),
      }),
      ops: fc.option(byteOps(3), { freq: 5 }),
      random: fc.option(fc.uint8Array({ maxLength: hs + 200 }), { freq: 10 }),
    }),
    run({ refs, header, ops, random }) {
      return outcome('delta reference packet', () => {
        let bytes: Uint8Array;
        if (random) bytes = random;
        else {
          const payload = encodeRefs(refs);
          const h = encodePacketHeader(new Uint8Array(hs), hs, {
            flags: header.flags,
            pagesAlloc: header.pagesAlloc,
            normalPages: 0,
            zeroPages: 0,
            nextPacketSize: header.size ?? payload.length,
            packetNum: 9n,
            ramblock: Buffer.from(header.name),
            offsets: [],
          });
          // Page counts a reference packet must not have, with their offsets left zero.
          const dv = new DataView(h.buffer, h.byteOffset, h.length);
          dv.setUint32(16, header.normal);
          dv.setUint32(32, header.zero);
          bytes = Buffer.concat([h, payload]);
          if (ops) bytes = applyByteOps(Buffer.from(bytes), ops);
        }
        const h = decodePacketHeader(bytes.subarray(0, Math.min(bytes.length, hs)), 128);
        const ctx = { ...headerContext(PS, 'none', 2), deltaRefs: true };
        const checked = checkPacketHeader(h, ctx);
        if ((h.flags & 0x3e) !== MFD_FLAG_DELTA_REF) return; // another kind of packet: the packet-header target's
        if (!checked || h.normalPages !== 0 || h.zeroPages !== 0 || h.nextPacketSize % REF_ENTRY_SIZE !== 0)
          violation(`accepted a reference packet with ${h.normalPages} normal, ${h.zeroPages} zero pages, size ${h.nextPacketSize}`);
        const payload = bytes.subarray(hs, hs + h.nextPacketSize);
        if (payload.length < h.nextPacketSize) return; // the channel waits for the rest
        const pages = Math.ceil(checked.size / PS);
        decodeRefs(payload).forEach((r, i) => {
          checkRef(r, i, pages, LIMITS, checked.ramblock, { channel: 2, packetNum: h.packetNum });
          const sizes = (r.source & SOURCE_MIGRATION) !== 0 ? LIMITS.blockPages : LIMITS.basePages;
          const index = (r.source & SOURCE_MIGRATION) !== 0 ? r.source & ~SOURCE_MIGRATION : r.source;
          if (r.count < 1 || r.dst + r.count > pages || index >= sizes.length || r.src + r.count > sizes[index]!)
            violation(`accepted reference ${JSON.stringify(r)} for a block of ${pages} pages`);
        });
        if (checked.ramblock === BLOCK && pages !== BLOCK_PAGES) violation(`block ${BLOCK} has ${pages} pages`);
      });
    },
    close() {},
  };
}
