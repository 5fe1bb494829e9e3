#!/usr/bin/env node
// node bench/auth-cost.mjs [--size 512M --runs 3 --channels 4 --dir /tmp/mfd-auth-bench]
//
// What each way of securing the connections costs (README, "Authentication"): one `mfd recv` and
// one `mfd send` over loopback with a generated mixed image, compression none, for each of
//
//   plain      no flags (loopback only)
//   psk auth   --psk-file KEY --psk-mode auth: the challenge-response, then pages in clear
//   psk tls    --psk-file KEY (--psk-mode tls, the default): TLS 1.3 on the key
//   cert tls   --tls-cert/--tls-key/--tls-ca (certificates made here with the openssl CLI)
//
// measured pairwise in one run: a warm-up round (not counted), then --runs rounds, each running
// every mode once in an order that rotates round by round. Reports, per mode, the median and
// spread (min..max) of wall time (the sender's start to both processes' exit) and of the CPU
// seconds of both processes (user + system, from their --json), and each median over plain's.
// The receiver's output is deleted after each run. A markdown table on stdout; JSON lines in
// bench/results/auth-cost.jsonl.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    size: { type: 'string', default: '512M' },
    runs: { type: 'string', default: '3' },
    channels: { type: 'string', default: '4' },
    dir: { type: 'string', default: path.join(os.tmpdir(), 'mfd-auth-bench') },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin', 'mfd.js');
const runs = Number(opt.runs);
fs.mkdirSync(opt.dir, { recursive: true });
const image = path.join(opt.dir, `mixed-${opt.size}.ram`);
const out = path.join(opt.dir, 'out');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const now = () => Number(process.hrtime.bigint()) / 1e9;
const openssl = (...args) => {
  const r = spawnSync('openssl', args, { cwd: opt.dir, stdio: 'pipe' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
};

/** A key file and certificates for the receiver (IP SAN 127.0.0.1) and the sender, signed by one CA. */
function credentials() {
  const key = path.join(opt.dir, 'psk');
  fs.writeFileSync(key, randomBytes(32).toString('hex'), { mode: 0o600 });
  fs.chmodSync(key, 0o600);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=bench-ca');
  for (const [name, san] of [
    ['recv', 'IP:127.0.0.1'],
    ['send', 'DNS:sender.test'],
  ]) {
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    fs.writeFileSync(path.join(opt.dir, `${name}.ext`), `subjectAltName=${san}\n`);
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    );
  }
  const tls = (name) => [
    '--tls-cert',
    path.join(opt.dir, `${name}.pem`),
    '--tls-key',
    path.join(opt.dir, `${name}.key`),
    '--tls-ca',
    path.join(opt.dir, 'ca.pem'),
  ];
  return [
    { name: 'plain', what: 'no authentication', recv: [], send: [] },
    {
      name: 'psk auth',
      what: '--psk-file --psk-mode auth: challenge-response, then clear',
      recv: ['--psk-file', key, '--psk-mode', 'auth'],
      send: ['--psk-file', key, '--psk-mode', 'auth'],
    },
    { name: 'psk tls', what: '--psk-file (--psk-mode tls): TLS 1.3 on the key', recv: ['--psk-file', key], send: ['--psk-file', key] },
    { name: 'cert tls', what: '--tls-cert/--tls-key/--tls-ca: TLS 1.3, certificates', recv: tls('recv'), send: tls('send') },
  ];
}

/** Runs `mfd ARGS`; resolves with its exit code and output. `onStderr` sees stderr as it comes. */
function run(args, onStderr = () => {}) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => {
      stderr += d;
      onStderr(stderr);
    });
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function once(mode) {
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out);
  let listening;
  const port = new Promise((r) => (listening = r));
  const recv = run(['recv', '--listen', '127.0.0.1:0', '--output', out, '--json', '--no-progress', ...mode.recv], (err) => {
    const m = /listening on 127\.0\.0\.1:(\d+)/.exec(err);
    if (m) listening(Number(m[1]));
  });
  const p = await Promise.race([port, recv.then((r) => Promise.reject(new Error(`${mode.name}: recv exited ${r.code}: ${r.stderr}`)))]);
  const t0 = now();
  const [s, r] = await Promise.all([
    run(['send', '--to', `127.0.0.1:${p}`, '--channels', opt.channels, '--json', '--no-progress', ...mode.send, image]),
    recv,
  ]);
  const wall = now() - t0;
  if (s.code !== 0 || r.code !== 0) throw new Error(`${mode.name}: send exited ${s.code}, recv ${r.code}: ${s.stderr} ${r.stderr}`);
  const cpu = (j) => j.process.cpuUserSec + j.process.cpuSystemSec;
  const sj = JSON.parse(s.stdout);
  const rj = JSON.parse(r.stdout);
  if (sj.status !== 'completed' || rj.status !== 'completed') throw new Error(`${mode.name}: not completed`);
  return { wall, cpu: cpu(sj) + cpu(rj), sendCpu: cpu(sj), recvCpu: cpu(rj) };
}

async function main() {
  if (!fs.existsSync(image)) {
    console.error(`generating ${image}`);
    const g = spawnSync(process.execPath, [bin, 'gen-image', image, '--size', opt.size, '--profile', 'mixed', '--seed', '1'], {
      stdio: ['ignore', 2, 2],
    });
    if (g.status !== 0) process.exit(1);
  }
  const modes = credentials();
  const imageBytes = fs.statSync(image).size;
  const results = new Map(modes.map((m) => [m.name, []]));
  for (let round = -1; round < runs; round++) {
    const order = modes.map((_, i) => modes[(i + Math.max(round, 0)) % modes.length]);
    for (const m of order) {
      const r = await once(m);
      if (round >= 0) results.get(m.name).push(r);
      console.error(
        `${round < 0 ? 'warm-up' : `round ${round + 1}`}: ${m.name.padEnd(9)} ${r.wall.toFixed(3)} s, cpu ${r.cpu.toFixed(2)} s (send ${r.sendCpu.toFixed(2)}, recv ${r.recvCpu.toFixed(2)})`,
      );
    }
  }
  fs.rmSync(out, { recursive: true, force: true });
  const med = (name, k) => median(results.get(name).map((r) => r[k]));
  const spread = (name, k) => {
    const xs = results.get(name).map((r) => r[k]);
    return `${Math.min(...xs).toFixed(2)}..${Math.max(...xs).toFixed(2)}`;
  };
  const lines = [
    `${runs} runs per mode, interleaved (median, min..max), ${(imageBytes / 2 ** 20).toFixed(0)} MiB mixed image, ${opt.channels} channels, compression none, loopback, ${os.cpus().length} cores`,
    '',
    '| mode | what | wall s | vs plain | CPU s (both processes) | vs plain |',
    '|---|---|---|---|---|---|',
  ];
  for (const m of modes) {
    lines.push(
      `| ${m.name} | ${m.what} | ${med(m.name, 'wall').toFixed(2)} (${spread(m.name, 'wall')}) | ${(med(m.name, 'wall') / med('plain', 'wall')).toFixed(2)}x | ${med(m.name, 'cpu').toFixed(2)} (${spread(m.name, 'cpu')}) | ${(med(m.name, 'cpu') / med('plain', 'cpu')).toFixed(2)}x |`,
    );
  }
  console.log(lines.join('\n'));
  const record = {
    date: new Date().toISOString(),
    size: opt.size,
    runs,
    channels: Number(opt.channels),
    host: os.hostname(),
    results: Object.fromEntries(results),
  };
  fs.mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
  fs.appendFileSync(path.join(root, 'bench', 'results', 'auth-cost.jsonl'), JSON.stringify(record) + '\n');
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
