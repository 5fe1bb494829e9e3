import t from 'tap';
import { ByteQueue } from '../../src/transport/byte-queue.js';

t.test('peek, take and takeViews across chunk boundaries', async (t) => {
  const q = new ByteQueue();
  t.equal(q.peekUInt8(), null, 'empty: no byte to peek');
  q.push(Buffer.from([0x11]));
  t.equal(q.peekUInt8(), 0x11, 'one byte peeked');
  q.push(Buffer.from([]));
  q.push(Buffer.from([0x22, 0x33]));
  t.equal(q.peekUInt32BE(), null, 'three bytes: nothing to peek yet');
  q.push(Buffer.from([0x44, 0x55, 0x66]));
  t.equal(q.peekUInt32BE(), 0x11223344);
  t.equal(q.peekUInt32BE(1), 0x22334455, 'from an offset, across chunks');
  t.equal(q.peekUInt32BE(2), 0x33445566, 'from an offset past the first chunk');
  t.equal(q.peekUInt32BE(3), null, 'an offset leaving fewer than 4 bytes');
  t.equal(q.length, 6, 'peeking takes nothing');
  t.same([...q.take(2)!], [0x11, 0x22], 'a frame spanning chunks is assembled');
  t.equal(q.peekUInt32BE(), 0x33445566, 'peek from the middle of a chunk');
  t.equal(q.peekUInt8(), 0x33, 'one byte from the middle of a chunk');
  const views = q.takeViews(4)!;
  t.same(
    views.map((v) => [...v]),
    [[0x33], [0x44, 0x55, 0x66]],
    'views of the chunks, no copy',
  );
  t.equal(q.length, 0);
  t.equal(q.take(1), null);
});
