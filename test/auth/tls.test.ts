/**
 * TLS on the control and every data channel: a migration end to end, each way a certificate
 * can be refused (wrong CA on either side, no client certificate, wrong host name) with its
 * error and exit code, and strangers connecting while a TLS migration runs.
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { makeImage, migrate, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { captureLogger, holdChannel, makeCerts, mfdAsync, recvProcess, tlsFiles, tlsFlags } from '../helpers/auth.js';
import { MAX_PENDING_AUTH, TlsSecurity } from '../../src/transport/security.js';
import { send } from '../../src/sender/sender.js';
import { decodeFrame } from '../../src/control/protocol.js';

const dir = tmpdir(t);
const certs = makeCerts(dir);
const recvTls = new TlsSecurity(tlsFiles(certs.recv, certs.ca));
const sendTls = new TlsSecurity(tlsFiles(certs.send, certs.ca));

t.test('a TLS migration arrives byte-identical', async (t) => {
  const work = tmpdir(t);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const a = makeImage(path.join(work, 'a.ram'), (5 << 20) + 4096, 'mixed');
  const b = makeImage(path.join(work, 'b.ram'), 1 << 20, 'random');
  const { sent, received } = await migrate(
    {
      images: [
        { name: 'a.ram', path: a },
        { name: 'b.ram', path: b },
      ],
      channels: 3,
      pageSize: 4096,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
      security: sendTls,
    },
    { outputDir: out, security: recvTls },
  );
  t.equal(sent.stats.status, 'completed');
  t.equal(received.stats.wireBytes, sent.stats.wireBytes);
  t.equal(sha256(path.join(out, 'a.ram')), sha256(a));
  t.equal(sha256(path.join(out, 'b.ram')), sha256(b));
});

t.test('refused certificates: clear errors, exit 10, the receiver logs the peer and goes on to a real migration', async (t) => {
  const work = tmpdir(t);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(work, 'vm.ram'), 2 << 20, 'mixed');
  const r = await recvProcess(t, ['--output', out, ...tlsFlags(certs.recv, certs.ca)]);
  const to = ['send', '--to', `127.0.0.1:${r.port}`, '--channels', '2'];

  // The sender does not trust the receiver's CA.
  const wrongCa = await mfdAsync(t, [...to, ...tlsFlags(certs.send, certs.otherCa), img]);
  t.equal(wrongCa.status, 10, wrongCa.stderr);
  t.match(
    wrongCa.stderr,
    /control channel: cannot connect to 127\.0\.0\.1:\d+ over TLS: self-signed certificate in certificate chain \[ERR_TLS_SELF_SIGNED_CERT_IN_CHAIN\]/,
  );

  // The receiver does not trust the sender's CA: it says so, and the sender reports it.
  const stranger = await mfdAsync(t, [...to, ...tlsFlags(certs.stranger, certs.ca), img]);
  t.equal(stranger.status, 10, stranger.stderr);
  t.match(
    stranger.stderr,
    /the receiver refused the connection: TLS: the sender's certificate is refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE \(not signed by --tls-ca\) \[ERR_TLS_PEER_CERTIFICATE\]/,
  );

  // A client without a certificate.
  const bare = tls.connect({ host: '127.0.0.1', port: r.port, ca: fs.readFileSync(certs.ca) });
  bare.on('error', () => {});
  const said = await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    bare.on('data', (c: Buffer) => chunks.push(c));
    bare.on('close', () => resolve(Buffer.concat(chunks)));
  });
  t.match(decodeFrame(said.subarray(4)), { type: 'error', code: 'ERR_TLS_PEER_CERTIFICATE', message: /the sender gave no certificate/ });

  // None of them came near the outputs, and the receiver still takes a real migration.
  t.same(fs.readdirSync(out), []);
  const ok = await mfdAsync(t, [...to, ...tlsFlags(certs.send, certs.ca), img]);
  t.equal(ok.status, 0, ok.stderr);
  t.equal(await r.exited, 0, r.stderr());
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
  const log = r.stderr();
  t.match(
    log,
    /connection from 127\.0\.0\.1:\d+ refused: TLS: socket hang up \[ECONNRESET\]/,
    'the sender that hung up on our certificate',
  );
  t.match(log, /connection from 127\.0\.0\.1:\d+ refused: TLS: the sender's certificate is refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE/);
  t.match(log, /connection from 127\.0\.0\.1:\d+ refused: TLS: the sender gave no certificate/);
});

t.test('a receiver certificate for another host name is refused by the sender (exit 10)', async (t) => {
  const work = tmpdir(t);
  const img = makeImage(path.join(work, 'vm.ram'), 1 << 20, 'mixed');
  const r = await recvProcess(t, ['--output', work, ...tlsFlags(certs.otherName, certs.ca)]);
  const s = await mfdAsync(t, ['send', '--to', `127.0.0.1:${r.port}`, ...tlsFlags(certs.send, certs.ca), '--json', img]);
  t.equal(s.status, 10);
  t.match(
    s.stderr,
    /control channel: cannot connect to 127\.0\.0\.1:\d+ over TLS: Hostname\/IP does not match certificate's altnames: IP: 127\.0\.0\.1 is not in the cert's list/,
  );
  t.match(JSON.parse(s.stdout), { status: 'failed', error: { code: 'ERR_TLS_CERT_ALTNAME_INVALID' } });
  // By name: "localhost" is in the receiver's certificate, "other.example" would be, 127.0.0.1 is not.
  const byName = await mfdAsync(t, ['send', '--to', `localhost:${r.port}`, ...tlsFlags(certs.send, certs.ca), img]);
  t.equal(byName.status, 10);
  t.match(
    byName.stderr,
    /Hostname\/IP does not match certificate's altnames: Host: localhost\. is not in the cert's altnames: DNS:other\.example|connect ECONNREFUSED/,
  );
});

t.test('strangers while a TLS migration runs are closed and logged; the migration ends byte-identical', async (t) => {
  const work = tmpdir(t);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(work, 'vm.ram'), 16 << 20, 'mixed');
  const { logger, lines } = captureLogger();
  const attackers: number[] = [];
  const attack = async (port: number): Promise<void> => {
    // Read what the receiver says, so its close is seen.
    const closed = (s: net.Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.resume().once('close', () => r())));
    // Plain bytes where a TLS handshake belongs.
    const junk = net.connect({ host: '127.0.0.1', port });
    junk.on('error', () => {});
    await new Promise((r) => junk.once('connect', r));
    attackers.push(junk.localPort!);
    junk.write(Buffer.alloc(600, 0x11));
    // A certificate from another CA, speaking the multifd magic.
    const stranger = tls.connect({ host: '127.0.0.1', port, ...tlsFiles(certs.stranger, certs.ca) });
    stranger.on('error', () => {});
    await new Promise((r) => stranger.once('secureConnect', r));
    attackers.push(stranger.localPort!);
    stranger.write(Buffer.from([0x11, 0x22, 0x33, 0x44]));
    await Promise.all([closed(junk), closed(stranger)]);
  };
  const { port, result } = await startReceiver({ outputDir: out, logger, security: recvTls });
  let finished = false;
  void result.then(() => (finished = true));
  // The strangers come after the hello was accepted and channels 0..2 connected, before channel 3 does.
  const during = async (): Promise<void> => {
    await attack(port);
    t.notOk(finished, 'the strangers came while the migration ran');
  };
  const sent = await send({
    host: '127.0.0.1',
    port,
    logger,
    images: [{ name: 'vm.ram', path: img }],
    channels: 4,
    pageSize: 4096,
    compression: 'none',
    methodParams: {},
    zeroPageDetection: 'multifd',
    security: holdChannel(sendTls, 3, during),
  });
  const received = await result;
  t.equal(sent.stats.status, 'completed');
  t.equal(received.stats.status, 'completed');
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
  t.equal(attackers.length, 2);
  for (const p of attackers) {
    t.ok(
      lines.some((l) => l.level === 40 && l.peer === `127.0.0.1:${p}` && /refused/.test(String(l.msg))),
      `the stranger from port ${p} is logged: ${JSON.stringify(lines)}`,
    );
  }
});

t.test('a flood of silent TLS connections: each dropped one is refused and logged exactly once', async (t) => {
  const refusals = new Map<string, string[]>();
  const { server } = recvTls.createServer({
    onAccepted: (s) => s.destroy(),
    onRefused: (peer, why) => refusals.set(peer, [...(refusals.get(peer) ?? []), why]),
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const { port } = server.address() as net.AddressInfo;
  const extra = 8;
  const socks: net.Socket[] = [];
  for (let i = 0; i < MAX_PENDING_AUTH + extra; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    socks.push(s);
  }
  t.teardown(() => socks.forEach((s) => s.destroy()));
  // Let the evicted connections' handshakes fail on the receiver (each would be a second refusal).
  await new Promise((r) => setTimeout(r, 500));
  const dropped = [...refusals.values()].filter((w) => w.some((x) => x.startsWith('dropped:')));
  t.equal(dropped.length, extra, `the ${extra} oldest connections over the cap are dropped`);
  t.ok(
    dropped.every((w) => w.length === 1),
    `each is refused once: ${JSON.stringify(dropped.filter((w) => w.length > 1))}`,
  );
});
