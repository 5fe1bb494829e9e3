/**
 * Fuzz targets for what a peer can make the receiver hold or wait for:
 *
 *   page-bookkeeping  patterns of page offsets (sprays at a stride, random
 *                     pages, runs, held runs) into page bitmaps sharing a
 *                     small budget, against a plain set: set() says whether
 *                     a page is new, count and runs agree, the budget is
 *                     never passed and what is charged follows the pages
 *                     set (O(pages)), a refusal is ERR_PAGE_STATE_LIMIT and
 *                     leaves the bitmap as it was.
 *   control-timing    a live receiver with a short --timeout, fed the start
 *                     of a conversation (preamble, hello, a channel that
 *                     ends) in pieces with pauses between, then silence or a
 *                     close: it must end typed, or drop the silent peer and
 *                     serve the next sender, within a few timeouts; never wait
 *                     for ever.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type net from 'node:net';
import fc from 'fast-check';
import { encodeFrame, encodePreamble, type ControlMessage } from '../../../src/control/protocol.js';
import { PageBitmap, PageBudget, PageStateLimitError } from '../../../src/receiver/page-bitmap.js';
import { ControlChannel } from '../../../src/transport/control-channel.js';
import { connect } from '../../../src/transport/connect.js';
import { encodeInitPacket } from '../../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../../src/wire/packet.js';
import { MULTIFD_FLAG_SYNC, packetHeaderSize } from '../../../src/wire/constants.js';
import { type FuzzTarget, outcome, typed, violation } from './harness.js';
import { FUZZ_UUID } from './wire.js';
import { helloFor, startReceiver } from './receiver.js';

type Pattern =
  | { kind: 'stride'; start: number; stride: number; count: number }
  | { kind: 'random'; seed: number; count: number }
  | { kind: 'run'; start: number; count: number }
  | { kind: 'held'; runs: [number, number][] };

interface BookkeepingInput {
  /** Pages of each block. */
  pages: number;
  /** Budget shared by the two bitmaps (received, written). */
  limit: number;
  patterns: Pattern[];
}

/** Pages set per input at most (the model is a plain set). */
const MAX_PAGES_PER_INPUT = 20_000;
/** What one page may cost at most when it starts a chunk of its own, at every level, with buffer growth (bytes). */
const COST_PER_PAGE = 1024;

const pattern: fc.Arbitrary<Pattern> = fc.oneof(
  fc.record({
    kind: fc.constant('stride' as const),
    start: fc.nat(),
    stride: fc.oneof(fc.constantFrom(1, 2, 1023, 1024, 1025, 4096, 1 << 20), fc.integer({ min: 1, max: 1 << 24 })),
    count: fc.nat({ max: 5000 }),
  }),
  fc.record({ kind: fc.constant('random' as const), seed: fc.nat(), count: fc.nat({ max: 5000 }) }),
  fc.record({ kind: fc.constant('run' as const), start: fc.nat(), count: fc.nat({ max: 8000 }) }),
  fc.record({ kind: fc.constant('held' as const), runs: fc.array(fc.tuple(fc.nat(), fc.nat({ max: 3000 })), { maxLength: 20 }) }),
);

/** Each page of `p` within `pages`, in order (repeats allowed: a sender may repeat one). */
function* pagesOf(p: Pattern, pages: number): Generator<number> {
  if (p.kind === 'stride') for (let k = 0; k < p.count; k++) yield (p.start + k * p.stride) % pages;
  else if (p.kind === 'run') for (let k = 0; k < p.count; k++) yield (p.start + k) % pages;
  else if (p.kind === 'random') {
    let x = p.seed >>> 0;
    for (let k = 0; k < p.count; k++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      yield (x * 65536 + (Math.imul(x, 2654435761) >>> 16)) % pages;
    }
  }
}

function runsOfSet(set: Set<number>): number[] {
  const out: number[] = [];
  for (const p of [...set].sort((a, b) => a - b)) {
    if (out.length > 0 && out[out.length - 2]! + out[out.length - 1]! === p) out[out.length - 1]!++;
    else out.push(p, 1);
  }
  return out;
}

export function pageBookkeepingTarget(): FuzzTarget<BookkeepingInput> {
  return {
    name: 'page-bookkeeping',
    corpusSize: 0,
    async: false,
    arbitrary: fc.record({
      pages: fc.oneof(fc.constantFrom(1, 2, 1023, 1024, 1025, 2 ** 20 + 7, 2 ** 32 - 4096, 2 ** 34), fc.integer({ min: 1, max: 2 ** 34 })),
      limit: fc.oneof(fc.constantFrom(4096, 65536, 1 << 20), fc.integer({ min: 1024, max: 4 << 20 })),
      patterns: fc.array(pattern, { minLength: 1, maxLength: 6 }),
    }),
    run({ pages, limit, patterns }) {
      const budget = new PageBudget(limit);
      const seen = new PageBitmap(pages, budget);
      const model = new Set<number>();
      let refusedHeld = false;
      return outcome('page bookkeeping', () => {
        try {
          for (const p of patterns) {
            if (p.kind === 'held') {
              // Held runs go in on a fresh bitmap only (a resume): ascending, apart, within the block.
              if (seen.count > 0) continue;
              const runs: number[] = [];
              let at = 0;
              for (const [gap, n] of p.runs) {
                const start = at + gap;
                const count = Math.min(n, pages - start, MAX_PAGES_PER_INPUT - model.size);
                if (start >= pages || count <= 0) break;
                runs.push(start, count);
                at = start + count;
              }
              try {
                seen.setRuns(runs);
              } catch (e) {
                // Held runs are all or nothing for the migration (a refusal fails it): no state to compare.
                if (e instanceof PageStateLimitError) refusedHeld = true;
                throw e;
              }
              for (let r = 0; r < runs.length; r += 2) for (let q = runs[r]!; q < runs[r]! + runs[r + 1]!; q++) model.add(q);
              continue;
            }
            for (const q of pagesOf(p, pages)) {
              if (model.size >= MAX_PAGES_PER_INPUT) break;
              let fresh: boolean;
              try {
                fresh = seen.set(q);
              } catch (e) {
                if (!(e instanceof PageStateLimitError)) throw e;
                if (seen.has(q) !== model.has(q)) violation(`page ${q}: refused, yet the bitmap says ${seen.has(q) ? 'set' : 'not set'}`);
                throw e;
              }
              if (fresh === model.has(q)) violation(`set(${q}) said ${fresh ? 'new' : 'repeated'}`);
              model.add(q);
            }
          }
        } finally {
          if (budget.used > budget.limit) violation(`budget used ${budget.used}, past its limit ${budget.limit}`);
          if (budget.used > COST_PER_PAGE * model.size + 4096)
            violation(`${budget.used} bytes charged for ${model.size} pages: not O(pages received)`);
          if (!refusedHeld) agrees(seen, model);
        }
      });
    },
    close() {},
  };
}

/** The bitmap holds exactly the model's pages: count, runs, run count, first missing. */
function agrees(seen: PageBitmap, model: Set<number>): void {
  if (seen.count !== model.size) violation(`count ${seen.count}, expected ${model.size}`);
  const want = runsOfSet(model);
  const got = seen.runs();
  if (got.length !== want.length || got.some((v, i) => v !== want[i]))
    violation(`runs ${JSON.stringify(got.slice(0, 8))}..., expected ${JSON.stringify(want.slice(0, 8))}...`);
  if (seen.runCount !== want.length / 2) violation(`run count ${seen.runCount}, expected ${want.length / 2}`);
  const first = want.length > 0 && want[0] === 0 ? want[1]! : 0;
  if (seen.firstMissing() !== first) violation(`first missing ${seen.firstMissing()}, expected ${first}`);
}

/** What the control-timing peer does: the start of a conversation, in pieces with pauses, then silence or a close. */
interface TimingInput {
  /** Bytes of preamble + hello sent (cut anywhere; past the end: all of them). */
  sent: number;
  /** Cut points (fractions) and the pause after each piece, ms. */
  pieces: [number, number][];
  /** After a full hello: connect the channel, send a SYNC and end it (and never send `complete`). */
  channelEnds: boolean;
  close: boolean;
}

/** The receivers' --timeout in this target. */
const TIMING_TIMEOUT_MS = 100;
/**
 * Time allowed past the peer's last byte for the receiver to act on its silence: 30 of its timeouts, since a
 * loaded machine (the suite's other files on 2 cores) holds this process's event loop for a second at times.
 * A receiver that waits for ever still fails.
 */
const TIMING_HANG_MS = 3000;

export function controlTimingTarget(): FuzzTarget<TimingInput> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-fuzz-timing-'));
  let n = 0;
  const hello = helloFor({ pageSize: 4096, method: 'none', block: 'pc.ram', blockSize: 4096 });
  const script = Buffer.concat([encodePreamble(), encodeFrame(hello)]);
  return {
    name: 'control-timing',
    corpusSize: 1,
    async: true,
    arbitrary: fc.record({
      sent: fc.oneof(fc.constantFrom(0, 8, 12, script.length), fc.nat({ max: script.length + 10 })),
      pieces: fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.nat({ max: 2 * TIMING_TIMEOUT_MS })), { maxLength: 3 }),
      channelEnds: fc.boolean(),
      close: fc.boolean(),
    }),
    async run(x) {
      const dir = path.join(root, String(n++));
      fs.mkdirSync(dir);
      const abort = new AbortController();
      const { port, ended } = await startReceiver(dir, abort.signal, false, TIMING_TIMEOUT_MS);
      const sockets: net.Socket[] = [];
      let timer: NodeJS.Timeout | undefined;
      try {
        if (port === 0) violation(`receiver did not listen: ${String(await ended)}`);
        const sock = await connect('127.0.0.1', port, 2000, 'control');
        sockets.push(sock);
        sock.on('error', () => {});
        const ctl = new ControlChannel(sock, 'fuzz');
        const bytes = script.subarray(0, Math.min(x.sent, script.length));
        const cuts = [...x.pieces].sort((a, b) => a[0] - b[0]);
        let at = 0;
        for (const [f, pause] of cuts) {
          const to = Math.floor(f * bytes.length);
          if (to > at && !sock.destroyed) sock.write(bytes.subarray(at, to));
          at = Math.max(at, to);
          await new Promise((r) => setTimeout(r, pause));
        }
        if (!sock.destroyed) sock.write(bytes.subarray(at));
        if (x.channelEnds && bytes.length === script.length) {
          const reply = await Promise.race([ctl.next().catch((e: unknown) => e), new Promise((r) => setTimeout(r, TIMING_HANG_MS))]);
          if ((reply as ControlMessage | undefined)?.type === 'ready') {
            const hs = packetHeaderSize(4096);
            const sync = encodePacketHeader(new Uint8Array(hs), hs, {
              flags: MULTIFD_FLAG_SYNC,
              pagesAlloc: 0,
              normalPages: 0,
              zeroPages: 0,
              nextPacketSize: 0,
              packetNum: 0n,
              ramblock: new Uint8Array(0),
              offsets: [],
            });
            const data = await connect('127.0.0.1', port, 2000, 'data');
            sockets.push(data);
            data.on('error', () => {});
            data.end(Buffer.concat([encodeInitPacket(FUZZ_UUID, 0), sync]));
          }
        }
        if (x.close) sock.end();
        const hang = new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), TIMING_HANG_MS)));
        const end = await Promise.race([ended, hang]);
        if (end === 'ok') violation('a migration without its pages succeeded');
        if (end !== 'hang') return typed(end, 'control timing').code;
        // Still running: only right when the silent peer was dropped, and then the next sender is served.
        const next = await connect('127.0.0.1', port, 2000, 'control');
        sockets.push(next);
        next.on('error', () => {});
        const probe = new ControlChannel(next, 'fuzz probe');
        next.write(script);
        const reply = await Promise.race([
          probe.next().catch((e: unknown) => e),
          new Promise((r) => setTimeout(() => r('hang'), TIMING_HANG_MS)),
        ]);
        const type = (reply as ControlMessage | undefined)?.type;
        if (type !== 'ready')
          violation(
            `receiver still waiting ${TIMING_HANG_MS} ms after the peer's last byte (--timeout ${TIMING_TIMEOUT_MS} ms), and the next sender got ${type === 'error' ? (reply as { code: string }).code : String(reply)}`,
          );
        return 'dropped+served';
      } finally {
        clearTimeout(timer);
        abort.abort('fuzz: done');
        for (const s of sockets) s.destroy();
        await ended;
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    close() {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}
