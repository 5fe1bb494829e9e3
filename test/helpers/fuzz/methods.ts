/**
 * Fuzz targets for each compression method's receiver (recvSetup().recv()):
 * sessions of packets produced by the method's own sender, then mutated
 * (bytes flipped, truncated, extended, spliced), lied about (normal page
 * counts), reordered, dropped or replayed, and fed in order to one receiver,
 * so zlib's and zstd's per-channel stream state is fuzzed across packets; the
 * payload arrives in random socket-sized pieces. Random payloads too.
 */
import { PathTally } from '../../../src/offload/paths.js';
import fc from 'fast-check';
import { getMethod, listMethods, type CompressionMethod } from '../../../src/methods/index.js';
import { pageCount } from '../../../src/wire/constants.js';
import { type FuzzTarget, outcomeAsync, violation } from './harness.js';
import { applyByteOps, byteOps, makePages, split, type ByteOp, type PageKind } from './mutate.js';

/** The channel every fuzzed receiver is set up for (errors must name it). */
const CHANNEL = 5;

interface SessionSpec {
  pageSize: number;
  params?: Record<string, number>;
  packets: { kind: PageKind; count: number }[];
}

/** Packet sequences each sender produces: the corpus (one per session and method). */
const SESSIONS: SessionSpec[] = [
  { pageSize: 4096, packets: [{ kind: 'text', count: 1 }] },
  {
    pageSize: 4096,
    packets: [
      { kind: 'random', count: 1 },
      { kind: 'text', count: 3 },
      { kind: 'sparse', count: 2 },
    ],
  },
  {
    pageSize: 4096,
    packets: [
      { kind: 'text', count: 8 },
      { kind: 'zero', count: 4 },
      { kind: 'text', count: 8 },
      { kind: 'random', count: 2 },
    ],
  },
  {
    pageSize: 4096,
    params: { level: 9 },
    packets: [
      { kind: 'sparse', count: 4 },
      { kind: 'text', count: 2 },
    ],
  },
  {
    pageSize: 4096,
    packets: [
      { kind: 'text', count: 128 },
      { kind: 'random', count: 5 },
    ],
  },
  {
    pageSize: 16384,
    packets: [
      { kind: 'text', count: 2 },
      { kind: 'sparse', count: 1 },
      { kind: 'zero', count: 1 },
    ],
  },
  {
    pageSize: 65536,
    packets: [
      { kind: 'random', count: 1 },
      { kind: 'text', count: 2 },
    ],
  },
];

export interface SessionPacket {
  normal: number;
  pages: Buffer;
  payload: Uint8Array;
}

export interface Session {
  pageSize: number;
  packets: SessionPacket[];
}

/** A method's params for a session: the session's level when the method takes one. */
function sessionParams(m: CompressionMethod, spec: SessionSpec): Record<string, number> {
  const user: Record<string, number> = {};
  for (const o of m.options)
    if (o.type === 'int' && spec.params?.[o.key] !== undefined) user[o.key] = Math.min(o.max, Math.max(o.min, spec.params[o.key]!));
  return m.params(user) as Record<string, number>;
}

/** Runs the method's sender over each session (in order: stream methods carry history). */
export async function buildSessions(method: string): Promise<Session[]> {
  const m = getMethod(method);
  const out: Session[] = [];
  let seed = 1;
  for (const spec of SESSIONS) {
    const tx = m.sendSetup({ channel: CHANNEL, pageSize: spec.pageSize, params: sessionParams(m, spec), tally: new PathTally('fuzz') });
    const packets: SessionPacket[] = [];
    try {
      for (const p of spec.packets) {
        const pages = makePages(p.kind, p.count, spec.pageSize, seed++);
        // Runs of whole pages, as the sender's slab gives them (split in two when there are several).
        const half = Math.floor(p.count / 2) * spec.pageSize;
        const runs = half > 0 ? [pages.subarray(0, half), pages.subarray(half)] : [pages];
        const chunks = await tx.prepare(runs, p.count);
        packets.push({ normal: p.count, pages: Buffer.from(pages), payload: Buffer.concat(chunks) });
      }
    } finally {
      tx.cleanup();
    }
    out.push({ pageSize: spec.pageSize, packets });
  }
  return out;
}

type Mutation =
  | { k: 'bytes'; packet: number; ops: ByteOp[] }
  | { k: 'normal'; packet: number; value: number }
  | { k: 'drop'; packet: number }
  | { k: 'replay'; packet: number }
  | { k: 'swap'; a: number; b: number }
  | { k: 'splice'; packet: number; from: number; at: number; len: number }
  | { k: 'random'; packet: number; bytes: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ k: fc.constant('bytes' as const), packet: fc.nat({ max: 7 }), ops: byteOps(4) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant('normal' as const),
      packet: fc.nat({ max: 7 }),
      value: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.constantFrom(127, 128)),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('drop' as const), packet: fc.nat({ max: 7 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('replay' as const), packet: fc.nat({ max: 7 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('swap' as const), a: fc.nat({ max: 7 }), b: fc.nat({ max: 7 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('splice' as const),
      packet: fc.nat({ max: 7 }),
      from: fc.nat({ max: 7 }),
      at: fc.nat({ max: 1 << 20 }),
      len: fc.integer({ min: 1, max: 4096 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant('random' as const), packet: fc.nat({ max: 7 }), bytes: fc.uint8Array({ maxLength: 2048 }) }),
  },
);

interface MethodInput {
  session: number;
  mutations: readonly Mutation[];
  cuts: readonly number[];
}

interface Fed {
  normal: number;
  payload: Uint8Array;
  /** The sender's pages when this packet and all before it are untouched. */
  expect: Buffer | null;
}

/** The packets as a hostile sender would send them, in order. */
export function mutateSession(s: Session, muts: readonly Mutation[]): Fed[] {
  const list = s.packets.map((p, i) => ({ ...p, origin: i, touched: false }));
  const max = pageCount(s.pageSize);
  for (const m of muts) {
    const n = list.length;
    if (n === 0) break;
    if (m.k === 'bytes') {
      const p = list[m.packet % n]!;
      list[m.packet % n] = { ...p, payload: applyByteOps(p.payload, m.ops), touched: true };
    } else if (m.k === 'normal') {
      const p = list[m.packet % n]!;
      const value = Math.min(max, m.value);
      if (value !== p.normal) list[m.packet % n] = { ...p, normal: value, touched: true };
    } else if (m.k === 'drop') list.splice(m.packet % n, 1);
    else if (m.k === 'replay') list.splice(m.packet % n, 0, { ...list[m.packet % n]!, touched: true });
    else if (m.k === 'swap') {
      const a = m.a % n;
      const b = m.b % n;
      if (a !== b)
        [list[a], list[b]] = [
          { ...list[b]!, touched: true },
          { ...list[a]!, touched: true },
        ];
    } else if (m.k === 'splice') {
      const p = list[m.packet % n]!;
      const src = list[m.from % n]!.payload;
      const dst = Buffer.from(p.payload);
      if (dst.length > 0 && src.length > 0) Buffer.from(src).copy(dst, m.at % dst.length, m.at % src.length, (m.at % src.length) + m.len);
      list[m.packet % n] = { ...p, payload: dst, touched: true };
    } else {
      list[m.packet % n] = { ...list[m.packet % n]!, payload: m.bytes, touched: true };
    }
  }
  // A dropped packet breaks the history of every later one, as does any change before it.
  let pristine = true;
  return list.map((p, i) => {
    if (p.touched || p.origin !== i) pristine = false;
    return { normal: p.normal, payload: p.payload, expect: pristine ? p.pages : null };
  });
}

export async function methodTarget(method: string): Promise<FuzzTarget<MethodInput>> {
  const m = getMethod(method);
  const sessions = await buildSessions(method);
  const corpusSize = sessions.reduce((a, s) => a + s.packets.length, 0);
  return {
    name: `method-${method}`,
    corpusSize,
    async: true,
    arbitrary: fc.record({
      session: fc.nat({ max: sessions.length - 1 }),
      mutations: fc.oneof(
        { weight: 1, arbitrary: fc.constant([]) },
        { weight: 12, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 4 }) },
      ),
      cuts: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 6 }),
    }),
    async run(x) {
      const s = sessions[x.session]!;
      const fed = mutateSession(s, x.mutations);
      const rx = m.recvSetup({ channel: CHANNEL, pageSize: s.pageSize, params: m.params({}), tally: new PathTally('fuzz') });
      try {
        return await outcomeAsync(`${method} recv`, async () => {
          for (let k = 0; k < fed.length; k++) {
            const f = fed[k]!;
            const pieces = split(f.payload, x.cuts);
            let out: Uint8Array[];
            try {
              out = await rx.recv(pieces, f.normal, BigInt(k));
            } catch (e) {
              const err = e as { channel?: number; packetNum?: bigint | number; message?: string };
              if (err.channel !== CHANNEL || err.packetNum === undefined || BigInt(err.packetNum) !== BigInt(k)) {
                violation(`${method}: error does not name channel ${CHANNEL} and packet ${k}: ${err.message}`);
              }
              throw e;
            }
            const want = f.normal * s.pageSize;
            const got = out.reduce((a, p) => a + p.length, 0);
            if (got !== want) violation(`${method}: packet ${k} decoded to ${got} bytes, expected ${want} (${f.normal} pages)`);
            if (m.offload) {
              for (const o of out)
                if (pieces.some((p) => p.buffer === o.buffer))
                  violation(`${method}: result is a view of its input, so it cannot be transferred`);
            }
            if (f.expect && Buffer.compare(Buffer.concat(out), f.expect) !== 0)
              violation(`${method}: packet ${k} round trip differs from the sender's pages`);
          }
        });
      } finally {
        rx.cleanup();
      }
    },
    close() {},
  };
}

export function methodNames(): string[] {
  return listMethods();
}
