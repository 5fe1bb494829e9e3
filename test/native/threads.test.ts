/** The addon in several threads at once: it loads in workers, and its shared mapping registry holds up. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/load.js';
import { tmpdir } from '../helpers/index.js';

const addon = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'mfd.node');

// Each worker maps and unmaps windows of the same file in a loop, while the main thread does too.
const body = `
const { workerData, parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const b = require(workerData.addon);
const fd = fs.openSync(workerData.file, 'r');
let sum = 0;
for (let i = 0; i < workerData.rounds; i++) {
  const ab = b.mapRange(fd, (i % 8) * 65536, 65536);
  sum += new Uint8Array(ab)[i % 65536];
  if (i % 3 !== 0) b.unmapRange(ab); // the rest are left to the finalizer
}
fs.closeSync(fd);
parentPort.postMessage(sum);
`;

t.test('mapRange/unmapRange from three threads at once', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'img');
  const data = Buffer.alloc(8 * 65536);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  fs.writeFileSync(file, data);
  const rounds = 4000;
  const expected = Array.from({ length: rounds }, (_, i) => data[(i % 8) * 65536 + (i % 65536)]!).reduce((a, b) => a + b, 0);
  const workers = [0, 1].map(
    () =>
      new Promise<number>((resolve, reject) => {
        const w = new Worker(body, { eval: true, workerData: { addon, file, rounds } });
        w.once('message', resolve);
        w.once('error', reject);
      }),
  );
  const fd = fs.openSync(file, 'r');
  let sum = 0;
  for (let i = 0; i < rounds; i++) {
    const ab = native.mapRange(fd, (i % 8) * 65536, 65536);
    sum += new Uint8Array(ab)[i % 65536]!;
    native.unmapRange(ab);
    if (i % 500 === 0) await new Promise((r) => setImmediate(r));
  }
  fs.closeSync(fd);
  t.same(await Promise.all(workers), [expected, expected], 'workers read the file through their mappings');
  t.equal(sum, expected);
});
