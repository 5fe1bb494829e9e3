import t from 'tap';
import { PageBitmap } from '../../src/receiver/page-bitmap.js';

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
  b.set(5000);
  t.equal(b.firstMissing(), 10_000, 'all received');
});

t.test('page bitmap: a huge declared block costs only the chunks its pages touch', async (t) => {
  const b = new PageBitmap(2 ** 34); // 64 TiB of 4 KiB pages
  t.equal(b.allocatedBytes, 0, 'nothing before a page arrives');
  b.set(0);
  b.set(2 ** 34 - 1);
  t.equal(b.allocatedBytes, 1024, 'two 512-byte chunks');
  t.equal(b.firstMissing(), 1);
  const c = new PageBitmap(8192);
  for (let i = 0; i < 4096; i++) c.set(i);
  t.equal(c.firstMissing(), 4096, 'a chunk never touched is missing from its first page');
});
