/** The real binary, as users and scripts run it: exit codes, --json, stdout vs stderr. */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeImage, sha256, tmpdir, RawSender } from '../helpers/index.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { mfd, mfdRecv } from '../helpers/procs.js';
import { noQat } from '../helpers/build.js';

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
  // Values commander itself refuses: the same shape as mfd's own usage errors, and JSON with --json.
  const big = run('send', '--to', '127.0.0.1:1', '--channels', '300', '--json', 'x');
  t.equal(big.status, 2);
  t.match(
    big.stderr,
    /^mfd send: error: option '--channels <n>' argument '300' is invalid\. Expected an integer in 1\.\.255 \(0 only with --qemu\) for --channels but received "300"\. \[ERR_USAGE\]$/m,
  );
  t.match(JSON.parse(big.stdout), { status: 'failed', error: { code: 'ERR_USAGE', message: /argument '300' is invalid/ } });
  const missing = run('recv', '--listen', '127.0.0.1:0', '--json');
  t.equal(missing.status, 2);
  t.match(JSON.parse(missing.stdout), { status: 'failed', error: { code: 'ERR_USAGE', message: /required option '--output/ } });
});

t.test('connection refused: exit 4, message on stderr, JSON failure on stdout', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 8192, 'random');
  const r = run('send', '--to', `127.0.0.1:${await closedPort()}`, '--json', img);
  t.equal(r.status, 4);
  t.match(r.stderr, /mfd send: error: control channel: cannot connect to 127\.0\.0\.1:\d+/);
  t.match(JSON.parse(r.stdout), { status: 'failed', error: { code: 'ERR_ECONNREFUSED' } });
});

t.test('hardware asked for and missing: exit 8 naming what is missing', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 8192, 'random');
  const r = run('send', '--to', '127.0.0.1:1', '--compression', 'qatzip', '--qatzip-sw-fallback', 'off', '--json', img);
  t.equal(r.status, 8);
  t.match(r.stderr, new RegExp(`no QAT hardware session \\(${noQat.source}.*\\) and --qatzip-sw-fallback is off`));
  t.match(JSON.parse(r.stdout), { status: 'failed', error: { code: 'ERR_QATZIP_UNAVAILABLE' } });
  const q = run('send', '--to', '127.0.0.1:1', '--compression', 'qpl', '--require-hardware', img);
  t.equal(q.status, 8);
  t.match(q.stderr, /qpl: Intel IAA through QPL is required \(--require-hardware\)/);
  const b = run('send', '--to', '127.0.0.1:1', '--compression', 'qatzip', '--qatzip-sw-fallback', 'maybe', img);
  t.equal(b.status, 2);
  t.match(b.stderr, /Expected on or off for --qatzip-sw-fallback but received "maybe"/);
  const h = run('send', '--help');
  t.match(
    h.stdout,
    /--accel-path <path>[\s\S]*--require-hardware[\s\S]*--qpl-sw-engine <auto\|mfd\|qpl>[\s\S]*--qatzip-sw-fallback <on\|off>[\s\S]*--qatzip-sw-engine <mfd\|qatzip>/,
  );
});

t.test('missing image: exit 6', async (t) => {
  const r = run('send', '--to', '127.0.0.1:1', '/nonexistent/image.ram');
  t.equal(r.status, 6);
  t.match(r.stderr, /cannot open image "\/nonexistent\/image.ram"/);
  t.notMatch(r.stderr, /NAME=PATH/, 'no hint for a plain path');
  for (const spec of ['a/b=x.ram', '=x.ram']) {
    const n = run('send', '--to', '127.0.0.1:1', spec);
    t.equal(n.status, 6);
    t.match(
      n.stderr,
      /read as a path: in NAME=PATH the name must be non-empty and without "\/"/,
      `${spec}: says why it was read as a path`,
    );
  }
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
  const recv = spawn(process.execPath, [bin, 'recv', '--listen', '127.0.0.1:0', '--output', out, '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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

/** Starts `mfd recv` as a process; resolves once it listens. */
async function startRecv(t: Test, out: string) {
  const p = spawn(process.execPath, [bin, 'recv', '--listen', '127.0.0.1:0', '--output', out, '--log-level', 'info'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => p.kill('SIGKILL'));
  let err = '';
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  const port = await new Promise<number>((resolve) => {
    p.stderr.on('data', (d) => {
      err += d;
      const m = /listening on [^\s]+:(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
  });
  return { p, port, exited, stderr: () => err };
}

t.test('Ctrl-C on the receiver mid-migration: exit 130, the sender is told, no output left', async (t) => {
  const dir = tmpdir(t);
  const r = await startRecv(t, dir);
  const raw = new RawSender(r.port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ ramblocks: [{ name: 'vm.ram', size: 1 << 30 }] }), { type: 'ready' });
  t.ok(
    fs.readdirSync(dir).some((f) => f.endsWith('.mfd-partial')),
    'output under a temporary name while running',
  );
  r.p.kill('SIGINT');
  const killedAt = performance.now();
  t.equal(await r.exited, 130);
  t.comment(`fault: SIGINT on the receiver; receiver exit 130 after ${Math.round(performance.now() - killedAt)} ms`);
  t.match(await raw.control.next(), { type: 'error', code: 'ERR_INTERRUPTED' });
  t.same(fs.readdirSync(dir), [], 'temporary output removed');
  t.match(r.stderr(), /interrupted by SIGINT/);
});

t.test('a sender that vanishes mid-packet: the receiver exits 4 naming the channel, no output left', async (t) => {
  const dir = tmpdir(t);
  const r = await startRecv(t, dir);
  const raw = new RawSender(r.port);
  t.match(await raw.hello({ ramblocks: [{ name: 'vm.ram', size: 1 << 20 }] }), { type: 'ready' });
  const header = new Uint8Array(1344);
  header.set([0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1], 0);
  await raw.channel(encodeInitPacket(raw.uuidBytes, 0), header.subarray(0, 500));
  await new Promise((res) => setTimeout(res, 100));
  raw.close(); // control and data connections reset
  const goneAt = performance.now();
  t.equal(await r.exited, 4);
  t.comment(`fault: sender vanished mid-packet; receiver exit 4 after ${Math.round(performance.now() - goneAt)} ms`);
  t.match(r.stderr(), /channel 0: connection closed in the middle of a packet header|control channel .* closed/);
  t.same(fs.readdirSync(dir), []);
});

t.test('--dump-streams DIR: made when missing; one that cannot be made is refused before listening', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const dumps = path.join(dir, 'dumps', 'today');
  const recv = await mfdRecv(t, ['--output', out, '--dump-streams', dumps, '--no-progress']);
  const s = await mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--channels', '2', img]).done;
  const r = await recv.done;
  t.equal(s.code, 0, s.stderr);
  t.equal(r.code, 0, r.stderr);
  t.same(fs.readdirSync(dumps).sort(), ['channel-0.bin', 'channel-1.bin'], 'the directory was made, a stream per channel');

  fs.writeFileSync(path.join(dir, 'plain'), 'x');
  const bad = run('recv', '--listen', '127.0.0.1:0', '--output', out, '--dump-streams', path.join(dir, 'plain', 'sub'), '--json');
  t.equal(bad.status, 6, bad.stderr);
  t.match(bad.stderr, /--dump-streams: cannot create directory ".*plain\/sub": ENOTDIR/);
  t.notMatch(bad.stderr, /listening on/, 'refused before listening');
  t.match(JSON.parse(bad.stdout), { status: 'failed', error: { code: 'ERR_ENOTDIR' } });
});

t.test('a reader that leaves early (| head -1) does not turn a finished command into a crash', async (t) => {
  const dir = tmpdir(t);
  const p = spawn(process.execPath, [bin, 'gen-image', '--size', '1M', path.join(dir, 'x.ram')], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout.destroy(); // the read end closes before anything is written: the write fails with EPIPE
  let err = '';
  p.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((r) => p.on('close', r));
  t.equal(code, 0, err);
  t.notMatch(err, /EPIPE|Error/, 'no stack trace');
  t.equal(fs.statSync(path.join(dir, 'x.ram')).size, 1 << 20, 'the work was done');
});

t.test('an --output directory the receiver cannot write to is refused at start-up (exit 6), not when a sender arrives', async (t) => {
  const dir = tmpdir(t);
  const ro = path.join(dir, 'ro');
  fs.mkdirSync(ro, { mode: 0o555 });
  const asRoot = process.getuid?.() === 0;
  // Root may write anywhere: run as user nobody, when this machine can.
  const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath];
  if (asRoot && spawnSync('sh', ['-c', 'command -v setpriv']).status !== 0) return void t.skip('root, and no setpriv to drop it', () => {});
  const exec = (args: string[]) =>
    asRoot ? spawnSync(nobody[0]!, [...nobody.slice(1), bin, ...args], { encoding: 'utf8', timeout: 60_000 }) : run(...args);
  fs.chmodSync(dir, 0o755);
  if (asRoot && exec(['--version']).status !== 0)
    return void t.skip('user nobody cannot run this checkout (its directory is private)', () => {});
  const r = exec(['recv', '--listen', '127.0.0.1:0', '--output', ro]);
  t.equal(r.status, 6, r.stderr);
  t.match(r.stderr, /--output ".*ro": cannot create files there: EACCES/);
  t.notMatch(r.stderr, /listening on/);
});
