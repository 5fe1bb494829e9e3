/**
 * The sender's packets (src/sender/pipeline.ts makeJobs): consecutive pages
 * cut at packet boundaries; where held pages (a resume, delta references)
 * leave only parts of packets to send, those parts are gathered into packets
 * of scattered pages, in increasing page order, every page once.
 */
import t from 'tap';
import { makeJobs, type Job, type SendBlock } from '../../src/sender/pipeline.js';

const PS = 4096;
const PER_PACKET = 128;

const block = (pages: number, held: number[], tail = 0): SendBlock =>
  ({ source: { size: pages * PS - tail }, held }) as unknown as SendBlock;

function jobs(b: SendBlock): Job[] {
  const out: Job[] = [];
  for (const it = makeJobs([b], PS), r = { done: false }; !r.done;) {
    const n = it.next();
    if (n.done) break;
    out.push(n.value);
  }
  return out;
}

/** The pages a job stands for, in its order. */
const pagesOf = (j: Job): number[] => (j.list ? [...j.list] : Array.from({ length: j.pages }, (_, i) => j.offset / PS + i));

t.test('nothing held: packets of consecutive pages, the last one short, none gathered', async (t) => {
  const js = jobs(block(300, []));
  t.same(
    js.map((j) => [j.offset / PS, j.pages, j.list === undefined]),
    [
      [0, 128, true],
      [128, 128, true],
      [256, 44, true],
    ],
  );
});

t.test('every 10th page to send: gathered into full packets, not a packet per page', async (t) => {
  // Held: all but pages 0, 10, 20, ... (a 10% change, delta's common case).
  const n = 4000;
  const held: number[] = [];
  for (let p = 0; p < n; p += 10) held.push(p + 1, Math.min(9, n - p - 1));
  const js = jobs(block(n, held));
  const sent = js.flatMap(pagesOf);
  t.same(
    sent,
    Array.from({ length: n / 10 }, (_, i) => i * 10),
    'every page to send once, in increasing order',
  );
  t.equal(js.length, Math.ceil(n / 10 / PER_PACKET), `${js.length} packets for ${n / 10} pages`);
  t.ok(
    js.slice(0, -1).every((j) => j.pages === PER_PACKET),
    'every packet but the last is full',
  );
  for (const j of js) t.equal(j.offset, j.list![0]! * PS, 'offset: the first page');
});

t.test('whole packets between held runs stay consecutive, and what was gathered before goes first', async (t) => {
  // Send 0..9, hold 10..127, send 128..511 (three whole packets), hold 512..600, send 601..699 (the end).
  const js = jobs(block(700, [10, 118, 512, 89]));
  t.same(
    js.map((j) => [j.list ? 'gathered' : 'run', pagesOf(j)[0], j.pages]),
    [
      ['gathered', 0, 10],
      ['run', 128, 128],
      ['run', 256, 128],
      ['run', 384, 128],
      ['gathered', 601, 99],
    ],
    'the tail (601..639, and 640..699 up to the end of the block) in one packet',
  );
  const sent = js.flatMap(pagesOf);
  t.same(sent, [
    ...Array.from({ length: 10 }, (_, i) => i),
    ...Array.from({ length: 384 }, (_, i) => 128 + i),
    ...Array.from({ length: 99 }, (_, i) => 601 + i),
  ]);
});
