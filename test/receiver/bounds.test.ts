/**
 * The receiver's page bookkeeping is bounded by the pages a sender really
 * sends, not by the size it announces: a hand-driven sender declares one
 * block of nearly 16 TiB and sprays zero pages at offsets chosen to cost the
 * most (one page per bitmap chunk, random pages, every other page). The
 * receiver, a child process, is watched for its peak RSS, which must stay
 * under the ceiling the README states; it ends with a typed error and leaves
 * nothing that looks complete.
 */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { RawSender, tmpdir } from '../helpers/index.js';
import { mfdRecv, watchPeak } from '../helpers/procs.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { MULTIFD_FLAG_SYNC, packetHeaderSize } from '../../src/wire/constants.js';
import { MAX_HAVE_NUMBERS, encodeFrame } from '../../src/control/protocol.js';
import { RECEIVER_RSS_CEILING } from '../../src/receiver/page-bitmap.js';

const PS = 4096;
const HS = packetHeaderSize(PS);
/** 2^44 - 2^24 bytes: 2^32 - 4096 pages. */
const BLOCK = 2 ** 44 - 2 ** 24;
const PAGES = BLOCK / PS;
const PER_PACKET = 128;
const PACKETS = 8192;

/**
 * Sends `pages` (page indexes, distinct) as zero pages, 128 a packet, then a
 * SYNC and `complete`; returns the receiver's exit and its peak RSS.
 */
async function spray(t: Test, pages: (k: number) => number, o: { count?: number; journalMs?: number } = {}) {
  const count = o.count ?? PACKETS * PER_PACKET;
  const dir = tmpdir(t);
  const r = await mfdRecv(t, ['--output', dir, '--timeout', '20', '--log-level', 'info']);
  const peak = watchPeak(r.p.pid!);
  t.teardown(peak.stop);
  const raw = new RawSender(r.port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ ramblocks: [{ name: 'ram0', size: BLOCK }] }), { type: 'ready' });
  const ch = await raw.channel(encodeInitPacket(raw.uuidBytes, 0));
  const name = Buffer.from('ram0');
  let n = 0n;
  let sent = 0;
  for (let k = 0; k < count; k += PER_PACKET) {
    const offsets = Array.from({ length: Math.min(PER_PACKET, count - k) }, (_, i) => pages(k + i) * PS);
    const h = encodePacketHeader(new Uint8Array(HS), HS, {
      flags: 0,
      pagesAlloc: PER_PACKET,
      normalPages: 0,
      zeroPages: offsets.length,
      nextPacketSize: 0,
      packetNum: n++,
      ramblock: name,
      offsets,
    });
    if (ch.destroyed) break;
    if (!ch.write(h)) await new Promise((resolve) => (ch.destroyed ? resolve(null) : ch.once('drain', resolve).once('close', resolve)));
    sent += offsets.length;
  }
  // The largest the journal gets while the receiver checkpoints (every second) what it holds:
  // watched until it holds many runs, then for two more checkpoints.
  let journal = 0;
  const journalFile = path.join(dir, '.ram0.mfd-journal');
  for (let end = Date.now() + (o.journalMs ?? 0); Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
    const size = fs.statSync(journalFile, { throwIfNoEntry: false })?.size ?? 0;
    if (journal < 1e6 && size >= 1e6) end = Date.now() + 2500;
    journal = Math.max(journal, size);
  }
  const last = encodePacketHeader(new Uint8Array(HS), HS, {
    flags: MULTIFD_FLAG_SYNC,
    pagesAlloc: 0,
    normalPages: 0,
    zeroPages: 0,
    nextPacketSize: 0,
    packetNum: n++,
    ramblock: new Uint8Array(0),
    offsets: [],
  });
  if (!ch.destroyed) ch.end(last);
  if (!raw.sockets[0]!.destroyed)
    raw.sockets[0]!.write(encodeFrame({ type: 'complete', packets: [Number(n)], digests: { ram0: '0000000000000000' } }));
  const exit = await r.done;
  peak.stop();
  return { exit, peak: peak.peak(), dir, sent, journal };
}

/** The run ended in a typed error, under the ceiling, with nothing left that looks complete. */
function bounded(t: Test, s: Awaited<ReturnType<typeof spray>>): void {
  t.ok(s.peak > 0, 'peak RSS read');
  t.ok(s.peak < RECEIVER_RSS_CEILING, `peak RSS ${(s.peak / 2 ** 20).toFixed(1)} MiB, ceiling ${RECEIVER_RSS_CEILING / 2 ** 20} MiB`);
  t.not(s.exit.code, 0, 'the receiver fails');
  t.match(s.exit.stderr, /ERR_PAGE_STATE_LIMIT|ERR_PAGES_MISSING/, 'with a typed error');
  t.same(fs.readdirSync(s.dir), [], 'no output, partial or journal left');
}

t.test('spray: one zero page per bitmap chunk of a 16 TiB block', async (t) => {
  const s = await spray(t, (k) => k * 4096);
  bounded(t, s);
  t.match(s.exit.stderr, /ERR_PAGE_STATE_LIMIT/);
  t.match(s.exit.stderr, /channel 0/, 'names the channel');
});

t.test('random pages of a 16 TiB block', async (t) => {
  let x = 12345;
  const seen = new Set<number>();
  const s = await spray(t, () => {
    for (;;) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const p = (x * 4096 + (x & 4095)) % PAGES;
      if (!seen.has(p)) return (seen.add(p), p);
    }
  });
  bounded(t, s);
});

t.test('every other page: no chunk ever fills, the journal stays bounded', async (t) => {
  const s = await spray(t, (k) => 2 * k, { count: 300_000, journalMs: 20_000 });
  bounded(t, s);
  t.match(s.exit.stderr, /ERR_PAGES_MISSING/, 'within the limit: the migration goes on, then misses pages');
  // All 300 000 runs would take some 4.5 MB; a journal keeps the longest runs a resume can use.
  t.ok(s.journal >= 1e6, `a journal of many runs was written (${s.journal} bytes)`);
  // (each run here "2k,1," takes at most 10 bytes: the cap holds it near 1.2 MB)
  t.ok(s.journal < MAX_HAVE_NUMBERS * 6, `journal ${s.journal} bytes, at most the runs ready.have can carry`);
});
