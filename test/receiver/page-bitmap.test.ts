import t from 'tap';
import { PageBitmap, PageBudget, PageStateLimitError } from '../../src/receiver/page-bitmap.js';

/** The runs of a plain set of pages, for comparing against. */
function runsOf(pages: Iterable<number>): number[] {
  const sorted = [...pages].sort((a, b) => a - b);
  const out: number[] = [];
  for (const p of sorted) {
    if (out.length > 0 && out[out.length - 2]! + out[out.length - 1]! === p) out[out.length - 1]!++;
    else out.push(p, 1);
  }
  return out;
}

t.test('page bitmap: each page once, count, first missing', async (t) => {
  const b = new PageBitmap(10_000);
  t.equal(b.firstMissing(), 0);
  let fresh = 0;
  for (let i = 0; i < 10_000; i++) if (i !== 5000 && b.set(i)) fresh++;
  t.equal(fresh, 9_999, 'every page new the first time');
  t.equal(b.set(3), false, 'a page set twice');
  t.equal(b.count, 9_999);
  t.equal(b.firstMissing(), 5000);
  t.ok(b.has(4999));
  t.notOk(b.has(5000));
  t.same(b.runs(), [0, 5000, 5001, 4999]);
  t.equal(b.runCount, 2);
  b.set(5000);
  t.equal(b.firstMissing(), 10_000, 'all received');
  t.same(b.runs(), [0, 10_000]);
  t.equal(b.runCount, 1);
  t.ok(b.allocatedBytes < 2000, `a block received in full costs little (${b.allocatedBytes} bytes)`);
});

t.test('page bitmap: a huge declared block costs only what its pages touch', async (t) => {
  const b = new PageBitmap(2 ** 34); // 64 TiB of 4 KiB pages
  t.equal(b.allocatedBytes, 0, 'nothing before a page arrives');
  b.set(0);
  b.set(2 ** 34 - 1);
  t.ok(b.allocatedBytes <= 2 * (4 * 130 + 48), `two chunks (${b.allocatedBytes} bytes)`);
  t.equal(b.firstMissing(), 1);
  t.same(b.runs(), [0, 1, 2 ** 34 - 1, 1]);
  const c = new PageBitmap(8192);
  for (let i = 0; i < 4096; i++) c.set(i);
  t.equal(c.firstMissing(), 4096, 'a chunk never touched is missing from its first page');
});

t.test('page bitmap: full chunks go up a level; runs match a plain set for any order', async (t) => {
  const pages = 1024 * 1024 + 1024 * 5 + 77; // three levels, a short last chunk
  let x = 7;
  const rand = (n: number): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), x % n);
  for (const pattern of ['ascending', 'descending', 'random', 'stride']) {
    const b = new PageBitmap(pages);
    const plain = new Set<number>();
    let wrong = 0;
    const take = (p: number): void => {
      if (b.set(p) === plain.has(p)) wrong++;
      plain.add(p);
    };
    if (pattern === 'ascending') for (let p = 0; p < pages; p++) take(p);
    if (pattern === 'descending') for (let p = pages - 1; p >= 0; p--) take(p);
    if (pattern === 'random') for (let k = 0; k < 50_000; k++) take(rand(pages));
    if (pattern === 'stride') for (let p = 0; p < pages; p += 3) take(p);
    const want = runsOf(plain);
    t.equal(wrong, 0, `${pattern}: set() says whether a page is new`);
    t.equal(b.count, plain.size, `${pattern}: count`);
    t.same(b.runs(), want, `${pattern}: runs`);
    t.equal(b.runCount, want.length / 2, `${pattern}: run count`);
    for (let k = 0; k < 1000; k++) {
      const p = rand(pages);
      if (b.has(p) !== plain.has(p)) t.fail(`${pattern}: has(${p})`);
    }
  }
});

t.test('page bitmap: setRuns on an empty bitmap takes whole chunks at once', async (t) => {
  const pages = 2 ** 34;
  const b = new PageBitmap(pages);
  b.setRuns([0, 2 ** 33, 2 ** 33 + 5, 1, 2 ** 33 + 6, 100, pages - 10, 10]);
  t.equal(b.count, 2 ** 33 + 1 + 100 + 10);
  t.same(b.runs(), [0, 2 ** 33, 2 ** 33 + 5, 101, pages - 10, 10], 'adjacent runs merge');
  t.equal(b.runCount, 3);
  t.notOk(b.set(2 ** 32), 'a held page is held');
  t.ok(b.set(2 ** 33), 'a missing one is not');
  t.ok(b.allocatedBytes < 4096, `${b.allocatedBytes} bytes for 8 Gi pages`);
  const c = new PageBitmap(5000);
  c.set(10);
  c.setRuns([0, 20, 4990, 10]);
  t.equal(c.count, 30, 'on a bitmap holding pages, page by page');
  t.same(c.runs(), [0, 20, 4990, 10]);
});

t.test('page bitmap: a budget refuses scattered pages past it, shared by bitmaps', async (t) => {
  const budget = new PageBudget(1 << 20);
  const a = new PageBitmap(2 ** 32, budget);
  const b = new PageBitmap(2 ** 32, budget);
  let e: unknown;
  let n = 0;
  try {
    for (; n < 1 << 20; n++) {
      a.set(n * 4096);
      b.set(n * 4096);
    }
  } catch (err) {
    e = err;
  }
  t.ok(e instanceof PageStateLimitError, 'refused');
  t.match(e, { code: 'ERR_PAGE_STATE_LIMIT', limit: 1 << 20, message: /past the receiver's limit of 1048576/ });
  t.ok(n > 1000 && n < 10_000, `after ${n} scattered pages each`);
  t.ok(budget.used <= budget.limit, 'never past the limit');
  // The refused page (of a, or of b after a took it) is not marked: each bitmap stays consistent.
  t.notOk(b.has(n * 4096), 'the refused page is not marked');
  t.equal(a.count, n + (a.has(n * 4096) ? 1 : 0));
  t.equal(b.count, n);
  // Dense pages cost next to nothing.
  const dense = new PageBitmap(2 ** 32, new PageBudget(1 << 16));
  for (let p = 0; p < 1 << 22; p++) dense.set(p);
  t.equal(dense.count, 1 << 22);
});
