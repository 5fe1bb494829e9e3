/**
 * The addon in several threads at once: it loads in workers, its shared mapping registry holds up,
 * and a worker terminated in the middle of its calls ends cleanly.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { native, nativeFile as addon } from '../../src/native/load.js';
import { tmpdir } from '../helpers/index.js';

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

// A worker calls the addon's functions that return new memory (dataExtents' array, a mapping, an
// aligned buffer) in a loop until it is terminated. A call the termination lands in cannot make its
// value; the addon must then return without touching it (it wrote into the array that was not made,
// a SIGSEGV, when the compute pool was closed under a packet's lseek), and free what it had taken.
const terminated = `
const { Worker } = require('node:worker_threads');
const [addon, file, rounds] = process.argv.slice(1);
const body = \`
const { workerData, parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const b = require(workerData.addon);
const fd = fs.openSync(workerData.file, 'r');
const size = fs.fstatSync(fd).size;
parentPort.postMessage('ready');
for (let i = 0; ; i++) {
  b.dataExtents(fd, 0, size);
  if (i % 4 === 0) b.unmapRange(b.mapRange(fd, 0, 65536));
  if (i % 4 === 1) b.alignedBuffer(65536);
}
\`;
(async () => {
  for (let i = 0; i < Number(rounds); i++) {
    const w = new Worker(body, { eval: true, workerData: { addon, file } });
    await new Promise((r) => w.once('message', r));
    await new Promise((r) => setTimeout(r, i % 5));
    await w.terminate();
  }
  console.log('all ' + rounds + ' workers ended');
})();
`;

t.test("a worker terminated inside the addon's calls ends cleanly, the process with it", (t) => {
  // A sparse file of 1024 extents: each dataExtents call spends a while in lseek, where terminations land.
  const file = path.join(tmpdir(t), 'sparse');
  const fd = fs.openSync(file, 'w');
  const data = Buffer.alloc(4096, 1);
  for (let at = 0; at < 8 << 20; at += 8192) fs.writeSync(fd, data, 0, data.length, at);
  fs.closeSync(fd);
  const r = spawnSync(process.execPath, ['-e', terminated, addon, file, '20'], { encoding: 'utf8', timeout: 120_000 });
  t.equal(r.signal, null, `no signal (${r.stderr.slice(-400)})`);
  t.equal(r.status, 0, 'exit 0');
  t.match(r.stdout, /all 20 workers ended/);
  t.end();
});
