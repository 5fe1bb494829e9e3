/**
 * The sender's side of delta transfer. With `--delta` the hello asks for the
 * receiver's fingerprints; they arrive as `fingerprints` frames before
 * `ready`, into one sorted table (16 bytes per base page). Before any page
 * moves, every image is fingerprinted (addon, all cores) and each non-zero
 * page is
 *   - a base reference when the table holds its fingerprint,
 *   - else a migration reference when an earlier page of the migration (by
 *     image page order) has the same fingerprint and goes as data,
 *   - else data, through the chosen method (zero pages stay zero pages).
 * References travel first, in reference packets (wire.ts); the pages they
 * cover are not sent as data but digested all the same, from the CRCs taken
 * while fingerprinting, so the verdict still means byte-identical.
 *
 * The sampled pre-check: for images of SAMPLE_MIN_PAGES pages or more, the
 * hello says `deltaSampleOffer`, and when the receiver's first frame asks for
 * it (`sampleRequest`), a `sample` frame follows, the fingerprints of 1 page
 * in 64 (runs of 16 every 1024). A receiver that does not ask (an mfd from
 * before the pre-check, which refuses a `sample` as an unknown frame; one
 * without `--delta`) is sent none: it fingerprints its bases whole, or offers
 * none, as it always did. A receiver whose bases hold none of
 * them at the same places of its own sample answers `ready` with
 * `delta.skipped` at once; the images are then not fingerprinted at all (every
 * page goes as data, as in a plain send) unless the sample held a page twice
 * (then only copies within the migration are looked for). Otherwise the
 * images are fingerprinted from the receiver's first `fingerprints` frame on.
 */
import { ProtocolError, RemoteError, UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ControlMessage } from '../control/protocol.js';
import type { SendBlock, SendPipeline } from '../sender/pipeline.js';
import type { SendExtension } from '../sender/sender.js';
import {
  ENTRY_SIZE,
  NO_MATCH,
  SAMPLE_MIN_PAGES,
  SAMPLE_RUN,
  entryIndex,
  partOf,
  fingerprintFile,
  fingerprintSample,
  matchEntries,
  decodeEntries,
  releaseBuffers,
  tableBuffer,
  tableMemory,
  sameKey,
  sampleStride,
  sortEntries,
} from './fingerprint.js';
import { MAX_STASH_PER_FRAME, encodeStashPages, type Fingerprints, type ReadyDelta } from '../control/delta.js';
import type { DeltaCounts } from '../stats/stats.js';
import { MAX_REFS_PER_PACKET, MFD_FLAG_DELTA_REF, SOURCE_MIGRATION, SOURCE_ZERO, encodeRefs, type PageRef } from '../wire/delta-ref.js';

/** Pages one reference packet stands for at most (but for a single longer run): 32 MiB of 4 KiB pages. */
const REF_PACKET_PAGES = 8192;

/** The reference packets of one migration, and the pages they cover per block (runs), not sent as data. */
export interface DeltaPlan {
  packets: { block: SendBlock; flags: number; payload: Uint8Array; pages: number }[];
  held: Map<SendBlock, number[]>;
  basePages: number;
  migrationPages: number;
  /** Zero pages beside references, sent in the reference packets. */
  zeroPages: number;
  /** Pages whose fingerprint matched a page with another CRC-32C (a collision, caught before sending): sent as data. */
  collisions: number;
  bases: ReadyDelta['bases'];
  /**
   * Pages of bases written in place (table indices, ascending) that the
   * receiver stashes before any page is written: its references read them
   * from there (see keepInPlace).
   */
  stash: Uint32Array;
}

/**
 * Delta transfer for the network sender (its SendExtension, wired in by
 * src/migrate/): the hello asks with `delta: true`; the answer's
 * `fingerprints` frames before `ready` are the receiver's table; when `ready`
 * offers bases, the plan's reference packets go before any page, and its
 * counts into the run's statistics.
 */
export function deltaSender(): SendExtension {
  let plan: DeltaPlan | null = null;
  return {
    hello: (p) => ({ delta: true, ...(sampled(p) ? { deltaSampleOffer: true } : {}) }),
    async answer(next, p, log, send) {
      const answer = await deltaAnswer(next, p, log, send);
      plan = answer.plan;
      return answer.ready;
    },
    stats(stats, p) {
      if (plan) stats.delta = deltaCounts(plan, stats.normalPages, stats.zeroPages, p.pageSize, p.headerSize);
    },
  };
}

function imagePages(blocks: readonly SendBlock[], pageSize: number): number {
  return blocks.reduce((a, b) => a + Math.ceil(b.source.size / pageSize), 0);
}

/** Whether this migration offers a sample: what the hello's `deltaSampleOffer` says and the answer then does. */
function sampled(p: SendPipeline): boolean {
  return imagePages(p.blocks, p.pageSize) >= SAMPLE_MIN_PAGES;
}

/**
 * Reads the answer to a hello with `delta` (sending the `sample` its
 * `deltaSampleOffer` offered when the receiver asks for it): the
 * `fingerprints` frames before `ready`. Returns that answer and, when `ready`
 * offers bases, the plan (already handed to the pipeline).
 */
async function deltaAnswer(
  next: (what?: string) => Promise<ControlMessage>,
  p: SendPipeline,
  log: Logger,
  send: (m: ControlMessage) => void,
): Promise<{ ready: ControlMessage; plan: DeltaPlan | null }> {
  // The images are fingerprinted while the receiver fingerprints its bases; stopped when no plan needs them.
  const stop = new AbortController();
  let prints: Promise<ImagePrints> | null = null;
  const start = (): Promise<ImagePrints> => {
    if (!prints) {
      prints = fingerprintImages(p.blocks, p.pageSize, stop.signal);
      prints.catch(() => {}); // awaited once the receiver has answered
    }
    return prints;
  };
  let repeats: number | null = null;
  let first: ControlMessage | null = null;
  if (sampled(p)) {
    first = await next();
    if (first.type === 'sampleRequest') {
      repeats = await sendSample(p.blocks, p.pageSize, send);
      first = null;
    } else if (first.type === 'fingerprints')
      log.info(
        'delta: the receiver did not ask for a sample (an mfd from before the sampled pre-check): the images are fingerprinted whole',
      );
  } else start();
  try {
    return await answerDelta(first, next, p, log, start, repeats, send);
  } finally {
    stop.abort(new Error('delta: the images are fingerprinted no more (no plan needs them)'));
  }
}

/** Fingerprints the images' sample and sends it (`sample`); returns how many sampled pages repeat one before them. */
async function sendSample(blocks: readonly SendBlock[], pageSize: number, send: (m: ControlMessage) => void): Promise<number> {
  const total = imagePages(blocks, pageSize);
  const stride = sampleStride(total);
  const chunks: Buffer[] = [];
  let first = 0;
  for (const b of blocks) {
    await fingerprintSample(b.source.fd, b.source.size, pageSize, first, stride, SAMPLE_RUN, `image "${b.source.path}"`, (e, n) => {
      chunks.push(Buffer.from(e.subarray(0, n * ENTRY_SIZE)));
    });
    first += Math.ceil(b.source.size / pageSize);
  }
  const n = chunks.reduce((a, c) => a + c.length, 0) / ENTRY_SIZE;
  const entries = joinEntries(chunks, n);
  await sortEntries(entries, n);
  let repeats = 0;
  for (let i = 1; i < n; i++) if (sameKey(entries, i, entries, i - 1)) repeats++;
  send({ type: 'sample', stride, run: SAMPLE_RUN, entries: entries.toString('base64') });
  releaseBuffers(entries);
  return repeats;
}

/** A plan without references (every page as data): its counts for the summary. */
function emptyPlan(bases: ReadyDelta['bases']): DeltaPlan {
  return { packets: [], held: new Map(), basePages: 0, migrationPages: 0, zeroPages: 0, collisions: 0, bases, stash: new Uint32Array(0) };
}

/** The answer from `first` (the answer's first frame, when already read) on. */
async function answerDelta(
  first: ControlMessage | null,
  next: (what?: string) => Promise<ControlMessage>,
  p: SendPipeline,
  log: Logger,
  start: () => Promise<ImagePrints>,
  repeats: number | null,
  send: (m: ControlMessage) => void,
): Promise<{ ready: ControlMessage; plan: DeltaPlan | null }> {
  const chunks: Buffer[] = [];
  let count = 0;
  let m = first ?? (await next());
  while (m.type === 'fingerprints') {
    // The receiver's sample matched (it fingerprints its bases whole): so do we, beside it.
    start();
    const b = decodeEntries((m as Fingerprints).entries);
    chunks.push(b);
    count += b.length / ENTRY_SIZE;
    m = await next();
  }
  if (m.type !== 'ready' || !m.delta) {
    if (m.type === 'ready') log.warn('the receiver offers no bases (mfd recv without --delta): every page goes as data');
    return { ready: m, plan: null };
  }
  const offer = m.delta;
  if (count !== offer.fingerprints)
    throw new ProtocolError(
      'ERR_CONTROL_MESSAGE',
      `control channel: ready.delta.fingerprints received ${offer.fingerprints}, expected ${count} (the entries of the fingerprints frames)`,
    );
  if (offer.skipped) {
    if (repeats === null)
      throw new ProtocolError('ERR_CONTROL_MESSAGE', 'control channel: ready.delta.skipped received, but this migration sent no sample');
    if (repeats === 0) {
      log.info(
        { bases: offer.bases.length },
        "delta: no sampled page matched the receiver's bases or repeated another: every page goes as data",
      );
      return { ready: m, plan: emptyPlan(offer.bases) };
    }
    log.info({ repeats }, "delta: no sampled page matched the receiver's bases: looking for copies within the migration only");
  }
  const table = joinEntries(chunks, count);
  chunks.length = 0;
  const basePages = offer.bases.reduce((a, b) => a + b.pages, 0);
  const words = entryWords(table);
  for (let i = 0; i < count; i++) {
    const idx = words ? words[i * 4 + 3]! : entryIndex(table, i);
    if (idx >= basePages)
      throw new ProtocolError(
        'ERR_CONTROL_MESSAGE',
        `control channel: fingerprint ${i} names base page ${idx}, expected below ${basePages} (the bases' pages)`,
      );
  }
  await sortEntries(table, count);
  const prints = await start();
  const plan = await planDelta(p.blocks, p.pageSize, prints, table, count, offer);
  // The table and the images' fingerprints are done with: freed before the channels' contexts are made.
  releaseBuffers(table, prints.entries, prints.nonzero, ...prints.crcs);
  p.sendFirst(plan.packets, (b) => plan.held.get(b) ?? []);
  log.info(
    {
      bases: offer.bases.length,
      fingerprints: count,
      basePages: plan.basePages,
      migrationPages: plan.migrationPages,
      stashPages: plan.stash.length,
    },
    'delta transfer planned',
  );
  if (plan.stash.length > 0) await sendStash(plan.stash, next, send);
  return { ready: m, plan };
}

/**
 * Sends the stash (`stash` frames, the last with `last`) and waits for the
 * receiver's `stashed`: only then may a page be written, so the channels
 * connect after it.
 */
async function sendStash(
  stash: Uint32Array,
  next: (what?: string) => Promise<ControlMessage>,
  send: (m: ControlMessage) => void,
): Promise<void> {
  for (let i = 0; i < stash.length; i += MAX_STASH_PER_FRAME) {
    const part = stash.subarray(i, i + MAX_STASH_PER_FRAME);
    send({ type: 'stash', pages: encodeStashPages(part), last: i + part.length === stash.length });
  }
  const m = await next('"stashed", the answer to the stash');
  if (m.type === 'error') throw new RemoteError('receiver', m.code, m.message);
  if (m.type !== 'stashed' || m.pages !== stash.length)
    throw new ProtocolError(
      'ERR_CONTROL_UNEXPECTED',
      `control channel: received ${m.type === 'stashed' ? `stashed with ${m.pages} pages` : `"${m.type}"`}, expected "stashed" with ${stash.length} pages`,
    );
}

/**
 * The `fingerprints` frames' entries (`count` in all) as one table: the
 * frames copied into it one by one, each freed once copied, so the table and
 * its frames are never held twice over.
 */
export function joinEntries(chunks: readonly Buffer[], count: number): Buffer {
  if (chunks.length === 1) return chunks[0]!;
  const table = tableBuffer(count * ENTRY_SIZE);
  let at = 0;
  for (const c of chunks) {
    table.set(c, at);
    at += c.length;
    releaseBuffers(c);
  }
  return table;
}

function prefix(sizes: readonly number[]): number[] {
  const out: number[] = [];
  let a = 0;
  for (const s of sizes) {
    out.push(a);
    a += s;
  }
  return out;
}

/** Fingerprints the images and decides, page by page, what travels as a reference. */
/** The images' fingerprints: each non-zero page's entry (page indices across the images), each page's CRC-32C. */
export interface ImagePrints {
  entries: Buffer;
  count: number;
  crcs: Uint32Array[];
  /** Pages with an entry; the others are zero pages. */
  nonzero: Uint8Array;
}

/** Fingerprints every page of the images (while the receiver fingerprints its bases); `signal` stops it. */
export async function fingerprintImages(
  blocks: readonly SendBlock[],
  pageSize: number,
  signal: AbortSignal | null = null,
): Promise<ImagePrints> {
  const pagesOf = blocks.map((b) => Math.ceil(b.source.size / pageSize));
  const total = pagesOf.reduce((a, n) => a + n, 0);
  if (total >= NO_MATCH)
    throw new UsageError(`--delta: the images hold ${total} pages, more than delta transfer indexes (${NO_MATCH - 1})`);
  const blockStart = prefix(pagesOf);
  const nonzero = new Uint8Array(tableMemory(total));
  const crcs = pagesOf.map((n) => new Uint32Array(tableMemory(n * 4)));
  let entries = tableBuffer(Math.min(total, 65536) * ENTRY_SIZE);
  let count = 0;
  for (const [k, b] of blocks.entries()) {
    await fingerprintFile(
      b.source.fd,
      b.source.size,
      pageSize,
      blockStart[k]!,
      `image "${b.source.path}"`,
      (batch, n) => {
        if ((count + n) * ENTRY_SIZE > entries.length) {
          const grown = tableBuffer(Math.min(total, Math.max(count + n, 2 * (entries.length / ENTRY_SIZE))) * ENTRY_SIZE);
          entries.copy(grown, 0, 0, count * ENTRY_SIZE);
          releaseBuffers(entries);
          entries = grown;
        }
        entries.set(batch.subarray(0, n * ENTRY_SIZE), count * ENTRY_SIZE);
        const w = entryWords(batch);
        if (w) for (let i = 0; i < n; i++) nonzero[w[i * 4 + 3]!] = 1;
        else for (let i = 0; i < n; i++) nonzero[entryIndex(batch, i)] = 1;
        count += n;
      },
      crcs[k]!,
      null,
      signal,
      { pages: false },
    );
  }
  return { entries, count, crcs, nonzero };
}

/**
 * Matches the images' fingerprints against the bases' table and decides,
 * page by page, what travels as a reference. A copy within the migration
 * needs the same CRC-32C as its source too; with `baseCrcs` (each base
 * page's CRC-32C, by table index: known when the sender read the bases
 * itself, at rest) so does a base reference. A page that fails this is a
 * fingerprint collision and goes as data.
 */
export async function planDelta(
  blocks: readonly SendBlock[],
  pageSize: number,
  prints: ImagePrints,
  table: Uint8Array,
  tableCount: number,
  offer: ReadyDelta,
  baseCrcs: Uint32Array | null = null,
): Promise<DeltaPlan> {
  const pagesOf = blocks.map((b) => Math.ceil(b.source.size / pageSize));
  const total = pagesOf.reduce((a, n) => a + n, 0);
  const blockStart = prefix(pagesOf);
  // One image (the usual case): its CRCs are indexed by the global page index itself.
  const only = prints.crcs.length === 1 ? prints.crcs[0]! : null;
  const crcAt = (g: number): number => {
    if (only) return only[g]!;
    const k = partOf(blockStart, g);
    return prints.crcs[k]![g - blockStart[k]!]!;
  };
  let collisions = 0;
  const baseStart = prefix(offer.bases.map((b) => b.pages));
  const baseRef = new Uint32Array(tableMemory(total * 4)).fill(NO_MATCH);
  const dupOf = new Uint32Array(tableMemory(total * 4)).fill(NO_MATCH);
  const { nonzero, crcs } = prints;
  // The entries no base holds are kept, in place, to find the copies among them.
  const unmatched = prints.entries;
  let u = 0;
  const CHUNK = 65536;
  const found = new Uint32Array(tableMemory(CHUNK * 4));
  const words = entryWords(unmatched);
  // Bases written in place (`inPlace`: the receiver's output of that ram block, its base and target at
  // once): a page of one is referred to for another page only when it stays as it is (see keepInPlace).
  const inPlaceOf = offer.bases.map((b) => b.inPlace);
  const anyInPlace = inPlaceOf.some((k) => k !== undefined);
  // Whether base page `t` (table index) is of a base written in place, and image page `g` is not its own page.
  const movedInPlace = (t: number, g: number): boolean => {
    const part = baseStart.length === 1 ? 0 : partOf(baseStart, t);
    const k = inPlaceOf[part];
    return k !== undefined && (k >= blocks.length || g !== blockStart[k]! + t - baseStart[part]!);
  };
  for (let at = 0; at < prints.count; at += CHUNK) {
    const n = Math.min(CHUNK, prints.count - at);
    const view = unmatched.subarray(at * ENTRY_SIZE, (at + n) * ENTRY_SIZE);
    if (tableCount > 0) matchEntries(table, tableCount, view, n, found);
    else found.fill(NO_MATCH);
    const taken = takeMatches(unmatched, words, at, n, found, baseRef, baseCrcs, crcAt, anyInPlace ? movedInPlace : null, u);
    u = taken.u;
    collisions += taken.collisions;
    // Let the event loop breathe between chunks (the control channel, timers).
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  // A zero page right after a base reference continues that reference when the base's next page is
  // zero too (it has no entry: every non-zero base page has one), so a run of references is not cut
  // at every zero page the image and its base share. The digest still proves the page zero.
  const baseZeroBits = zeroBasePages(table, tableCount, baseStart, offer);
  const baseZero = (t: number): boolean => t < baseZeroBits.pages && (baseZeroBits.bits[t >>> 3]! & (1 << (t & 7))) === 0;
  for (const [k] of blocks.entries()) continueZeroRuns(blockStart[k]!, blockStart[k]! + pagesOf[k]!, nonzero, baseRef, baseZero, baseStart);
  let stash: Uint32Array = new Uint32Array(0);
  if (anyInPlace) {
    const basePages = offer.bases.map((b) => b.pages);
    ({ kept: u, stash } = keepInPlace(blockStart, pagesOf, baseStart, basePages, inPlaceOf, movedInPlace, baseRef, unmatched, words, u));
  }
  // Sorted by key then index: the first of each run of equal keys goes as data, the others refer to it.
  await sortEntries(unmatched, u);
  for (let i = 1, first = 0; i < u; i++) {
    if (!sameEntryKey(unmatched, words, i, first)) first = i;
    else if (crcAt(entryIndex(unmatched, i)) === crcAt(entryIndex(unmatched, first)))
      dupOf[entryIndex(unmatched, i)] = entryIndex(unmatched, first);
    else collisions++;
  }
  const plan: DeltaPlan = {
    packets: [],
    held: new Map(),
    basePages: 0,
    migrationPages: 0,
    zeroPages: 0,
    collisions,
    bases: offer.bases,
    stash,
  };
  for (const [k, b] of blocks.entries()) {
    const n = pagesOf[k]!;
    const from = blockStart[k]!;
    // Runs of zero pages with a reference on either side go as zero references.
    const zeroRef = zeroRefRuns(nonzero, baseRef, dupOf, from, n);
    const { refs, held } = blockRefs(b, crcs[k]!, from, n, baseRef, dupOf, zeroRef, baseStart, blockStart, plan);
    releaseBuffers(zeroRef);
    if (held.length > 0) plan.held.set(b, held);
    // A packet ends at MAX_REFS_PER_PACKET references or REF_PACKET_PAGES pages: the receiver's copies spread over the channels.
    for (let i = 0; i < refs.length;) {
      let j = i;
      let pages = 0;
      while (j < refs.length && j - i < MAX_REFS_PER_PACKET && (pages === 0 || pages + refs[j]!.count <= REF_PACKET_PAGES))
        pages += refs[j++]!.count;
      plan.packets.push({ block: b, flags: MFD_FLAG_DELTA_REF, payload: encodeRefs(refs.slice(i, j)), pages });
      i = j;
    }
  }
  releaseBuffers(baseRef, dupOf, found, baseZeroBits.bits);
  return plan;
}

/*
 * planDelta's passes over every page, each a function of its own: V8 optimises a function for the
 * loop it runs first, and one function of several such loops was thrown back to the interpreter
 * (and compiled again) at the start of each next loop.
 */

/**
 * planDelta's matching of entries at..at+n-1 (`found`: their table matches): base references into
 * `baseRef`; the entries no base reference stands for (nor one `movedInPlace` may drop) moved down
 * to `u` on, kept to look for copies among them. The new `u`, and the collisions found.
 */
function takeMatches(
  unmatched: Uint8Array,
  words: Uint32Array | null,
  at: number,
  n: number,
  found: Uint32Array,
  baseRef: Uint32Array,
  baseCrcs: Uint32Array | null,
  crcAt: (g: number) => number,
  movedInPlace: ((t: number, g: number) => boolean) | null,
  u: number,
): { u: number; collisions: number } {
  let collisions = 0;
  for (let i = 0; i < n; i++) {
    const e = at + i;
    const g = words ? words[e * 4 + 3]! : entryIndex(unmatched, e);
    const f = found[i]!;
    const collided = f !== NO_MATCH && baseCrcs !== null && baseCrcs[f] !== crcAt(g);
    if (collided) collisions++;
    if (f !== NO_MATCH && !collided) baseRef[g] = f;
    // A reference to another page of a base written in place may be dropped (keepInPlace): its entry stays.
    if (f === NO_MATCH || collided || (movedInPlace !== null && movedInPlace(f, g))) {
      if (u !== e) {
        if (words) {
          words[u * 4] = words[e * 4]!;
          words[u * 4 + 1] = words[e * 4 + 1]!;
          words[u * 4 + 2] = words[e * 4 + 2]!;
          words[u * 4 + 3] = words[e * 4 + 3]!;
        } else unmatched.copyWithin(u * ENTRY_SIZE, e * ENTRY_SIZE, (e + 1) * ENTRY_SIZE);
      }
      u++;
    }
  }
  return { u, collisions };
}

/** Zero pages g in [from, to) right after a base reference continue it where the base's next page is zero too (`baseZero`), in the same base. */
function continueZeroRuns(
  from: number,
  to: number,
  nonzero: Uint8Array,
  baseRef: Uint32Array,
  baseZero: (t: number) => boolean,
  baseStart: readonly number[],
): void {
  for (let g = from + 1; g < to; g++) {
    if (nonzero[g] || baseRef[g - 1] === NO_MATCH) continue;
    const t = baseRef[g - 1]! + 1;
    if (baseZero(t) && (baseStart.length === 1 || partOf(baseStart, t) === partOf(baseStart, t - 1))) baseRef[g] = t;
  }
}

/** A flag for each of the `n` pages of a block (from global page `from`): zero pages in a run with a reference on either side. */
function zeroRefRuns(nonzero: Uint8Array, baseRef: Uint32Array, dupOf: Uint32Array, from: number, n: number): Uint8Array {
  const zeroRef = new Uint8Array(tableMemory(n));
  const isRef = (page: number): boolean => baseRef[from + page] !== NO_MATCH || dupOf[from + page] !== NO_MATCH;
  for (let a = 0; a < n;) {
    if (nonzero[from + a]) {
      a++;
      continue;
    }
    let z = a;
    while (z < n && !nonzero[from + z]) z++;
    if ((a > 0 && isRef(a - 1)) || (z < n && isRef(z))) zeroRef.fill(1, a, z);
    a = z;
  }
  return zeroRef;
}

/** A block's references (runs) and the pages they hold back from the data (runs: page, count), each such page digested; counted into `plan`. */
function blockRefs(
  b: SendBlock,
  crc: Uint32Array,
  from: number,
  n: number,
  baseRef: Uint32Array,
  dupOf: Uint32Array,
  zeroRef: Uint8Array,
  baseStart: readonly number[],
  blockStart: readonly number[],
  plan: DeltaPlan,
): { refs: PageRef[]; held: number[] } {
  const refs: PageRef[] = [];
  const held: number[] = [];
  let last: PageRef | null = null;
  let base = 0;
  let zero = 0;
  let migration = 0;
  for (let page = 0; page < n; page++) {
    const g = from + page;
    let source: number;
    let src: number;
    if (baseRef[g] !== NO_MATCH) {
      const t = baseRef[g]!;
      source = baseStart.length === 1 ? 0 : partOf(baseStart, t);
      src = t - baseStart[source]!;
      base++;
    } else if (zeroRef[page]) {
      source = SOURCE_ZERO;
      src = 0;
      zero++;
    } else if (dupOf[g] !== NO_MATCH) {
      const s = dupOf[g]!;
      const sb = partOf(blockStart, s);
      source = (SOURCE_MIGRATION | sb) >>> 0;
      src = s - blockStart[sb]!;
      migration++;
    } else continue;
    if (last && last.source === source && last.dst + last.count === page && (source === SOURCE_ZERO || last.src + last.count === src))
      last.count++;
    else refs.push((last = { source, count: 1, dst: page, src }));
    if (held.length > 0 && held[held.length - 2]! + held[held.length - 1]! === page) held[held.length - 1]!++;
    else held.push(page, 1);
    b.digest.add(page, crc[page]!);
  }
  plan.basePages += base;
  plan.zeroPages += zero;
  plan.migrationPages += migration;
  return { refs, held };
}

/** A base written in place stashes at most this share of its pages (1 / STASH_SHARE): past it, references to the others are dropped. */
export const STASH_SHARE = 4;

/**
 * The rule for bases written in place (the receiver's output, `inPlace`):
 * image page g refers to page s of such a base, written in place as image
 * block k, for a page other than its own (g is not page s of block k). Page s
 * stays as it is when page s of block k is itself a reference to that same
 * base page; otherwise it is overwritten, and the receiver copies it into its
 * stash before any page is written (`stash`, the pages' table indices,
 * ascending), up to 1 / STASH_SHARE of that base's pages (the lowest ones).
 * A reference to a page that neither stays nor is stashed is dropped, and
 * page g goes as a copy within the migration or as data. References to its
 * own pages always hold. Returns the count of `unmatched` entries once the
 * entries of the pages whose references hold are taken out (the matching
 * kept those of the references to other pages, to look for copies among them
 * when dropped), and the stash.
 */
function keepInPlace(
  blockStart: readonly number[],
  pagesOf: readonly number[],
  baseStart: readonly number[],
  basePages: readonly number[],
  inPlaceOf: readonly (number | undefined)[],
  movedInPlace: (t: number, g: number) => boolean,
  baseRef: Uint32Array,
  unmatched: Uint8Array,
  words: Uint32Array | null,
  u: number,
): { kept: number; stash: Uint32Array } {
  const total = blockStart.length > 0 ? blockStart.at(-1)! + pagesOf.at(-1)! : 0;
  const tablePages = baseStart.length > 0 ? baseStart.at(-1)! + basePages.at(-1)! : 0;
  // Base pages that are sources of moved references and are overwritten (bit t of the table's pages).
  const endangered = new Uint8Array(tableMemory((tablePages + 7) >>> 3));
  const stays = (t: number): boolean => {
    const part = baseStart.length === 1 ? 0 : partOf(baseStart, t);
    const k = inPlaceOf[part]!;
    const s = t - baseStart[part]!;
    return k < pagesOf.length && s < pagesOf[k]! && baseRef[blockStart[k]! + s] === t;
  };
  markEndangered(total, baseRef, movedInPlace, stays, endangered);
  // The stash: each base's endangered pages, the lowest 1 / STASH_SHARE of its pages at most; the others are not stashed.
  const isMarked = (t: number): boolean => (endangered[t >>> 3]! & (1 << (t & 7))) !== 0;
  const parts = [...inPlaceOf.keys()].filter((part) => inPlaceOf[part] !== undefined);
  const room = parts.map((part) => {
    let n = 0;
    for (let t = baseStart[part]!, to = t + basePages[part]!; t < to; t++) if (isMarked(t)) n++;
    return Math.min(n, Math.floor(basePages[part]! / STASH_SHARE));
  });
  const stash = new Uint32Array(room.reduce((a, n) => a + n, 0));
  let at = 0;
  for (const [i, part] of parts.entries()) {
    for (let t = baseStart[part]!, left = room[i]!; left > 0; t++) {
      if (!isMarked(t)) continue;
      stash[at++] = t;
      left--;
      endangered[t >>> 3]! &= ~(1 << (t & 7));
    }
  }
  // What is still marked is overwritten and not stashed: the references to it are dropped.
  dropEndangered(total, baseRef, movedInPlace, endangered);
  releaseBuffers(endangered);
  return { kept: keepUnreferenced(unmatched, words, u, baseRef), stash };
}

/* keepInPlace's passes over every page, functions of their own as planDelta's (takeMatches). */

/** Sets bit t of `endangered` for each base page t a reference (baseRef) moves elsewhere while the page does not stay. */
function markEndangered(
  total: number,
  baseRef: Uint32Array,
  movedInPlace: (t: number, g: number) => boolean,
  stays: (t: number) => boolean,
  endangered: Uint8Array,
): void {
  for (let g = 0; g < total; g++) {
    const t = baseRef[g]!;
    if (t === NO_MATCH || !movedInPlace(t, g) || stays(t)) continue;
    endangered[t >>> 3]! |= 1 << (t & 7);
  }
}

/** Drops the references (baseRef) that move a page still marked in `endangered` (overwritten, not stashed). */
function dropEndangered(
  total: number,
  baseRef: Uint32Array,
  movedInPlace: (t: number, g: number) => boolean,
  endangered: Uint8Array,
): void {
  for (let g = 0; g < total; g++) {
    const t = baseRef[g]!;
    if (t !== NO_MATCH && (endangered[t >>> 3]! & (1 << (t & 7))) !== 0 && movedInPlace(t, g)) baseRef[g] = NO_MATCH;
  }
}

/** Moves the first `u` entries whose pages have no base reference to the front; returns their number. */
function keepUnreferenced(unmatched: Uint8Array, words: Uint32Array | null, u: number, baseRef: Uint32Array): number {
  let kept = 0;
  for (let e = 0; e < u; e++) {
    const g = words ? words[e * 4 + 3]! : entryIndex(unmatched, e);
    if (baseRef[g] !== NO_MATCH) continue;
    if (kept !== e) {
      if (words) words.copyWithin(kept * 4, e * 4, e * 4 + 4);
      else unmatched.copyWithin(kept * ENTRY_SIZE, e * ENTRY_SIZE, (e + 1) * ENTRY_SIZE);
    }
    kept++;
  }
  return kept;
}

/**
 * The entries as 32-bit words (word 4i + 3 is entry i's page index), on a
 * little-endian host when the buffer is 4-byte aligned; null otherwise (then
 * entryIndex() reads them).
 */
function entryWords(entries: Uint8Array): Uint32Array | null {
  if (!LITTLE_ENDIAN || entries.byteOffset % 4 !== 0) return null;
  return new Uint32Array(entries.buffer, entries.byteOffset, Math.floor(entries.byteLength / 4));
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** sameKey(entries, i, entries, j), by words when there are (entryWords). */
function sameEntryKey(entries: Uint8Array, words: Uint32Array | null, i: number, j: number): boolean {
  if (!words) return sameKey(entries, i, entries, j);
  const a = i * 4;
  const b = j * 4;
  return words[a] === words[b] && words[a + 1] === words[b + 1] && words[a + 2] === words[b + 2];
}

/**
 * Which base pages have an entry in the receiver's table, one bit per page
 * (`pages` of them): base page `t` below `pages` whose bit is clear is a zero page.
 */
function zeroBasePages(
  table: Uint8Array,
  count: number,
  baseStart: readonly number[],
  offer: ReadyDelta,
): { bits: Uint8Array; pages: number } {
  const total = (baseStart.at(-1) ?? 0) + (offer.bases.at(-1)?.pages ?? 0);
  const held = new Uint8Array(tableMemory(Math.ceil(total / 8)));
  const words = entryWords(table);
  for (let i = 0; i < count; i++) {
    const t = words ? words[i * 4 + 3]! : entryIndex(table, i);
    held[t >>> 3]! |= 1 << (t & 7);
  }
  return { bits: held, pages: total };
}

/** The counts for the summary: `data` and `zero` pages from the channels' counters, `headerSize` per reference packet. */
export function deltaCounts(plan: DeltaPlan, data: number, zero: number, pageSize: number, headerSize: number): DeltaCounts {
  const refPackets = plan.packets.length;
  const refBytes = plan.packets.reduce((a, x) => a + headerSize + x.payload.length, 0);
  return {
    dataPages: data,
    zeroPages: zero + plan.zeroPages,
    basePages: plan.basePages,
    migrationPages: plan.migrationPages,
    refPackets,
    refBytes,
    bytesSaved: (plan.basePages + plan.migrationPages) * pageSize - refBytes,
  };
}
