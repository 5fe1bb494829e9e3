/**
 * The control channel: one TCP connection beside the N multifd channels that
 * carries what QEMU sends on its main channel or not at all: the ramblock
 * table, the parameters, completion with digests, and the receiver's verdict.
 * Layout: an 8-byte preamble ('MFDC', version), then frames of a big-endian
 * u32 length and that many bytes of UTF-8 JSON. docs/control-protocol.md has
 * the whole protocol; every frame is checked here before anything acts on it.
 */
import { ProtocolError } from '../errors.js';
import { describe } from '../text.js';
import { RAMBLOCK_NAME_MAX, PAGE_SIZES, MULTIFD_PACKET_SIZE } from '../wire/constants.js';
import {
  checkFingerprints,
  checkReadyDelta,
  checkSample,
  checkStash,
  checkStashed,
  type Fingerprints,
  type ReadyDelta,
  type Sample,
  type SampleRequest,
  type Stash,
  type Stashed,
} from './delta.js';

export const CONTROL_MAGIC = 0x4d464443; // 'MFDC'
export const CONTROL_VERSION = 1;
export const CONTROL_PREAMBLE_SIZE = 8;
/** Largest control frame accepted (a ramblock table of thousands of blocks fits). */
export const CONTROL_FRAME_MAX = 4 * 1024 * 1024;
export const MAX_CHANNELS = 255;
export const MAX_RAMBLOCKS = 4096;
/**
 * Most bytes a hello may declare, all ramblocks together: 64 TiB, more than
 * any QEMU guest runs with. The receiver's state per ramblock (its page
 * bitmap) grows with the pages that arrive, never with a declared size alone.
 */
export const MAX_TOTAL_RAM = 2 ** 46;
/** The digest every hello names; see src/digest.ts. */
export const DIGEST_ALGORITHM = 'crc32c-pages-v1';

export interface RamblockInfo {
  name: string;
  size: number;
  /**
   * The sender's identity of the image (size, modification time, inode): a
   * resume is refused when it differs from the one the receiver journaled.
   */
  source?: string;
}

/** Longest `ramblocks[i].source` accepted. */
export const SOURCE_MAX = 256;
/**
 * Most numbers `ready.have` may hold, all ramblocks together (start and count
 * of each run): 2^18, at most 12 bytes of JSON each, so the frame stays under
 * CONTROL_FRAME_MAX. A receiver holding more runs offers only its longest.
 */
export const MAX_HAVE_NUMBERS = 1 << 18;

export interface Hello {
  type: 'hello';
  version: number;
  uuid: string;
  channels: number;
  pageSize: number;
  packetSize: number;
  compression: string;
  /** Method parameters (levels), as the method's own setup reads them. */
  methodParams: Record<string, number | string | boolean>;
  zeroPageDetection: string;
  digest: string;
  ramblocks: RamblockInfo[];
  /** `mfd send --resume`: continue from the pages the receiver has durably written. */
  resume?: boolean;
  /** `mfd send --delta`: asks the receiver for its bases' fingerprints (src/control/delta.ts). */
  delta?: boolean;
  /**
   * With `delta`: a `sample` frame follows this hello at once (the sampled
   * pre-check, src/control/delta.ts). The earlier form of the pre-check: this
   * mfd reads it but sends `deltaSampleOffer` instead.
   */
  deltaSample?: boolean;
  /** With `delta`: the sender sends its `sample` when the receiver asks for it (`sampleRequest`, its first frame). */
  deltaSampleOffer?: boolean;
}

export interface Ready {
  type: 'ready';
  /**
   * Answer to a resume: per ramblock, the pages the receiver already holds,
   * as runs [start, count, start, count, ...] of page indices, ascending,
   * not overlapping.
   */
  have?: Record<string, number[]>;
  /** Answer to a hello with `delta`: the bases whose fingerprints the `fingerprints` frames before it carried. */
  delta?: ReadyDelta;
}

export interface Complete {
  type: 'complete';
  /** Packets (SYNC included) sent on each channel, by channel id. */
  packets: number[];
  /** Per-ramblock digest (hex), by name. */
  digests: Record<string, string>;
}

export interface Verdict {
  type: 'verdict';
  ok: true;
  /** Receiver's statistics, for the sender's summary. */
  stats: Record<string, unknown>;
}

/**
 * The receiver is working towards its verdict (verifying, flushing outputs):
 * sent every second after `complete`, so the sender's --timeout measures
 * silence, not the length of an `--fsync` of a large output.
 */
export interface Busy {
  type: 'busy';
  /** What it is doing, for logs. */
  what: string;
}

export interface ErrorMessage {
  type: 'error';
  code: string;
  message: string;
}

export type ControlMessage =
  Hello | Ready | Complete | Busy | Verdict | ErrorMessage | Fingerprints | Sample | SampleRequest | Stash | Stashed;

export function encodePreamble(): Buffer {
  const b = Buffer.alloc(CONTROL_PREAMBLE_SIZE);
  b.writeUInt32BE(CONTROL_MAGIC, 0);
  b.writeUInt32BE(CONTROL_VERSION, 4);
  return b;
}

export function checkPreamble(b: Uint8Array): void {
  if (b.length < CONTROL_PREAMBLE_SIZE) {
    throw new ProtocolError(
      'ERR_CONTROL_TRUNCATED',
      `control channel: preamble of ${b.length} bytes received, expected ${CONTROL_PREAMBLE_SIZE}`,
    );
  }
  const dv = new DataView(b.buffer, b.byteOffset, CONTROL_PREAMBLE_SIZE);
  const magic = dv.getUint32(0);
  if (magic !== CONTROL_MAGIC) {
    throw new ProtocolError(
      'ERR_CONTROL_MAGIC',
      `control channel: received magic 0x${magic.toString(16)}, expected 0x${CONTROL_MAGIC.toString(16)}`,
    );
  }
  const version = dv.getUint32(4);
  if (version !== CONTROL_VERSION) {
    throw new ProtocolError('ERR_CONTROL_VERSION', `control channel: received protocol version ${version}, expected ${CONTROL_VERSION}`);
  }
}

export function encodeFrame(msg: ControlMessage): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  const b = Buffer.allocUnsafe(4 + body.length);
  b.writeUInt32BE(body.length, 0);
  body.copy(b, 4);
  return b;
}

function fail(what: string): never {
  throw new ProtocolError('ERR_CONTROL_MESSAGE', `control channel: ${what}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deepest nesting accepted in verdict.stats (the receiver's own stats nest 3 levels). */
const MAX_STATS_DEPTH = 16;

/** True when `v` nests objects and arrays at most `max` levels deep (walked without recursion). */
function nestsAtMost(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 1]];
  while (stack.length > 0) {
    const [x, depth] = stack.pop()!;
    if (typeof x !== 'object' || x === null) continue;
    if (depth > max) return false;
    for (const c of Object.values(x)) if (typeof c === 'object' && c !== null) stack.push([c, depth + 1]);
  }
  return true;
}

/** The message type for an error message ("hello"), or what stands in its place. */
function describeType(o: Record<string, unknown>): string {
  return typeof o.type === 'string' && o.type.length <= 16 ? o.type : describe(o.type);
}

function int(o: Record<string, unknown>, key: string, min: number, max: number, owner = describeType(o)): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    fail(`${owner}.${key} received ${describe(v)}, expected an integer in ${min}..${max}`);
  }
  return v;
}

function str(o: Record<string, unknown>, key: string, maxLen = 256, owner = describeType(o)): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length > maxLen)
    fail(`${owner}.${key} received ${describe(v)}, expected a string of at most ${maxLen} characters`);
  return v;
}

/** Parses and checks one frame body. Anything unexpected is a ProtocolError. */
export function decodeFrame(body: Uint8Array): ControlMessage {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.length).toString('utf8'));
  } catch {
    fail(`frame of ${body.length} bytes is not valid JSON`);
  }
  if (!isObject(v)) fail('frame is not a JSON object');
  switch (v.type) {
    case 'hello':
      return checkHello(v);
    case 'ready':
      return {
        type: 'ready',
        ...(v.have === undefined ? {} : { have: checkHave(v.have) }),
        ...(v.delta === undefined ? {} : { delta: checkReadyDelta(v.delta) }),
      };
    case 'fingerprints':
      return checkFingerprints(v);
    case 'sample':
      return checkSample(v);
    case 'sampleRequest':
      return { type: 'sampleRequest' };
    case 'stash':
      return checkStash(v);
    case 'stashed':
      return checkStashed(v);
    case 'complete':
      return checkComplete(v);
    case 'verdict': {
      if (v.ok !== true || !isObject(v.stats)) fail('verdict without ok:true and stats');
      // The sender prints the receiver's stats (--json): JSON.stringify must not overflow the stack on them.
      if (!nestsAtMost(v.stats, MAX_STATS_DEPTH)) fail(`verdict.stats nests deeper than ${MAX_STATS_DEPTH} levels`);
      return { type: 'verdict', ok: true, stats: v.stats };
    }
    case 'busy':
      return { type: 'busy', what: str(v, 'what', 64) };
    case 'error':
      return { type: 'error', code: str(v, 'code', 64), message: str(v, 'message', 4096) };
    default:
      fail(`unknown message type ${describe(v.type)}`);
  }
}

function checkHello(v: Record<string, unknown>): Hello {
  const version = int(v, 'version', 0, 0xffffffff);
  if (version !== CONTROL_VERSION) fail(`hello.version received ${version}, expected ${CONTROL_VERSION}`);
  const uuid = str(v, 'uuid', 36);
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(uuid))
    fail(`hello.uuid received "${uuid}", expected a canonical uuid`);
  const pageSize = int(v, 'pageSize', 1, 65536);
  if (!(PAGE_SIZES as readonly number[]).includes(pageSize))
    fail(`hello.pageSize received ${pageSize}, expected one of ${PAGE_SIZES.join(', ')}`);
  const packetSize = int(v, 'packetSize', 1, 1 << 30);
  if (packetSize !== MULTIFD_PACKET_SIZE) fail(`hello.packetSize received ${packetSize}, expected ${MULTIFD_PACKET_SIZE}`);
  if (!isObject(v.methodParams)) fail('hello.methodParams is not an object');
  // Without a prototype: a key such as "__proto__" is kept as sent (and refused by the method), never dropped.
  const methodParams: Record<string, number | string | boolean> = Object.create(null) as Record<string, number | string | boolean>;
  for (const [k, p] of Object.entries(v.methodParams)) {
    if (typeof p !== 'number' && typeof p !== 'string' && typeof p !== 'boolean')
      fail(`hello.methodParams.${describe(k).slice(1, -1)} has an unsupported type`);
    methodParams[k] = p;
  }
  if (!Array.isArray(v.ramblocks) || v.ramblocks.length > MAX_RAMBLOCKS)
    fail(`hello.ramblocks must be a list of at most ${MAX_RAMBLOCKS} ramblocks`);
  const seen = new Set<string>();
  let total = 0;
  const ramblocks = v.ramblocks.map((b: unknown, i: number): RamblockInfo => {
    if (!isObject(b)) fail(`hello.ramblocks[${i}] is not an object`);
    const name = str(b, 'name', 1024, `hello.ramblocks[${i}]`);
    const bytes = Buffer.byteLength(name, 'utf8');
    if (bytes === 0 || bytes > RAMBLOCK_NAME_MAX || name.includes('\0')) {
      fail(`hello.ramblocks[${i}].name is ${bytes} bytes, expected 1..${RAMBLOCK_NAME_MAX} bytes without NUL`);
    }
    if (seen.has(name)) fail(`hello.ramblocks[${i}].name "${name}" appears twice`);
    seen.add(name);
    const size = int(b, 'size', 0, MAX_TOTAL_RAM, `hello.ramblocks[${i}]`);
    total += size;
    if (total > MAX_TOTAL_RAM)
      fail(`hello.ramblocks[${i}].size brings the ramblocks to ${total} bytes, expected at most ${MAX_TOTAL_RAM} (64 TiB) in all`);
    return b.source === undefined ? { name, size } : { name, size, source: str(b, 'source', SOURCE_MAX, `hello.ramblocks[${i}]`) };
  });
  if (v.resume !== undefined && typeof v.resume !== 'boolean') fail(`hello.resume received ${describe(v.resume)}, expected true or false`);
  if (v.delta !== undefined && typeof v.delta !== 'boolean') fail(`hello.delta received ${describe(v.delta)}, expected true or false`);
  if (v.deltaSample !== undefined && typeof v.deltaSample !== 'boolean')
    fail(`hello.deltaSample received ${describe(v.deltaSample)}, expected true or false`);
  if (v.deltaSampleOffer !== undefined && typeof v.deltaSampleOffer !== 'boolean')
    fail(`hello.deltaSampleOffer received ${describe(v.deltaSampleOffer)}, expected true or false`);
  return {
    type: 'hello',
    version,
    uuid,
    channels: int(v, 'channels', 1, MAX_CHANNELS),
    pageSize,
    packetSize,
    compression: str(v, 'compression', 32),
    methodParams,
    zeroPageDetection: str(v, 'zeroPageDetection', 32),
    digest: str(v, 'digest', 64),
    ramblocks,
    ...(v.resume === true ? { resume: true } : {}),
    ...(v.delta === true ? { delta: true } : {}),
    ...(v.delta === true && v.deltaSample === true ? { deltaSample: true } : {}),
    ...(v.delta === true && v.deltaSampleOffer === true ? { deltaSampleOffer: true } : {}),
  };
}

/**
 * `ready.have`: per ramblock, runs of page indices as [start, count, ...],
 * ascending and not overlapping, each count at least 1, the last page below
 * 2^46 / 4096. Whether a name is one of the sender's ramblocks, and whether
 * the runs fit its size, the sender checks against its own table.
 */
/**
 * The index of the first bad run of `runs` ([start, count, ...] of page
 * indices): not safe integers, overlapping or out of order, a count below 1,
 * or ending past `pages`; -1 when all are good. `ready.have` and the
 * receiver's journal hold their runs to this.
 */
export function badRun(runs: readonly unknown[], pages: number): number {
  let end = 0;
  for (let i = 0; i < runs.length; i += 2) {
    const start = runs[i];
    const count = runs[i + 1];
    if (
      typeof start !== 'number' ||
      !Number.isSafeInteger(start) ||
      start < end ||
      typeof count !== 'number' ||
      !Number.isSafeInteger(count) ||
      count < 1 ||
      start + count > pages
    )
      return i / 2;
    end = start + count;
  }
  return -1;
}

function checkHave(have: unknown): Record<string, number[]> {
  if (!isObject(have)) fail(`ready.have received ${describe(have)}, expected an object`);
  const out: Record<string, number[]> = Object.create(null) as Record<string, number[]>;
  const maxPage = MAX_TOTAL_RAM / 4096;
  let numbers = 0;
  for (const [name, runs] of Object.entries(have)) {
    const where = `ready.have[${describe(name)}]`;
    if (!Array.isArray(runs) || runs.length % 2 !== 0) fail(`${where} received ${describe(runs)}, expected a list of [start, count] pairs`);
    numbers += runs.length;
    if (numbers > MAX_HAVE_NUMBERS) fail(`ready.have holds more than ${MAX_HAVE_NUMBERS} numbers`);
    const bad = badRun(runs, maxPage);
    if (bad >= 0) {
      const end = bad > 0 ? (runs[2 * bad - 2] as number) + (runs[2 * bad - 1] as number) : 0;
      fail(
        `${where} run ${bad} received start ${describe(runs[2 * bad])} count ${describe(runs[2 * bad + 1])}, expected start >= ${end}, count >= 1, end <= ${maxPage}`,
      );
    }
    out[name] = runs as number[];
  }
  return out;
}

function checkComplete(v: Record<string, unknown>): Complete {
  if (!Array.isArray(v.packets) || v.packets.length > MAX_CHANNELS) fail('complete.packets must be a list of per-channel counts');
  const packets = v.packets.map((n: unknown, i: number) => {
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)
      fail(`complete.packets[${i}] received ${describe(n)}, expected a count`);
    return n;
  });
  if (!isObject(v.digests)) fail('complete.digests is not an object');
  // Without a prototype: a ramblock named "__proto__" or "constructor" keeps its digest, and a name
  // the sender did not list finds nothing (not Object.prototype's members).
  const digests: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, d] of Object.entries(v.digests)) {
    if (typeof d !== 'string' || !/^[0-9a-f]{16}$/.test(d))
      fail(`complete.digests[${describe(k)}] received ${describe(d)}, expected a 16-digit hex digest`);
    digests[k] = d;
  }
  return { type: 'complete', packets, digests };
}
