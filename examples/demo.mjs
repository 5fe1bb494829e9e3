#!/usr/bin/env node
// npm run demo [-- --size 256M --channels 4 --keep]
// Makes a sample RAM image (runs of zero, text-like and random pages), migrates it over
// loopback with `mfd recv` and `mfd send` as two processes, checks the result byte for
// byte with SHA-256, and prints both sides' statistics.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    size: { type: 'string', default: '256M' },
    channels: { type: 'string', default: '4' },
    keep: { type: 'boolean', default: false },
  },
});
const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'mfd.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-demo-'));
const image = path.join(dir, 'vm1.ram');
const out = path.join(dir, 'received');
fs.mkdirSync(out);

function mfd(args, onStderr) {
  const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => {
    stderr += d;
    onStderr?.(stderr);
  });
  const done = new Promise((resolve) => p.on('exit', (code) => resolve({ code, stdout, stderr })));
  return { done };
}

async function sha256(file) {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk);
  return h.digest('hex');
}

function fail(msg) {
  console.error(`demo: ${msg}`);
  process.exitCode = 1;
}

try {
  console.log(`1. generating a ${opt.size} sample image (seed 1) in ${dir}`);
  const gen = await mfd(['gen-image', '--size', opt.size, '--seed', '1', image]).done;
  if (gen.code !== 0) throw new Error(gen.stderr);
  console.log(`   ${gen.stdout.trim()}`);

  console.log(`2. mfd recv --listen 127.0.0.1:0 --output ${out}`);
  let resolvePort;
  const portP = new Promise((r) => (resolvePort = r));
  const recv = mfd(['recv', '--listen', '127.0.0.1:0', '--output', out, '--json'], (err) => {
    const m = /listening on \S+:(\d+)/.exec(err);
    if (m) resolvePort(Number(m[1]));
  });
  const port = await Promise.race([portP, recv.done.then((r) => Promise.reject(new Error(`recv exited: ${r.stderr}`)))]);

  console.log(`3. mfd send --to 127.0.0.1:${port} --channels ${opt.channels} ${image}`);
  const sent = await mfd(['send', '--to', `127.0.0.1:${port}`, '--channels', opt.channels, '--json', image]).done;
  const got = await recv.done;
  if (sent.code !== 0 || got.code !== 0) throw new Error(`send exit ${sent.code}: ${sent.stderr}\nrecv exit ${got.code}: ${got.stderr}`);
  const s = JSON.parse(sent.stdout);
  const r = JSON.parse(got.stdout);

  console.log('4. verifying byte for byte (SHA-256)');
  const [a, b] = await Promise.all([sha256(image), sha256(path.join(out, 'vm1.ram'))]);
  console.log(`   sent     ${a}\n   received ${b}`);
  if (a !== b) fail('received image differs from the sent one');
  else console.log('   identical');

  const mib = (n) => (n / 1048576).toFixed(1);
  console.log('\n            time(s)  image MiB/s  wire Mbps  normal pages  zero pages  wire MiB  cpu(s)  peak RSS MiB');
  for (const [side, x] of [
    ['send', s],
    ['recv', r],
  ]) {
    console.log(
      `  ${side.padEnd(8)} ${(x.totalTimeMs / 1000).toFixed(3).padStart(7)}  ${mib(x.imageBytesPerSec).padStart(11)}  ${x.mbps.toFixed(0).padStart(9)}  ${String(x.normalPages).padStart(12)}  ${String(x.zeroPages).padStart(10)}  ${mib(x.wireBytes).padStart(8)}  ${(x.process.cpuUserSec + x.process.cpuSystemSec).toFixed(2).padStart(6)}  ${mib(x.process.maxRssBytes).padStart(12)}`,
    );
  }
  console.log(`  packets per channel: ${s.perChannel.map((c) => `${c.id}:${c.packets}`).join(' ')}`);
  // Pages per zero-page path: the sample image is sparse, so its zero pages come from the file's holes unread.
  console.log(
    `  zero-page detection, pages per path: ${Object.entries(s.paths.zeroPage.pages)
      .map(([p, n]) => `${p} ${n}`)
      .join(', ')}`,
  );
} catch (e) {
  fail(e.message);
} finally {
  if (opt.keep) console.log(`kept ${dir}`);
  else fs.rmSync(dir, { recursive: true, force: true });
}
