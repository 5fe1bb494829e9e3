/**
 * Delta transfer on the control channel (docs/control-protocol.md, "Delta"):
 * the sender's hello asks with `delta: true`; a receiver that offers bases
 * answers with `fingerprints` frames (its bases' page fingerprints, 16-byte
 * entries in base64) and then `ready` with `delta: {bases, fingerprints}`.
 * A hello without `delta` gets today's conversation, byte for byte.
 * The messages' shapes and checks, and the limits a migration file's bases
 * share: what delta transfer (src/delta/) says on the wire, not how it plans.
 */
import { ProtocolError } from '../errors.js';
import { describe } from '../text.js';

/** A fingerprint entry (addon/delta.cc): the top 96 bits of a page's XXH3-128, then its u32 page index. */
export const ENTRY_SIZE = 16;
/** No entry refers to this page index: page indices stop one below it. */
export const NO_MATCH = 0xffffffff;

/** Entries in one `fingerprints` frame at most: 2 MiB of entries, 2.7 MiB of base64, under the 4 MiB frame limit. */
export const MAX_FINGERPRINTS_PER_FRAME = 131072;
/** Entries in a `sample` frame at most: one frame's worth. */
export const MAX_SAMPLE_ENTRIES = MAX_FINGERPRINTS_PER_FRAME;
/** A sample's stride at most (pages): past it a sample says nothing of most of an image. */
export const MAX_SAMPLE_STRIDE = 1 << 24;

/** Bases a receiver may name. */
export const MAX_BASES = 4096;
/** A base's `inPlace` ram block index stays below this (the hello's ram blocks are fewer: MAX_RAMBLOCKS). */
const MAX_IN_PLACE_INDEX = 4096;
/** Base pages in all: page indices are u32 and NO_MATCH is none. */
export const MAX_BASE_PAGES = NO_MATCH - 1;

export interface Fingerprints {
  type: 'fingerprints';
  /** Base64 of n x 16-byte entries (addon/delta.cc). */
  entries: string;
}

/**
 * The sender's sampled pre-check, once the receiver asked for the sample a
 * hello's `deltaSampleOffer` offered (`sampleRequest`), or right after a hello
 * with `deltaSample` (the first form, still read): the fingerprints of its images' pages p with p % stride < run. A receiver none
 * of whose bases' pages at those places has one of them answers `ready` with
 * `delta.skipped` and fingerprints nothing more.
 */
export interface Sample {
  type: 'sample';
  stride: number;
  run: number;
  /** Base64 of n x 16-byte entries, sorted by key; empty when every sampled page is zero. */
  entries: string;
}

/**
 * The receiver's ask for the sample a hello's `deltaSampleOffer` offered: its
 * first frame, before it fingerprints anything. A receiver that does not send
 * it (one without `--delta`, or an mfd from before the sampled pre-check,
 * which would refuse a `sample` as an unknown frame) is never sent a sample.
 */
export interface SampleRequest {
  type: 'sampleRequest';
}

/**
 * A base the receiver offers. `inPlace` (the index of a ram block in the
 * hello): the base is that block's output, written in place (`mfd recv
 * --delta --in-place`), so its pages change as the migration goes; a sender
 * refers to page s of it for another page only while page s stays as it is
 * (a reference to that same page of it) or once it is stashed (`stash`). An older sender that ignores the
 * field is still caught: a page copied from a page overwritten meanwhile fails
 * the digest.
 */
export interface DeltaBaseOffer {
  name: string;
  pages: number;
  inPlace?: number;
}

export interface ReadyDelta {
  /** The bases, in the order references number them; pages = ceil(size / page size). */
  bases: DeltaBaseOffer[];
  /** Entries sent in the `fingerprints` frames before this `ready`. */
  fingerprints: number;
  /** No page of the bases' sample matched the sender's `sample`: no fingerprints were made (then 0). */
  skipped?: true;
}

/** Page indices in one `stash` frame at most: 2 MiB of u32, 2.7 MiB of base64, under the 4 MiB frame limit. */
export const MAX_STASH_PER_FRAME = 524288;

/**
 * The sender's list of the pages of bases written in place (`inPlace`) that
 * its references copy to other pages while their own page is overwritten: the
 * receiver copies them into a stash before any page is written, and such a
 * reference then reads from the stash. Sent after `ready`, before any data
 * channel connects, only to a receiver that named a base `inPlace`, and only
 * when the list is not empty; one or more frames, the last with `last`, which
 * the receiver answers with `stashed`. `pages`: base64 of u32 little-endian
 * page indices counting across the bases in order (as the fingerprint
 * entries'), strictly ascending across the frames.
 */
export interface Stash {
  type: 'stash';
  pages: string;
  last: boolean;
}

/** The receiver's answer to the last `stash` frame: the pages are stashed (their count); the sender then connects its channels. */
export interface Stashed {
  type: 'stashed';
  pages: number;
}

function fail(what: string): never {
  throw new ProtocolError('ERR_CONTROL_MESSAGE', `control channel: ${what}`);
}

/** `entries` of a frame of type `type`: base64 of min..max entries. */
function checkEntries(type: string, e: unknown, min: number, max: number): string {
  const chars = Math.ceil((max * ENTRY_SIZE) / 3) * 4;
  if (typeof e !== 'string' || e.length < min || e.length > chars || e.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(e)) {
    fail(
      `${type}.entries received ${typeof e === 'string' ? `a string of ${e.length} characters` : typeof e}, expected base64 of ${min}..${max} entries`,
    );
  }
  const bytes = (e.length / 4) * 3 - (e.endsWith('==') ? 2 : e.endsWith('=') ? 1 : 0);
  if (bytes % ENTRY_SIZE !== 0) fail(`${type}.entries holds ${bytes} bytes, expected a multiple of ${ENTRY_SIZE}`);
  return e;
}

export function checkFingerprints(v: Record<string, unknown>): Fingerprints {
  return { type: 'fingerprints', entries: checkEntries('fingerprints', v.entries, 1, MAX_FINGERPRINTS_PER_FRAME) };
}

export function checkStash(v: Record<string, unknown>): Stash {
  const e = v.pages;
  const chars = Math.ceil((MAX_STASH_PER_FRAME * 4) / 3) * 4;
  if (typeof e !== 'string' || e.length > chars || e.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(e))
    fail(
      `stash.pages received ${typeof e === 'string' ? `a string of ${e.length} characters` : typeof e}, expected base64 of at most ${MAX_STASH_PER_FRAME} page indices`,
    );
  const bytes = (e.length / 4) * 3 - (e.endsWith('==') ? 2 : e.endsWith('=') ? 1 : 0);
  if (bytes % 4 !== 0) fail(`stash.pages holds ${bytes} bytes, expected a multiple of 4 (u32 page indices)`);
  if (typeof v.last !== 'boolean') fail(`stash.last received ${typeof v.last}, expected a boolean`);
  return { type: 'stash', pages: e, last: v.last };
}

export function checkStashed(v: Record<string, unknown>): Stashed {
  const n = v.pages;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > MAX_BASE_PAGES)
    fail(`stashed.pages received ${describe(n)}, expected a count of at most ${MAX_BASE_PAGES}`);
  return { type: 'stashed', pages: n };
}

/** A `stash` frame's page indices (checked base64 of whole u32s). */
export function decodeStashPages(pages: string): Uint32Array {
  const b = Buffer.from(pages, 'base64');
  const out = new Uint32Array(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = b.readUInt32LE(i * 4);
  return out;
}

/** Page indices as a `stash` frame's `pages`. */
export function encodeStashPages(pages: Uint32Array): string {
  const b = Buffer.alloc(pages.length * 4);
  for (let i = 0; i < pages.length; i++) b.writeUInt32LE(pages[i]!, i * 4);
  return b.toString('base64');
}

export function checkSample(v: Record<string, unknown>): Sample {
  const { stride, run } = v;
  if (typeof stride !== 'number' || !Number.isSafeInteger(stride) || stride < 1 || stride > MAX_SAMPLE_STRIDE)
    fail(`sample.stride received ${describe(stride)}, expected an integer in 1..${MAX_SAMPLE_STRIDE}`);
  if (typeof run !== 'number' || !Number.isSafeInteger(run) || run < 1 || run > stride)
    fail(`sample.run received ${describe(run)}, expected an integer in 1..${stride} (the stride)`);
  return { type: 'sample', stride, run, entries: checkEntries('sample', v.entries, 0, MAX_SAMPLE_ENTRIES) };
}

export function checkReadyDelta(v: unknown): ReadyDelta {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('ready.delta is not an object');
  const o = v as Record<string, unknown>;
  if (!Array.isArray(o.bases) || o.bases.length > MAX_BASES) fail(`ready.delta.bases must be a list of at most ${MAX_BASES} bases`);
  let total = 0;
  const inPlaces = new Set<number>();
  const bases = o.bases.map((b: unknown, i: number) => {
    if (typeof b !== 'object' || b === null) fail(`ready.delta.bases[${i}] is not an object`);
    const { name, pages, inPlace } = b as Record<string, unknown>;
    if (typeof name !== 'string' || name.length > 4096) fail(`ready.delta.bases[${i}].name is not a string of at most 4096 characters`);
    if (typeof pages !== 'number' || !Number.isSafeInteger(pages) || pages < 0)
      fail(`ready.delta.bases[${i}].pages received ${describe(pages)}, expected a count`);
    if (
      inPlace !== undefined &&
      (typeof inPlace !== 'number' || !Number.isSafeInteger(inPlace) || inPlace < 0 || inPlace >= MAX_IN_PLACE_INDEX)
    )
      fail(`ready.delta.bases[${i}].inPlace received ${describe(inPlace)}, expected a ram block's index in the hello`);
    if (inPlace !== undefined && inPlaces.has(inPlace))
      fail(`ready.delta.bases[${i}].inPlace received ${inPlace}, which an earlier base already names (one base per ram block)`);
    if (inPlace !== undefined) inPlaces.add(inPlace);
    total += pages;
    if (total > MAX_BASE_PAGES) fail(`ready.delta.bases hold more than ${MAX_BASE_PAGES} pages`);
    return { name, pages, ...(inPlace !== undefined ? { inPlace } : {}) };
  });
  const n = o.fingerprints;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n > total)
    fail(`ready.delta.fingerprints received ${describe(n)}, expected a count of at most ${total} (the bases' pages)`);
  if (o.skipped !== undefined && (o.skipped !== true || n !== 0))
    fail(`ready.delta.skipped received ${describe(o.skipped)} with ${n} fingerprints, expected true with 0`);
  return { bases, fingerprints: n, ...(o.skipped === true ? { skipped: true as const } : {}) };
}
