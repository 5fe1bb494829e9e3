/** The shared memory of main thread and compute worker: views that never overlap, seen alike from both sides. */
import t from 'tap';
import { decodeSlotViews, sharedSlabViews } from '../../src/compute/messages.js';
import { pageCount } from '../../src/wire/constants.js';

/** Byte ranges [start, end) of `views`, each disjoint from the others. */
function disjoint(views: ArrayBufferView[]): boolean {
  const r = views.map((v) => [v.byteOffset, v.byteOffset + v.byteLength] as const).sort((a, b) => a[0] - b[0]);
  return r.every(([s], i) => i === 0 || s >= r[i - 1]![1]);
}

t.test('a slab: CRCs, list, zero flags and payload room apart, the same views from its buffer', async (t) => {
  for (const pageSize of [4096, 16384, 65536, 524288]) {
    const n = pageCount(pageSize);
    const a = sharedSlabViews(null, n, 1000);
    t.ok(disjoint([a.crc, a.list, a.zero, a.out]), `${pageSize}: disjoint`);
    t.equal(a.out.byteOffset % 64, 0);
    t.equal(a.out.length, 1000);
    a.list[n - 1] = 7;
    a.crc[n - 1] = 9;
    const b = sharedSlabViews(a.shared, n);
    t.same([b.list[n - 1], b.crc[n - 1], b.zero[0]], [7, 9, 0]);
  }
});

t.test('decode-write slots: offsets and CRCs of each apart, the worker sees the same slots', async (t) => {
  for (const pageSize of [4096, 65536, 524288]) {
    const n = pageCount(pageSize);
    const a = decodeSlotViews(null, n, 3);
    t.equal(a.slots.length, 3);
    t.ok(disjoint(a.slots.flatMap((s) => [s.offsets, s.crc])), `${pageSize}: disjoint`);
    a.slots.forEach((s, i) => {
      s.offsets.fill(i * 4096);
      s.crc.fill(i + 1);
    });
    const b = decodeSlotViews(a.shared, n);
    t.same(
      b.slots.map((s) => [s.offsets.length, s.crc.length, s.offsets[n - 1], s.crc[n - 1]]),
      [0, 1, 2].map((i) => [n, n, i * 4096, i + 1]),
    );
  }
});
