/** QEMU's words on the command line: tcp: URIs, multifd-* parameter names as aliases. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, sha256, tmpdir } from '../helpers/index.js';
import { mfd } from '../helpers/procs.js';
import { parseAddress, parseTcpAddress } from '../../src/cli/destination.js';

t.test('one parser of destinations: tcp:HOST:PORT beside HOST:PORT and file:PATH', async (t) => {
  t.same(parseAddress('tcp:10.0.0.1:4444', '--to', '127.0.0.1'), { kind: 'tcp', host: '10.0.0.1', port: 4444 });
  t.same(parseAddress('10.0.0.1:4444', '--to', '127.0.0.1'), { kind: 'tcp', host: '10.0.0.1', port: 4444 });
  t.same(parseAddress('tcp:[::1]:5', '--to', '127.0.0.1'), { kind: 'tcp', host: '::1', port: 5 });
  t.same(parseAddress('tcp::7', '--to', '127.0.0.1'), { kind: 'tcp', host: '127.0.0.1', port: 7 });
  t.same(parseAddress('file:/x/y,offset=4K', '--to', '127.0.0.1'), { kind: 'file', path: '/x/y', offset: 4096 });
  t.throws(() => parseAddress('tcp:host', '--to', '127.0.0.1'), {
    code: 'ERR_USAGE',
    message: /Expected HOST:PORT, tcp:HOST:PORT or file:PATH for --to but received "tcp:host"/,
  });
  t.throws(() => parseAddress('unix:/sock', '--to', '127.0.0.1'), { code: 'ERR_USAGE' });
  t.same(parseTcpAddress('tcp::0', '--listen', '0.0.0.0'), { host: '0.0.0.0', port: 0 });
  t.throws(() => parseTcpAddress('file:/x', '--listen', '0.0.0.0'), { code: 'ERR_USAGE', message: /for --listen but received "file:\/x"/ });
});

t.test("mfd recv --listen tcp: and mfd send --to tcp: with QEMU's multifd-* names migrate", async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const recv = mfd(t, ['recv', '--listen', 'tcp:127.0.0.1:0', '--output', out, '--json']);
  const port = Number((await recv.waitFor(/listening on [^\s]+:(\d+)/))[1]);
  const s = await mfd(t, [
    'send',
    '--to',
    `tcp:127.0.0.1:${port}`,
    '--multifd-channels',
    '3',
    '--multifd-compression',
    'zlib',
    '--multifd-zlib-level',
    '5',
    '--json',
    img,
  ]).done;
  const r = await recv.done;
  t.equal(s.code, 0, s.stderr);
  t.equal(r.code, 0, r.stderr);
  const sent = JSON.parse(s.stdout);
  t.equal(sent.channels, 3, '--multifd-channels set the channel count');
  t.equal(sent.compression, 'zlib', '--multifd-compression set the method');
  t.match(sent.compressionPath, /level 5/, '--multifd-zlib-level set the level');
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
});

t.test('aliases refuse what their targets refuse', async (t) => {
  const bad = await mfd(t, ['send', '--to', 'tcp:127.0.0.1:1', '--multifd-compression', 'zstd', '--multifd-zstd-level', '99', 'x']).done;
  t.equal(bad.code, 2);
  t.match(bad.stderr, /'--multifd-zstd-level <n>' argument '99' is invalid\. Expected an integer in 0\.\.20/);
  const wrong = await mfd(t, ['send', '--to', 'tcp:127.0.0.1:1', '--multifd-zlib-level', '3', 'x']).done;
  t.equal(wrong.code, 2);
  t.match(wrong.stderr, /--zlib-level applies to --compression zlib, not none/);
  const choice = await mfd(t, ['send', '--to', 'tcp:127.0.0.1:1', '--multifd-compression', 'gzip', 'x']).done;
  t.equal(choice.code, 2);
  t.match(choice.stderr, /Allowed choices are none/);
  const listen = await mfd(t, ['recv', '--listen', 'udp:1.2.3.4:5', '--output', '/tmp']).done;
  t.equal(listen.code, 2);
  t.match(listen.stderr, /Expected HOST:PORT or tcp:HOST:PORT for --listen but received "udp:1\.2\.3\.4:5"/);
  // recv's --channels (--multifd-channels) is the count of a QEMU source's channels, nothing else's.
  const notQemu = await mfd(t, ['recv', '--listen', '127.0.0.1:0', '--output', '/tmp', '--multifd-channels', '4']).done;
  t.equal(notQemu.code, 2);
  t.match(notQemu.stderr, /--channels is for --qemu: mfd send announces its channel count on the control channel/);
  const fromFile = await mfd(t, ['recv', '--qemu', '--from', 'file:/nonexistent', '--output', '/tmp', '--channels', '2']).done;
  t.equal(fromFile.code, 2);
  t.match(fromFile.stderr, /--channels is for a network migration from QEMU \(--listen\)/);
  const range = await mfd(t, ['recv', '--qemu', '--listen', '127.0.0.1:0', '--output', '/tmp', '--multifd-channels', '-1']).done;
  t.equal(range.code, 2);
  t.match(range.stderr, /'--multifd-channels <n>' argument '-1' is invalid/);
});
