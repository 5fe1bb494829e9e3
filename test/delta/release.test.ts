/**
 * releaseBuffers (src/delta/fingerprint.ts, the addon's deltaRelease): a delta
 * migration's tables are freed when planning ends, not when the garbage
 * collector comes to them, so they do not add to the peak while the channels'
 * compression contexts are made. Only buffers the caller owns whole are freed.
 */
import t from 'tap';
import fs from 'node:fs';
import { decodeEntries, releaseBuffers, tableBuffer, tableMemory } from '../../src/delta/fingerprint.js';
import { native } from '../../src/native/load.js';

/** This process's resident memory, in bytes (VmRSS). */
function rss(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no VmRSS in /proc/self/status');
  return Number(m[1]) * 1024;
}

t.test('a buffer owned whole is freed at once: its views are empty, and the memory is back', (t) => {
  const size = 64 << 20;
  const b = Buffer.allocUnsafeSlow(size);
  b.fill(7);
  const words = new Uint32Array(b.buffer);
  const before = rss();
  releaseBuffers(b);
  const after = rss();
  t.equal(b.length, 0, 'the Buffer is empty');
  t.equal(words.length, 0, 'so is another view of the same memory');
  t.equal(b.buffer.byteLength, 0, 'its ArrayBuffer is detached');
  t.ok(before - after >= size / 2, `resident memory fell by ${before - after} bytes, expected at least ${size / 2}`);
  const typed = new Uint32Array(1 << 20).fill(3);
  releaseBuffers(typed, null, undefined);
  t.equal(typed.length, 0, 'a typed array of its own is freed too; null and undefined are skipped');
  releaseBuffers(typed);
  t.equal(typed.length, 0, 'releasing twice is harmless');
  t.end();
});

t.test("tables' memory: zero-filled, large ones in a mapping of their own, freed by releaseBuffers", async (t) => {
  const size = 64 << 20;
  const b = tableBuffer(size);
  t.equal(b.length, size);
  t.equal(b.indexOf(1), -1, 'zero-filled');
  b.fill(9);
  const before = rss();
  releaseBuffers(b);
  t.equal(b.length, 0, 'released: empty');
  // Node hands the mapping back from its next turn (an external buffer's finaliser runs on the event loop).
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  t.ok(before - rss() >= size / 2, `resident memory fell by ${before - rss()} bytes, expected at least ${size / 2}`);
  t.equal(tableMemory(0).byteLength, 0, 'an empty table');
  t.equal(tableMemory(100).byteLength, 100, 'a small one');
  const entries = Buffer.alloc(48, 5);
  t.same(decodeEntries(entries.toString('base64')), entries, "a frame's entries decoded");
  t.same(decodeEntries(Buffer.alloc(17, 3).toString('base64')), Buffer.alloc(17, 3), 'with padding');
  t.same(decodeEntries(''), Buffer.alloc(0), 'none');
});

t.test('a view of part of a buffer, a pooled Buffer and shared memory are left alone', (t) => {
  const whole = Buffer.allocUnsafeSlow(1 << 16).fill(1);
  const part = whole.subarray(4096);
  releaseBuffers(part);
  t.equal(whole.length, 1 << 16, 'a view of part of a buffer frees nothing');
  t.equal(whole[100], 1, 'its bytes are still there');
  const small = Buffer.from('abc');
  const neighbour = Buffer.from('def');
  releaseBuffers(small);
  t.equal(small.toString(), 'abc', "a small Buffer in Node's pool is not freed");
  t.equal(neighbour.toString(), 'def', 'nor is its neighbour in the pool');
  const shared = new Uint8Array(new SharedArrayBuffer(4096)).fill(2);
  releaseBuffers(shared);
  t.equal(shared.length, 4096, 'shared memory is not freed');
  t.end();
});

t.test('the addon refuses what is not an ArrayBuffer, and says false for one already detached', (t) => {
  t.throws(() => native.deltaRelease(new SharedArrayBuffer(8) as unknown as ArrayBuffer), /expected an ArrayBuffer/);
  t.throws(() => native.deltaRelease(new Uint8Array(8) as unknown as ArrayBuffer), /expected an ArrayBuffer/);
  const ab = new ArrayBuffer(8);
  t.equal(native.deltaRelease(ab), true, 'detached');
  t.equal(native.deltaRelease(ab), false, 'already detached');
  t.end();
});
