/**
 * Fuzz target for a migration file's header and trailer (src/file/format.ts),
 * the delta manifest of version 2 above all: headers whose parameters name
 * bases (valid, and with names, sizes, digests, paths and counts on and past
 * the edges, or any JSON), the version and layout fields set to anything,
 * the parameters' text mutated byte by byte, the length and checksum made
 * right again so the field checks are reached; then the trailer of that
 * header, mutated the same way. Accepted headers must keep what a restore
 * relies on: version 2 exactly when bases are named, each base a file name
 * given once, its size a byte count, its SHA-256 64 hex digits, its pages
 * within what references index, a delta file in the stream layout; an
 * accepted trailer's counts add up to each block's pages.
 */
import fc from 'fast-check';
import { native } from '../../../src/native/load.js';
import { MULTIFD_PACKET_SIZE } from '../../../src/wire/constants.js';
import { MAX_BASE_PAGES } from '../../../src/control/delta.js';
import {
  badBaseName,
  decodeHeader,
  decodeTrailer,
  encodeHeader,
  encodeTrailer,
  FILE_VERSION,
  FILE_VERSION_DELTA,
  HEADER_FIXED_SIZE,
  type FileHeader,
} from '../../../src/file/format.js';
import { type FuzzTarget, outcome, violation } from './harness.js';
import { applyByteOps, byteOps, edgeU32, type ByteOp } from './mutate.js';

const PS = 4096;
const UUID = '6b1a1f9e-2c3d-4e5f-8a9b-0c1d2e3f4a5b';
const SHA = 'ab'.repeat(32);

export interface HeaderInput {
  bases: unknown[] | null;
  /** Replaces the whole `delta` value. */
  delta: unknown;
  version: number | null;
  layout: number | null;
  textOps: ByteOp[] | null;
  trailer: { normal: number; zero: number; referenced: number; version: number | null; ops: ByteOp[] | null };
}

const name = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom('pc.ram', 'vga', 'ckpt1', 'a', 'é.ram') },
  { weight: 1, arbitrary: fc.constantFrom('', '.', '..', 'a/b', 'x\0y', 'n'.repeat(255), 'n'.repeat(256), 'é'.repeat(128)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, null, ['pc.ram'], {}) },
);
const size = fc.oneof(
  { weight: 6, arbitrary: fc.oneof(fc.constantFrom(0, 1, 4095, 4096, 4097, 1 << 30, 2 ** 53 - 1), fc.nat()) },
  { weight: 1, arbitrary: fc.constantFrom(2 ** 53, -1, 1.5, (MAX_BASE_PAGES + 1) * PS, '4096', null) },
);
const sha = fc.oneof(
  { weight: 12, arbitrary: fc.constant(SHA) },
  { weight: 1, arbitrary: fc.constantFrom('AB'.repeat(32), 'ab'.repeat(31), 'ab'.repeat(33), `${'ab'.repeat(31)}zz`, '', 0, null) },
);
const pathValue = fc.oneof(
  { weight: 6, arbitrary: fc.oneof(fc.constantFrom('/var/lib/ckpt/vm1.ram', '', 'p'.repeat(4096)), fc.string({ maxLength: 30 })) },
  { weight: 1, arbitrary: fc.constantFrom('p'.repeat(4097), 7) },
);
const base = fc.oneof(
  { weight: 12, arbitrary: fc.record({ name, path: pathValue, size, sha256: sha }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
);

/** `a` in `some` of `some + none` inputs, else null. */
const rarely = <T>(a: fc.Arbitrary<T>, none = 6, some = 1): fc.Arbitrary<T | null> =>
  fc.oneof({ weight: none, arbitrary: fc.constant(null) }, { weight: some, arbitrary: a });

/** The header bytes of an input: its parameters as given, length and checksum made right. */
export function assembleHeader(x: HeaderInput): Uint8Array {
  const plain: FileHeader = {
    version: FILE_VERSION,
    layout: 'stream',
    pageSize: PS,
    packetSize: MULTIFD_PACKET_SIZE,
    channels: 2,
    methodFlag: 0,
    uuid: UUID,
    dataOffset: 4096,
    ramblocks: [{ name: 'pc.ram', size: 64 * PS, bitmapOffset: 0, regionOffset: 0 }],
    compression: 'none',
    methodParams: {},
    zeroPageDetection: 'multifd',
    digest: 'crc32c-pages-v1',
  };
  const v1 = encodeHeader(plain);
  const paramsLength = new DataView(v1.buffer).getUint32(60);
  const params = JSON.parse(Buffer.from(v1.subarray(HEADER_FIXED_SIZE, HEADER_FIXED_SIZE + paramsLength)).toString()) as Record<
    string,
    unknown
  >;
  if (x.delta !== undefined) params.delta = x.delta;
  else if (x.bases) params.delta = { bases: x.bases };
  let text: Uint8Array = Buffer.from(JSON.stringify(params));
  if (x.textOps) text = applyByteOps(text, x.textOps);
  const table = v1.subarray(HEADER_FIXED_SIZE + paramsLength, v1.length - 4);
  const out = Buffer.concat([v1.subarray(0, HEADER_FIXED_SIZE), text, table, Buffer.alloc(4)]);
  const dv = new DataView(out.buffer, out.byteOffset, out.length);
  dv.setUint32(4, x.version ?? (params.delta !== undefined ? FILE_VERSION_DELTA : FILE_VERSION));
  dv.setUint32(8, out.length);
  if (x.layout !== null) dv.setUint32(12, x.layout);
  dv.setUint32(60, text.length);
  dv.setUint32(out.length - 4, native.crc32c(out.subarray(0, out.length - 4)));
  return out;
}

function checkAccepted(h: FileHeader): void {
  if ((h.version === FILE_VERSION_DELTA) !== (h.delta !== undefined)) violation(`version ${h.version} with delta ${h.delta !== undefined}`);
  if (h.version !== FILE_VERSION && h.version !== FILE_VERSION_DELTA) violation(`accepted version ${h.version}`);
  if (!h.delta) return;
  if (h.layout !== 'stream') violation(`accepted a delta file in the ${h.layout} layout`);
  const seen = new Set<string>();
  let pages = 0;
  for (const b of h.delta.bases) {
    if (badBaseName(b.name) !== null) violation(`accepted base name ${JSON.stringify(b.name)}`);
    if (seen.has(b.name)) violation(`accepted base "${b.name}" twice`);
    seen.add(b.name);
    if (!Number.isSafeInteger(b.size) || b.size < 0) violation(`accepted base size ${b.size}`);
    if (!/^[0-9a-f]{64}$/.test(b.sha256)) violation(`accepted sha256 ${JSON.stringify(b.sha256)}`);
    if (typeof b.path !== 'string' || Buffer.byteLength(b.path) > 4096) violation(`accepted path of ${String(b.path).length} characters`);
    pages += Math.ceil(b.size / h.pageSize);
  }
  if (pages > MAX_BASE_PAGES) violation(`accepted bases of ${pages} pages`);
}

export function fileHeaderTarget(): FuzzTarget<HeaderInput> {
  return {
    name: 'file-header',
    corpusSize: 1,
    async: false,
    arbitrary: fc.record({
      bases: rarely(fc.array(base, { maxLength: 5 }), 1, 6),
      delta: fc.oneof(
        { weight: 8, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
        { weight: 1, arbitrary: fc.constantFrom({ bases: null }, { bases: {} }, [], { bases: Array(4097).fill(0) }) },
      ),
      version: rarely(fc.oneof(fc.constantFrom(0, 1, 2, 3), edgeU32)),
      layout: rarely(fc.constantFrom(0, 1, 2, 3)),
      textOps: rarely(byteOps(3)),
      trailer: fc.record({
        normal: fc.constantFrom(0, 10, 64),
        zero: fc.constantFrom(0, 4, 54),
        referenced: fc.constantFrom(0, 50, 54, 64, 2 ** 53),
        version: rarely(fc.constantFrom(1, 2, 3)),
        ops: rarely(byteOps(2)),
      }),
    }),
    run(x) {
      return outcome('migration file header', () => {
        const h = decodeHeader(assembleHeader(x), 0);
        checkAccepted(h);
        const t = x.trailer;
        let bytes = encodeTrailer(
          {
            uuid: UUID,
            dataEnd: 4096,
            packets: [1, 1],
            blocks: [{ digest: '0123456789abcdef', normalPages: t.normal, zeroPages: t.zero, referencedPages: t.referenced }],
          },
          t.version ?? h.version,
        );
        if (t.ops) {
          const mutated = applyByteOps(bytes, t.ops);
          // The restore reads the length the tail gives (decodeTail: a multiple of 4096): other lengths never get here.
          if (mutated.length !== bytes.length) return;
          bytes = mutated;
          const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
          dv.setUint32(bytes.length - 4, native.crc32c(bytes.subarray(0, bytes.length - 4)));
        }
        const trailer = decodeTrailer(bytes, 8192, h);
        for (const b of trailer.blocks) {
          if (b.normalPages + b.zeroPages + (b.referencedPages ?? 0) !== 64)
            violation(`accepted a trailer whose counts ${JSON.stringify(b)} do not add up to the block's 64 pages`);
          if ((b.referencedPages !== undefined) !== (h.version === FILE_VERSION_DELTA))
            violation(`version ${h.version} trailer with referencedPages ${String(b.referencedPages)}`);
        }
      });
    },
    close() {},
  };
}
