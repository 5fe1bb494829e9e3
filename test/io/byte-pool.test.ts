/**
 * BytePool (src/io/byte-pool.ts): views of the sizes asked for, out of one
 * shared buffer, never more than its bytes out at once; waiters served in
 * the order they asked; room given back is found again, joined with its
 * neighbours; a view given back twice is refused.
 */
import t from 'tap';
import { BytePool } from '../../src/io/byte-pool.js';

const K = 4096;

t.test('views of the sizes asked for, lowest offset first, rounded to the alignment, in one shared buffer', async (t) => {
  const pool = new BytePool(16 * K);
  const a = await pool.acquire(100);
  const b = await pool.acquire(K + 1);
  const c = await pool.acquire(K);
  t.equal(a.length, 100, 'a view has the size asked for');
  t.same(
    [a.byteOffset, b.byteOffset, c.byteOffset],
    [0, K, 3 * K],
    'each at the lowest free offset, after its neighbour rounded up to 4 KiB',
  );
  t.ok(a.buffer instanceof SharedArrayBuffer && a.buffer === b.buffer && b.buffer === c.buffer, 'all in one shared buffer');
  t.equal(a.buffer.byteLength, 16 * K);
  t.equal(pool.inUse, 4 * K, 'bytes out count rounded sizes');
  a.fill(1);
  c.fill(3);
  b.fill(2);
  t.equal(a[99], 1, 'views do not overlap');
  pool.release(b);
  t.equal(pool.inUse, 2 * K);
  const d = await pool.acquire(2 * K);
  t.equal(d.byteOffset, K, 'a freed extent is reused first, when it fits (the lowest that fits)');
  const e = await pool.acquire(K);
  t.equal(e.byteOffset, 4 * K, 'one that does not fit is cut after the last view');
  t.equal(pool.peak, 5 * K, 'the most bytes out at once');
});

t.test('nothing past the bound: acquire waits, and waiters are served in the order they asked', async (t) => {
  const pool = new BytePool(8 * K);
  const a = await pool.acquire(4 * K);
  const b = await pool.acquire(4 * K);
  t.equal(pool.tryAcquire(1), null, 'a full pool hands out nothing');
  const served: string[] = [];
  const big = pool.acquire(8 * K).then((v) => (served.push('big'), v));
  const small = pool.acquire(K).then((v) => (served.push('small'), v));
  t.equal(pool.waiting, 2);
  pool.release(a);
  await new Promise((r) => setImmediate(r));
  t.same(served, [], 'half the pool free: the first waiter (the whole pool) still waits, and the small one behind it does not pass it');
  t.equal(pool.tryAcquire(K), null, 'nor does a new request');
  t.ok(pool.inUse <= pool.bytes);
  pool.release(b);
  const whole = await big;
  t.same(served, ['big'], 'all free: the first waiter gets the whole pool');
  t.equal(whole.length, 8 * K);
  pool.release(whole);
  const s = await small;
  t.same(served, ['big', 'small'], 'then the next');
  t.equal(s.byteOffset, 0, 'at the lowest offset again');
  pool.release(s);
  t.equal(pool.inUse, 0);
  t.equal(pool.peak, 8 * K, 'never more than the pool holds');
});

t.test('extents given back join their neighbours, in any order', async (t) => {
  const pool = new BytePool(6 * K);
  const v = [];
  for (let i = 0; i < 6; i++) v.push(await pool.acquire(K));
  for (const i of [1, 4, 0, 5, 3, 2]) pool.release(v[i]!);
  t.equal(pool.inUse, 0);
  const all = pool.tryAcquire(6 * K);
  t.ok(all, 'the whole pool is one extent again');
  t.equal(all!.byteOffset, 0);
});

t.test('a view given back twice, or not from the pool, and sizes out of range are refused', async (t) => {
  const pool = new BytePool(4 * K);
  const a = await pool.acquire(K);
  const b = await pool.acquire(K);
  pool.release(a);
  t.throws(() => pool.release(a), /not out of this pool/, 'given back twice');
  pool.release(b);
  t.throws(() => pool.release(b), /not out of this pool/, 'given back twice, next to free room');
  t.throws(() => pool.release(new Uint8Array(new SharedArrayBuffer(K))), /not out of this pool/, 'from elsewhere');
  t.equal(pool.inUse, 0, 'the refusals changed nothing');
  t.throws(() => pool.tryAcquire(4 * K + 1), RangeError, 'more than the pool');
  t.throws(() => pool.acquire(0), RangeError, 'nothing');
  t.throws(() => new BytePool(K + 1), RangeError, 'a pool of a size not a multiple of its alignment');
});
