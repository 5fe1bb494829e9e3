/**
 * The command line around authentication: a receiver without TLS or PSK listens on loopback
 * only unless --insecure; key and certificate flags are checked before anything listens.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, sha256, tmpdir } from '../helpers/index.js';
import { spawn } from 'node:child_process';
import { bin, mfd } from '../helpers/files.js';
import { mfdAsync, pskFile } from '../helpers/auth.js';
import { isLoopback } from '../../src/transport/security.js';

t.test('loopback addresses', async (t) => {
  for (const h of ['127.0.0.1', '127.3.2.1', '::1', 'localhost', 'LOCALHOST', '::ffff:127.0.0.1']) t.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '198.18.0.2', 'example.com', '127.0.0.1.example.com', '128.0.0.1'])
    t.notOk(isLoopback(h), h);
});

t.test('recv on a non-loopback address without authentication: exit 2 naming the ways out', async (t) => {
  const dir = tmpdir(t);
  for (const listen of ['0.0.0.0:0', ':0', '[::]:0']) {
    const r = mfd('recv', '--listen', listen, '--output', dir);
    t.equal(r.status, 2, listen);
    t.match(
      r.stderr,
      /refusing to listen on (0\.0\.0\.0|::) without authentication: anyone who reaches the port could write files\. Give --tls-cert\/--tls-key\/--tls-ca or --psk-file \(on both sides\), or --insecure to accept any sender \[ERR_USAGE\]/,
    );
  }
});

/** `mfd recv ARGS` listening on all interfaces; a sender reaches it over 127.0.0.1. */
async function migrateAllInterfaces(t: Test, recvArgs: string[], sendArgs: string[]) {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const p = spawn(process.execPath, [bin, 'recv', '--listen', '0.0.0.0:0', '--output', out, ...recvArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.teardown(() => p.kill('SIGKILL'));
  let err = '';
  const exited = new Promise<number | null>((r) => p.on('exit', r));
  const port = await new Promise<number>((resolve, reject) => {
    p.stderr.on('data', (d) => {
      err += d;
      const m = /listening on 0\.0\.0\.0:(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    void exited.then(() => reject(new Error(err)));
  });
  const s = await mfdAsync(t, ['send', '--to', `127.0.0.1:${port}`, ...sendArgs, img]);
  t.equal(s.status, 0, s.stderr);
  t.equal(await exited, 0, err);
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
}

t.test('--insecure allows all interfaces without authentication', (t) => migrateAllInterfaces(t, ['--insecure'], []));

t.test('--psk-file allows all interfaces, in either --psk-mode', async (t) => {
  const key = pskFile(tmpdir(t), 'psk');
  await migrateAllInterfaces(t, ['--psk-file', key], ['--psk-file', key]);
  await migrateAllInterfaces(t, ['--psk-file', key, '--psk-mode', 'auth'], ['--psk-file', key, '--psk-mode', 'auth']);
});

t.test('key and certificate flags are checked before anything connects or listens', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'vm.ram'), 8192, 'mixed');
  const open = pskFile(dir, 'open', 32, 0o644);
  const o = mfd('recv', '--listen', '127.0.0.1:0', '--output', dir, '--psk-file', open);
  t.equal(o.status, 2);
  t.match(o.stderr, /--psk-file ".*open": readable or writable by other users \(mode 644\); chmod 600 it/);
  const short = pskFile(dir, 'short', 8);
  const s = mfd('send', '--to', '127.0.0.1:1', '--psk-file', short, img);
  t.equal(s.status, 2);
  t.match(s.stderr, /--psk-file ".*short": 8 bytes, expected at least 16/);
  const missing = mfd('send', '--to', '127.0.0.1:1', '--psk-file', path.join(dir, 'nope'), img);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /--psk-file ".*nope": not a readable file/);
  const partial = mfd('send', '--to', '127.0.0.1:1', '--tls-cert', img, img);
  t.equal(partial.status, 2);
  t.match(partial.stderr, /TLS needs all three of --tls-cert, --tls-key and --tls-ca/);
  const both = mfd(
    'recv',
    '--listen',
    '127.0.0.1:0',
    '--output',
    dir,
    '--tls-cert',
    img,
    '--tls-key',
    img,
    '--tls-ca',
    img,
    '--psk-file',
    short,
  );
  t.equal(both.status, 2);
  t.match(both.stderr, /give either --tls-cert\/--tls-key\/--tls-ca or --psk-file, not both/);
  const group = pskFile(dir, 'group', 32, 0o640);
  const g = mfd('send', '--to', '127.0.0.1:1', '--psk-file', group, '--connect-timeout', '200ms', img);
  t.equal(g.status, 4, 'a group-readable key is used (with a warning)');
  t.match(g.stderr, /--psk-file \\".*group\\" is accessible to its group \(mode 640\)/);
});

t.test('authentication flags where nothing connects are refused, and a plain send off loopback is warned about', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'vm.ram'), 8192, 'mixed');
  const key = pskFile(dir, 'key', 32);
  const save = mfd('send', '--to', `file:${path.join(dir, 'saved.mfd')}`, '--psk-file', key, img);
  t.equal(save.status, 2);
  t.match(save.stderr, /--psk-file: authentication is for network connections; a migration file \(--to file:PATH\) is written locally/);
  t.notOk(fs.existsSync(path.join(dir, 'saved.mfd')), 'nothing saved');
  const restore = mfd('recv', '--from', `file:${path.join(dir, 'saved.mfd')}`, '--output', dir, '--tls-ca', img);
  t.equal(restore.status, 2);
  t.match(restore.stderr, /--tls-ca: authentication is for network connections; a migration file \(--from file:PATH\) is read locally/);
  const replay = mfd('send', '--qemu', '--to', '127.0.0.1:1', '--channels', '1', '--psk-file', key, dir);
  t.equal(replay.status, 2);
  t.match(replay.stderr, /--psk-file cannot be used with --qemu/);
  // 192.0.2.1 (TEST-NET-1) is never routed: the connection times out after the warning.
  const plain = mfd('send', '--to', '192.0.2.1:4444', '--connect-timeout', '200ms', img);
  t.equal(plain.status, 4);
  t.match(plain.stderr, /sending to 192\.0\.2\.1 without authentication/);
});

t.test('--help lists the authentication flags', async (t) => {
  const r = mfd('recv', '--help');
  t.match(
    r.stdout,
    /--insecure[\s\S]*--tls-cert <file>[\s\S]*--tls-key <file>[\s\S]*--tls-ca <file>[\s\S]*--psk-file <file>[\s\S]*--psk-mode <mode>[\s\S]*--psk-identity <name>/,
  );
  const s = mfd('send', '--help');
  t.match(s.stdout, /--tls-cert <file>[\s\S]*--psk-file <file>/);
  t.notMatch(s.stdout, /--insecure/);
  t.match(mfd('--help').stdout, /10 +authentication failed/);
});
