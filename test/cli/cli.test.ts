/** The real binary, as users and scripts run it: exit codes, --json, stdout vs stderr. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeImage, sha256, tmpdir } from '../helpers/index.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

t.test('--help explains commands and exit codes', async (t) => {
  const r = run('--help');
  t.equal(r.status, 0);
  t.match(r.stdout, /recv \[options\]/);
  t.match(r.stdout, /Exit codes:[\s\S]*3 +protocol error/);
  const s = run('send', '--help');
  t.match(s.stdout, /--channels <n>.*multifd-channels/s);
  t.match(s.stdout, /--zero-page-detection/);
});

t.test('bad option values exit 2 with the valid range', async (t) => {
  const r = run('send', '--to', '127.0.0.1:1', '--channels', '0', 'x');
  t.equal(r.status, 2);
  t.match(r.stderr, /Expected an integer in 1\.\.255 for --channels but received "0"/);
  const p = run('send', '--to', '127.0.0.1:1', '--page-size', '8192', 'x');
  t.equal(p.status, 2);
  t.match(p.stderr, /Expected one of 4096, 16384, 65536 for --page-size/);
  const c = run('send', '--to', '127.0.0.1:1', '--compression', 'gzip', 'x');
  t.equal(c.status, 2);
  t.match(c.stderr, /Allowed choices are none/);
});

t.test('connection refused: exit 4, message on stderr, JSON failure on stdout', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 8192, 'random');
  const r = run('send', '--to', `127.0.0.1:${await closedPort()}`, '--json', img);
  t.equal(r.status, 4);
  t.match(r.stderr, /mfd send: error: control channel: cannot connect to 127\.0\.0\.1:\d+/);
  t.match(JSON.parse(r.stdout), { status: 'failed', error: { code: 'ERR_ECONNREFUSED' } });
});

t.test('missing image: exit 6', async (t) => {
  const r = run('send', '--to', '127.0.0.1:1', '/nonexistent/image.ram');
  t.equal(r.status, 6);
  t.match(r.stderr, /cannot open image "\/nonexistent\/image.ram"/);
});

t.test('gen-image is reproducible and mixed like memory', async (t) => {
  const dir = tmpdir(t);
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  const c = path.join(dir, 'c');
  const ra = run('gen-image', '--size', '8M', '--seed', '3', '--json', a);
  t.equal(ra.status, 0, ra.stderr);
  run('gen-image', '--size', '8M', '--seed', '3', b);
  run('gen-image', '--size', '8M', '--seed', '4', c);
  t.equal(sha256(a), sha256(b), 'same seed, same bytes');
  t.not(sha256(a), sha256(c), 'another seed, other bytes');
  const { pages } = JSON.parse(ra.stdout);
  const total = pages.zero + pages.text + pages.random;
  t.equal(total, 2048);
  t.ok(Math.abs(pages.zero / total - 0.5) < 0.12, `zero share ${pages.zero / total}`);
  t.ok(Math.abs(pages.text / total - 0.3) < 0.12, `text share ${pages.text / total}`);
  t.ok(Math.abs(pages.random / total - 0.2) < 0.12, `random share ${pages.random / total}`);
});

t.test('recv and send as two processes: both exit 0 with --json summaries, output identical', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm1.ram'), (3 << 20) + 4096, 'mixed');
  const vram = makeImage(path.join(dir, 'vram.bin'), 1 << 20, 'text');
  const recv = spawn(process.execPath, [bin, 'recv', '--listen', '127.0.0.1:0', '--output', out, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let rout = '';
  let rerr = '';
  recv.stdout.on('data', (d) => (rout += d));
  const port = await new Promise<number>((resolve, reject) => {
    recv.stderr.on('data', (d) => {
      rerr += d;
      const m = /listening on [^\s]+:(\d+)/.exec(rerr);
      if (m) resolve(Number(m[1]));
    });
    recv.on('exit', () => reject(new Error(`recv exited early: ${rerr}`)));
  });
  const s = run('send', '--to', `127.0.0.1:${port}`, '--channels', '3', '--json', img, `vga.vram=${vram}`);
  const rcode = await new Promise<number | null>((r) => recv.on('exit', r));
  t.equal(s.status, 0, s.stderr);
  t.equal(rcode, 0, rerr);
  const sent = JSON.parse(s.stdout);
  const got = JSON.parse(rout);
  t.match(sent, { side: 'send', status: 'completed', channels: 3, compression: 'none', zeroPageDetection: 'multifd' });
  t.match(got, { side: 'recv', status: 'completed', channels: 3 });
  t.equal(got.wireBytes, sent.wireBytes);
  t.ok(sent.mbps > 0 && sent.pagesPerSecond > 0 && sent.perChannel.length === 3);
  t.equal(sha256(path.join(out, 'vm1.ram')), sha256(img));
  t.equal(sha256(path.join(out, 'vga.vram')), sha256(vram));
  t.equal(s.stderr, '', 'nothing on stderr at the default log level');
});
