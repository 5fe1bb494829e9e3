/**
 * Fuzz targets for the control channel: one frame body through decodeFrame
 * (random bytes, random JSON, structured mutations of valid messages, deep
 * nesting, oversized values, prototype keys) plus the preamble check; and a
 * byte stream of frames through ControlChannel's framing (lying and oversize
 * lengths, arbitrary chunking, floods of messages nobody reads).
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import fc from 'fast-check';
import {
  CONTROL_FRAME_MAX,
  CONTROL_PREAMBLE_SIZE,
  CONTROL_VERSION,
  MAX_CHANNELS,
  MAX_RAMBLOCKS,
  MAX_TOTAL_RAM,
  MAX_HAVE_NUMBERS,
  SOURCE_MAX,
  checkPreamble,
  decodeFrame,
  encodePreamble,
  type ControlMessage,
} from '../../../src/control/protocol.js';
import {
  ENTRY_SIZE,
  MAX_FINGERPRINTS_PER_FRAME,
  MAX_SAMPLE_ENTRIES,
  MAX_SAMPLE_STRIDE,
  MAX_STASH_PER_FRAME,
} from '../../../src/control/delta.js';
import { ControlChannel, MAX_UNREAD_MESSAGES } from '../../../src/transport/control-channel.js';
import { listMethods } from '../../../src/methods/index.js';
import { MULTIFD_PACKET_SIZE, PAGE_SIZES, RAMBLOCK_NAME_MAX } from '../../../src/wire/constants.js';
import { type FuzzTarget, outcome, outcomeAsync, typed, violation } from './harness.js';
import { applyByteOps, byteOps, split, type ByteOp } from './mutate.js';
import { helloMessage } from '../hello.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const hello = (over: Record<string, Json> = {}): Record<string, Json> => ({
  ...(helloMessage({
    channels: 4,
    compression: 'zstd',
    methodParams: { level: 1 },
    ramblocks: [
      { name: 'pc.ram', size: 1 << 30 },
      { name: 'vga.vram', size: (16 << 20) + 100 },
    ],
  }) as unknown as Record<string, Json>),
  ...over,
});

/** Valid messages of every type: the corpus. */
export const CONTROL_CORPUS: Record<string, Json>[] = [
  hello(),
  hello({ channels: 1, pageSize: 65536, compression: 'none', methodParams: {}, ramblocks: [{ name: 'a', size: 0 }] }),
  hello({
    channels: MAX_CHANNELS,
    pageSize: 16384,
    compression: 'qatzip',
    methodParams: { level: 9 },
    ramblocks: [{ name: 'x'.repeat(RAMBLOCK_NAME_MAX), size: 2 ** 40 }],
  }),
  hello({ ramblocks: Array.from({ length: 64 }, (_, i) => ({ name: `block-${i}`, size: i * 4096 })) }),
  // Ramblock names that are Object.prototype's members are valid names.
  hello({
    ramblocks: [
      { name: '__proto__', size: 4096 },
      { name: 'constructor', size: 8192 },
    ],
  }),
  { type: 'complete', packets: [2], digests: JSON.parse('{"__proto__":"0123456789abcdef","constructor":"fedcba9876543210"}') as Json },
  { type: 'ready' },
  // A resume: the hello asks, ready answers with the pages held, as [start, count] runs.
  hello({ resume: true, ramblocks: [{ name: 'pc.ram', size: 1 << 30, source: 'size=1073741824 mtime=1795751683583599066 ino=2146691' }] }),
  { type: 'ready', have: JSON.parse('{"pc.ram":[0,128,256,4096,8192,1],"vga.vram":[],"__proto__":[7,1]}') as Json },
  { type: 'complete', packets: [3, 0, 17, 1], digests: { 'pc.ram': '0123456789abcdef', 'vga.vram': 'fedcba9876543210' } },
  { type: 'verdict', ok: true, stats: { side: 'recv', packets: 12, ramblocks: [{ name: 'pc.ram' }] } },
  { type: 'busy', what: 'verifying and committing the outputs' },
  { type: 'error', code: 'ERR_PACKET_OFFSET', message: 'channel 3, packet 17: offset 4096 out of range' },
  // Delta transfer: the hello with its sampled pre-check (offered, and the earlier form announcing it), the
  // receiver's ask, the sample, the receiver's fingerprints and answers.
  hello({ delta: true, deltaSampleOffer: true }),
  hello({ delta: true, deltaSample: true }),
  { type: 'sampleRequest' },
  { type: 'sample', stride: 1024, run: 16, entries: Buffer.alloc(48, 7).toString('base64') },
  { type: 'sample', stride: 4096, run: 16, entries: '' },
  { type: 'fingerprints', entries: Buffer.alloc(32, 9).toString('base64') },
  { type: 'ready', delta: { bases: [{ name: 'output:pc.ram', pages: 262144 }], fingerprints: 0, skipped: true } },
  { type: 'ready', delta: { bases: [{ name: 'a', pages: 3 }], fingerprints: 2 } },
  // Delta written in place: the sender's stash (u32 page indices) and the receiver's answer.
  { type: 'ready', delta: { bases: [{ name: 'output:pc.ram', pages: 8, inPlace: 0 }], fingerprints: 8 } },
  { type: 'stash', pages: Buffer.alloc(8, 1).toString('base64'), last: true },
  { type: 'stash', pages: '', last: false },
  { type: 'stashed', pages: 2 },
];

const KEYS = [
  'type',
  'version',
  'uuid',
  'channels',
  'pageSize',
  'packetSize',
  'compression',
  'methodParams',
  'zeroPageDetection',
  'digest',
  'ramblocks',
  'packets',
  'digests',
  'ok',
  'stats',
  'code',
  'message',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'name',
  'size',
  'level',
  'resume',
  'source',
  'have',
  'what',
  'delta',
  'deltaSample',
  'deltaSampleOffer',
  'stride',
  'run',
  'entries',
  'bases',
  'pages',
  'fingerprints',
  'skipped',
  'inPlace',
  'last',
];

/** JSON values on the edges of the checks; "\u0001deep:N:K" becomes N levels of nesting when serialised. */
const edgeValue: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(
    null,
    true,
    false,
    0,
    -0,
    1,
    -1,
    1.5,
    2,
    255,
    256,
    4096,
    16384,
    65536,
    524288,
    2 ** 31,
    2 ** 32,
    2 ** 44,
    2 ** 44 + 1,
    2 ** 53 - 1,
    2 ** 53,
    2 ** 53 + 2,
    1e308,
    -1e308,
    '',
    ...listMethods(),
    'hello',
    'complete',
    'x'.repeat(255),
    'x'.repeat(256),
    'é'.repeat(128),
    'a\u0000b',
    '\ud800',
    '..',
    '/',
    '__proto__',
    '0123456789abcdef',
    '0123456789ABCDEF',
    [],
    {},
    [1, 2, 3],
    { level: 1 },
    { level: 99 },
  ),
  // Own keys that name Object.prototype's members, as JSON.parse makes them.
  fc.constantFrom<Json>(
    JSON.parse('{"__proto__":"0123456789abcdef","constructor":"fedcba9876543210","pc.ram":"0000000000000000"}') as Json,
    JSON.parse('{"__proto__":1}') as Json,
    JSON.parse('{"toString":"0123456789abcdef"}') as Json,
  ),
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
  fc.string({ maxLength: 300 }),
  fc.tuple(fc.constantFrom(16, 17, 100, 10_000, 50_000), fc.constantFrom('[', '{')).map(([n, k]) => `\u0001deep:${n}:${k}`),
);

type Mutation =
  | { k: 'set'; key: string; value: Json }
  | { k: 'delete'; key: string }
  | { k: 'block'; index: number; key: string; value: Json }
  | { k: 'blocks'; count: number; size: number }
  | { k: 'bytes'; ops: ByteOp[] };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ k: fc.constant('set' as const), key: fc.constantFrom(...KEYS), value: edgeValue }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('delete' as const), key: fc.constantFrom(...KEYS) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('block' as const),
      index: fc.nat({ max: 70 }),
      key: fc.constantFrom('name', 'size', '__proto__', 'x'),
      value: edgeValue,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('blocks' as const),
      count: fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(0, 1, 2, 17) },
        { weight: 1, arbitrary: fc.constantFrom(MAX_RAMBLOCKS, MAX_RAMBLOCKS + 1) },
      ),
      size: fc.constantFrom(0, 4096, 2 ** 32, 2 ** 40, 2 ** 44, 2 ** 53 - 1),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('bytes' as const), ops: byteOps(3) }) },
);

function serialise(v: Json): string {
  return JSON.stringify(v).replace(/"\\u0001deep:(\d+):([[{])"/g, (_m, n: string, k: string) => {
    const d = Number(n);
    return k === '[' ? '['.repeat(d) + ']'.repeat(d) : '{"a":'.repeat(d) + '0' + '}'.repeat(d);
  });
}

function applyMutations(base: Record<string, Json>, muts: readonly Mutation[]): Uint8Array {
  const msg: Record<string, Json> = structuredClone(base);
  const ops: ByteOp[] = [];
  for (const m of muts) {
    if (m.k === 'set') Object.defineProperty(msg, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
    else if (m.k === 'delete') delete msg[m.key];
    else if (m.k === 'block') {
      const blocks = msg.ramblocks;
      if (Array.isArray(blocks) && blocks.length > 0) {
        const b = blocks[m.index % blocks.length];
        if (b !== null && typeof b === 'object' && !Array.isArray(b))
          Object.defineProperty(b, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      }
    } else if (m.k === 'blocks') msg.ramblocks = Array.from({ length: m.count }, (_, i) => ({ name: `b${i}`, size: m.size }));
    else ops.push(...m.ops);
  }
  const text = Buffer.from(serialise(msg), 'utf8');
  return ops.length ? applyByteOps(text, ops) : text;
}

type FrameInput = { kind: 'frame'; bytes: Uint8Array } | { kind: 'preamble'; bytes: Uint8Array };

/** The hellos of the corpus. */
export const HELLO_CORPUS = CONTROL_CORPUS.filter((m) => m.type === 'hello');

/** A hello frame body: a valid one mutated (fields, ramblocks, bytes), or as it is. */
export const helloBytes: fc.Arbitrary<Uint8Array> = fc
  .tuple(fc.constantFrom(...HELLO_CORPUS), fc.array(mutation, { maxLength: 3 }))
  .map(([m, muts]) => applyMutations(m, muts));

const frameBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(fc.constantFrom(...CONTROL_CORPUS), fc.array(mutation, { minLength: 1, maxLength: 3 }))
      .map(([m, muts]) => applyMutations(m, muts)),
  },
  { weight: 1, arbitrary: fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null', 'utf8')) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }) },
);

/** Re-checks what a decoded message promises to the code that acts on it. */
export function checkDecoded(m: ControlMessage, body: Uint8Array): void {
  const raw = JSON.parse(Buffer.from(body).toString('utf8')) as Record<string, unknown>;
  switch (m.type) {
    case 'hello': {
      if (m.version !== CONTROL_VERSION || !/^[0-9a-f-]{36}$/.test(m.uuid)) violation(`accepted hello version ${m.version} uuid ${m.uuid}`);
      if (!Number.isInteger(m.channels) || m.channels < 1 || m.channels > MAX_CHANNELS) violation(`accepted hello.channels ${m.channels}`);
      if (!(PAGE_SIZES as readonly number[]).includes(m.pageSize) || m.packetSize !== MULTIFD_PACKET_SIZE)
        violation(`accepted pageSize ${m.pageSize} packetSize ${m.packetSize}`);
      for (const k of ['compression', 'zeroPageDetection', 'digest'] as const)
        if (typeof m[k] !== 'string' || m[k].length > 64) violation(`accepted hello.${k}`);
      for (const v of Object.values(m.methodParams)) if (typeof v === 'object') violation('accepted an object in methodParams');
      if (!Array.isArray(m.ramblocks) || m.ramblocks.length > MAX_RAMBLOCKS) violation(`accepted ${m.ramblocks.length} ramblocks`);
      const names = new Set<string>();
      let total = 0;
      for (const b of m.ramblocks) {
        const bytes = Buffer.byteLength(b.name);
        if (bytes < 1 || bytes > RAMBLOCK_NAME_MAX || b.name.includes('\0') || names.has(b.name))
          violation(`accepted ramblock name ${JSON.stringify(b.name)}`);
        names.add(b.name);
        if (!Number.isSafeInteger(b.size) || b.size < 0) violation(`accepted ramblock size ${b.size}`);
        total += b.size;
      }
      if (total > MAX_TOTAL_RAM) violation(`accepted ramblocks of ${total} bytes in all, more than ${MAX_TOTAL_RAM}`);
      for (const b of m.ramblocks)
        if (b.source !== undefined && (typeof b.source !== 'string' || b.source.length > SOURCE_MAX))
          violation('accepted a bad ramblock source');
      if (m.resume !== undefined && m.resume !== true) violation(`kept hello.resume ${String(m.resume)}`);
      if (m.deltaSample !== undefined && (m.deltaSample !== true || m.delta !== true)) violation('kept hello.deltaSample without delta');
      if (m.deltaSampleOffer !== undefined && (m.deltaSampleOffer !== true || m.delta !== true))
        violation('kept hello.deltaSampleOffer without delta');
      return;
    }
    case 'sampleRequest': {
      if (Object.keys(m).length !== 1) violation('sampleRequest decoded with fields of its own');
      return;
    }
    case 'fingerprints':
    case 'sample': {
      const bytes = Buffer.from(m.entries, 'base64');
      if (bytes.toString('base64') !== m.entries || bytes.length % ENTRY_SIZE !== 0)
        violation(`accepted ${m.type}.entries that are not whole entries`);
      const max = m.type === 'sample' ? MAX_SAMPLE_ENTRIES : MAX_FINGERPRINTS_PER_FRAME;
      if (bytes.length > max * ENTRY_SIZE || (m.type === 'fingerprints' && bytes.length === 0))
        violation(`accepted ${bytes.length / ENTRY_SIZE} entries in ${m.type}`);
      if (
        m.type === 'sample' &&
        !(
          Number.isSafeInteger(m.stride) &&
          m.stride >= 1 &&
          m.stride <= MAX_SAMPLE_STRIDE &&
          Number.isSafeInteger(m.run) &&
          m.run >= 1 &&
          m.run <= m.stride
        )
      )
        violation(`accepted sample stride ${m.stride} run ${m.run}`);
      return;
    }
    case 'complete': {
      if (m.packets.length > MAX_CHANNELS || !m.packets.every((n) => Number.isSafeInteger(n) && n >= 0))
        violation('accepted bad packet counts');
      const sent = raw.digests as Record<string, unknown>;
      for (const k of Object.keys(sent)) {
        if (!Object.hasOwn(m.digests, k) || m.digests[k] !== sent[k]) violation(`complete.digests["${k}"] was accepted but lost`);
      }
      for (const [k, d] of Object.entries(m.digests))
        if (!/^[0-9a-f]{16}$/.test(d) || !Object.hasOwn(sent, k)) violation(`accepted digest ${k}=${d}`);
      return;
    }
    case 'verdict':
      if (m.ok !== true || typeof m.stats !== 'object' || m.stats === null) violation('accepted a verdict without stats');
      return;
    case 'error':
      if (typeof m.code !== 'string' || m.code.length > 64 || typeof m.message !== 'string' || m.message.length > 4096)
        violation('accepted an oversized error');
      return;
    case 'busy':
      if (typeof m.what !== 'string' || m.what.length > 64) violation('accepted an oversized busy.what');
      return;
    case 'ready': {
      if (m.delta?.skipped !== undefined && (m.delta.skipped !== true || m.delta.fingerprints !== 0))
        violation(`accepted ready.delta.skipped with ${m.delta.fingerprints} fingerprints`);
      if (m.have === undefined) return;
      const sent = raw.have as Record<string, unknown>;
      let numbers = 0;
      for (const [k, runs] of Object.entries(m.have)) {
        if (!Object.hasOwn(sent, k)) violation(`accepted ready.have["${k}"], which was not sent`);
        numbers += runs.length;
        let end = 0;
        for (let i = 0; i < runs.length; i += 2) {
          const [start, count] = [runs[i]!, runs[i + 1]];
          if (
            count === undefined ||
            !Number.isSafeInteger(start) ||
            !Number.isSafeInteger(count) ||
            start < end ||
            count < 1 ||
            start + count > MAX_TOTAL_RAM / 4096
          ) {
            violation(`accepted ready.have["${k}"] run ${i / 2}: ${start}+${count} after page ${end}`);
          }
          end = start + count;
        }
      }
      if (numbers > MAX_HAVE_NUMBERS) violation(`accepted ${numbers} numbers in ready.have`);
      for (const k of Object.keys(sent)) if (!Object.hasOwn(m.have, k)) violation(`ready.have["${k}"] was accepted but lost`);
      return;
    }
    case 'stash': {
      const bytes = Buffer.from(m.pages, 'base64');
      if (bytes.toString('base64') !== m.pages || bytes.length % 4 !== 0) violation('accepted stash.pages that are not whole u32s');
      if (bytes.length > MAX_STASH_PER_FRAME * 4) violation(`accepted ${bytes.length / 4} pages in a stash frame`);
      if (typeof m.last !== 'boolean') violation('accepted a stash.last that is not a boolean');
      return;
    }
    case 'stashed':
      if (!Number.isSafeInteger(m.pages) || m.pages < 0) violation(`accepted stashed.pages ${m.pages}`);
      return;
    default:
      violation(`decoded an unknown message type ${JSON.stringify((m as { type: unknown }).type)}`);
  }
}

export function controlFrameTarget(): FuzzTarget<FrameInput> {
  return {
    name: 'control-frame',
    corpusSize: CONTROL_CORPUS.length + 1,
    async: false,
    arbitrary: fc.oneof(
      { weight: 12, arbitrary: frameBytes.map((bytes) => ({ kind: 'frame' as const, bytes })) },
      {
        weight: 1,
        arbitrary: fc
          .oneof(
            fc.uint8Array({ maxLength: 12 }),
            byteOps(2).map((ops) => applyByteOps(encodePreamble(), ops)),
          )
          .map((bytes) => ({ kind: 'preamble' as const, bytes })),
      },
    ),
    run(x) {
      return outcome('control frame', () => {
        if (x.kind === 'preamble') {
          checkPreamble(x.bytes);
          if (x.bytes.length < CONTROL_PREAMBLE_SIZE || Buffer.from(x.bytes).readUInt32BE(4) !== CONTROL_VERSION)
            violation('accepted a bad preamble');
          return;
        }
        const m = decodeFrame(x.bytes);
        checkDecoded(m, x.bytes);
      });
    },
    close() {},
  };
}

/** A socket stand-in: ControlChannel only listens, writes, ends and destroys. */
class FakeSocket extends EventEmitter {
  destroyed = false;
  writable = true;
  written = 0;
  write(b: Uint8Array): boolean {
    this.written += b.length;
    return true;
  }
  end(): void {
    this.writable = false;
  }
  destroy(): void {
    this.destroyed = true;
    this.writable = false;
  }
}

interface StreamInput {
  frames: { body: Uint8Array; length: number | null }[];
  cuts: number[];
  /** Read messages as they come (a waiting receiver) or leave them queued (a busy one). */
  reader: boolean;
}

export function controlStreamTarget(): FuzzTarget<StreamInput> {
  const body = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...CONTROL_CORPUS.map((m) => Buffer.from(JSON.stringify(m)))) },
    { weight: 1, arbitrary: frameBytes },
  );
  return {
    name: 'control-stream',
    corpusSize: CONTROL_CORPUS.length,
    async: true,
    arbitrary: fc.record({
      frames: fc.oneof(
        fc.array(
          fc.record({
            body,
            // null: the true length; else a lie (short, long, oversize, 2^32 - 1).
            length: fc.option(fc.constantFrom(0, 1, 2, 100, CONTROL_FRAME_MAX, CONTROL_FRAME_MAX + 1, 0x7fffffff, 0xffffffff), { freq: 8 }),
          }),
          { maxLength: 8 },
        ),
        // A flood of good frames, maybe one oversize length at the end.
        fc
          .tuple(
            fc.integer({ min: 1, max: 3 * MAX_UNREAD_MESSAGES }),
            fc.constantFrom(...CONTROL_CORPUS.slice(4)),
            fc.option(fc.constantFrom(CONTROL_FRAME_MAX + 1, 0xffffffff)),
          )
          .map(([n, m, last]) => [
            ...Array.from({ length: n }, () => ({ body: Buffer.from(JSON.stringify(m)), length: null })),
            ...(last === null ? [] : [{ body: new Uint8Array(0), length: last }]),
          ]),
      ),
      cuts: fc.array(fc.nat({ max: 1 << 16 }), { maxLength: 8 }),
      reader: fc.boolean(),
    }),
    async run(x) {
      const chunks: Buffer[] = [];
      // An oversize length reached with every frame before it framed honestly: it must be refused as such.
      let honest = true;
      let oversizeReached = false;
      for (const f of x.frames) {
        const len = f.length ?? f.body.length;
        const h = Buffer.alloc(4);
        h.writeUInt32BE(len >>> 0);
        chunks.push(h, Buffer.from(f.body));
        if (honest && len > CONTROL_FRAME_MAX) oversizeReached = true;
        if (len !== f.body.length) honest = false;
      }
      const stream = Buffer.concat(chunks);
      const sock = new FakeSocket();
      const ch = new ControlChannel(sock as unknown as Socket, 'fuzz');
      const got: ControlMessage[] = [];
      let failure: unknown = null;
      const reading = (async () => {
        if (!x.reader) return;
        for (;;) got.push(await ch.next());
      })().catch((e: unknown) => {
        failure = e;
      });
      for (const piece of split(stream, x.cuts)) {
        if (sock.destroyed) break;
        sock.emit('data', Buffer.from(piece));
        await Promise.resolve();
      }
      sock.emit('close');
      await reading;
      if (!x.reader) {
        for (;;) {
          try {
            got.push(await ch.next());
          } catch (e) {
            failure = e;
            break;
          }
        }
        if (got.length > MAX_UNREAD_MESSAGES) violation(`${got.length} unread messages were queued, bound ${MAX_UNREAD_MESSAGES}`);
      }
      return outcomeAsync('control stream', async () => {
        if (failure === null) violation('the channel closed without an error');
        const e = typed(failure, 'control stream');
        if (oversizeReached && e.code === 'ERR_CONTROL_CLOSED') violation('an oversize frame length was not refused');
        throw e;
      });
    },
    close() {},
  };
}
