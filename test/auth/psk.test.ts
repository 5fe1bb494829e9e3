/**
 * The pre-shared key's challenge-response on every connection (--psk-mode auth; TLS-PSK, the
 * default, is psk-tls.test.ts): a migration end to end, a wrong
 * key refused on each side, and strangers (garbage, wrong key, silence, a replayed proof, a
 * proof for another migration or role) connecting while a PSK migration runs.
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { makeImage, migrate, rejection, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { captureLogger, holdChannel, mfdAsync, pskFile, recvProcess } from '../helpers/auth.js';
import { MAX_PENDING_AUTH, PskSecurity, type ChannelBinding } from '../../src/transport/security.js';
import { send } from '../../src/sender/sender.js';
import { encodeInitPacket, uuidFromString } from '../../src/wire/init-packet.js';
import { AuthError, ExitCode } from '../../src/errors.js';

const dir = tmpdir(t);
const keyFile = pskFile(dir, 'psk');
const key = fs.readFileSync(keyFile);
const pipeline = { pageSize: 4096, compression: 'none', methodParams: {}, zeroPageDetection: 'multifd' } as const;

t.test('a PSK migration arrives byte-identical', async (t) => {
  const work = tmpdir(t);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const a = makeImage(path.join(work, 'a.ram'), (5 << 20) + 4096, 'mixed');
  const b = makeImage(path.join(work, 'b.ram'), 1 << 20, 'random');
  const psk = new PskSecurity(key);
  const { sent, received } = await migrate(
    {
      images: [
        { name: 'a.ram', path: a },
        { name: 'b.ram', path: b },
      ],
      channels: 3,
      ...pipeline,
      security: psk,
    },
    { outputDir: out, security: psk },
  );
  t.equal(sent.stats.status, 'completed');
  t.equal(received.stats.wireBytes, sent.stats.wireBytes, 'the handshake is not counted as migration bytes');
  t.equal(sha256(path.join(out, 'a.ram')), sha256(a));
  t.equal(sha256(path.join(out, 'b.ram')), sha256(b));
});

t.test(
  'a sender with another key, without a key or with TLS-PSK is refused (exit 10); the receiver logs it and takes the real sender',
  async (t) => {
    const work = tmpdir(t);
    const out = path.join(work, 'out');
    fs.mkdirSync(out);
    const img = makeImage(path.join(work, 'vm.ram'), 2 << 20, 'mixed');
    const r = await recvProcess(t, ['--output', out, '--psk-file', keyFile, '--psk-mode', 'auth']);
    const wrong = await mfdAsync(t, [
      'send',
      '--to',
      `127.0.0.1:${r.port}`,
      '--psk-file',
      pskFile(work, 'other'),
      '--psk-mode',
      'auth',
      '--json',
      img,
    ]);
    t.equal(wrong.status, ExitCode.AUTH, wrong.stderr);
    t.match(
      wrong.stderr,
      /control channel \(127\.0\.0\.1:\d+\): PSK authentication: the receiver refused our proof: its key differs from --psk-file \[ERR_PSK_HANDSHAKE\]/,
    );
    t.match(JSON.parse(wrong.stdout), { status: 'failed', error: { code: 'ERR_PSK_HANDSHAKE' } });
    const plain = await mfdAsync(t, ['send', '--to', `127.0.0.1:${r.port}`, img]);
    t.equal(plain.status, ExitCode.AUTH);
    t.match(plain.stderr, /the peer asks for PSK authentication: give --psk-file --psk-mode auth \[ERR_PSK_REQUIRED\]/);
    const tlsPsk = await mfdAsync(t, ['send', '--to', `127.0.0.1:${r.port}`, '--psk-file', keyFile, img]);
    t.equal(tlsPsk.status, ExitCode.AUTH);
    t.match(
      tlsPsk.stderr,
      /control channel \(127\.0\.0\.1:\d+\): TLS-PSK: the receiver does not answer in TLS \(is it running with --psk-mode auth\?\) \[ERR_PSK_HANDSHAKE\]/,
    );
    t.same(fs.readdirSync(out), [], 'nothing written for them');
    const ok = await mfdAsync(t, ['send', '--to', `127.0.0.1:${r.port}`, '--psk-file', keyFile, '--psk-mode', 'auth', img]);
    t.equal(ok.status, 0, ok.stderr);
    t.equal(await r.exited, 0, r.stderr());
    t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
    t.match(r.stderr(), /connection from 127\.0\.0\.1:\d+ refused: PSK authentication: wrong proof: the peer does not hold this key/);
    t.match(
      r.stderr(),
      /connection from 127\.0\.0\.1:\d+ refused: PSK authentication: received 0x4d464443 version 0, expected 0x4d464441 version 1 \(a sender without --psk-file\?\)/,
    );
    t.match(
      r.stderr(),
      /connection from 127\.0\.0\.1:\d+ refused: PSK authentication: received 0x160301\w\w version \d+, expected 0x4d464441 version 1 \(a TLS handshake: a sender with --psk-mode tls or --tls-\*\?\)/,
    );
    t.notMatch(r.stderr(), key.toString('hex'), 'the key is never logged');
  },
);

t.test('a receiver that cannot prove the key is refused by the sender before any migration byte', async (t) => {
  const work = tmpdir(t);
  const img = makeImage(path.join(work, 'vm.ram'), 1 << 20, 'mixed');
  const got: Buffer[] = [];
  const fake = net.createServer((s) => {
    s.on('data', (c: Buffer) => {
      got.push(c);
      if (Buffer.concat(got).length === 88) s.write(Buffer.concat([Buffer.from('MFDK'), randomBytes(32)]));
    });
    s.on('error', () => {});
    s.write(Buffer.concat([Buffer.from('MFDP'), Buffer.from([1]), randomBytes(32)]));
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => fake.close());
  const e = await rejection(
    send({
      host: '127.0.0.1',
      port: (fake.address() as net.AddressInfo).port,
      logger: captureLogger().logger,
      images: [{ name: 'vm.ram', path: img }],
      channels: 1,
      ...pipeline,
      security: new PskSecurity(key),
    }),
  );
  t.ok(e instanceof AuthError);
  t.match(e, {
    code: 'ERR_PSK_HANDSHAKE',
    exitCode: ExitCode.AUTH,
    message:
      /control channel \(127\.0\.0\.1:\d+\): PSK authentication: the receiver's proof does not match: it does not hold the key in --psk-file/,
  });
  await new Promise((r) => setTimeout(r, 50));
  t.equal(Buffer.concat(got).length, 88, 'only the auth frame was sent: no preamble, no hello');
});

/** The sender's auth frame for `b` answering `nonceR`, built from docs/control-protocol.md. */
function authFrame(k: Buffer, nonceR: Buffer, b: ChannelBinding): Buffer {
  const nonceS = randomBytes(32);
  const head = Buffer.alloc(8);
  head.write('MFDA', 0, 'latin1');
  head.writeUInt8(1, 4);
  head.writeUInt8(b.role === 'control' ? 0 : 1, 5);
  head.writeUInt16BE(b.channel, 6);
  const tail = Buffer.from([b.role === 'control' ? 0 : 1, b.channel >> 8, b.channel & 0xff]);
  const mac = createHmac('sha256', k).update('mfd-psk-v1 sender').update(nonceR).update(nonceS).update(b.uuid).update(tail).digest();
  return Buffer.concat([head, b.uuid, nonceS, mac]);
}

/** Connects and reads the receiver's 37-byte challenge; returns the socket and the nonce. */
async function challenged(port: number): Promise<{ s: net.Socket; nonce: Buffer }> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', () => {});
  const c = await new Promise<Buffer>((resolve) => {
    const parts: Buffer[] = [];
    s.on('data', function onData(d: Buffer) {
      parts.push(d);
      const all = Buffer.concat(parts);
      if (all.length >= 37) {
        s.off('data', onData);
        resolve(all);
      }
    });
  });
  return { s, nonce: c.subarray(5, 37) };
}

t.test('strangers while a PSK migration runs are closed and logged with their address; the migration ends byte-identical', async (t) => {
  const work = tmpdir(t);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(work, 'vm.ram'), 16 << 20, 'mixed');
  const { logger, lines } = captureLogger('info');
  const strangers = new Map<string, number>();
  const closed = (s: net.Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.resume().once('close', () => r())));
  let finished = false;
  const attack = async (port: number): Promise<void> => {
    const uuid = uuidFromString(String(lines.find((l) => l.msg === 'migration set up')!.uuid));
    const other = uuidFromString(randomUUID());
    const waits: Promise<unknown>[] = [];
    // Garbage where the auth frame belongs.
    const junk = await challenged(port);
    junk.s.write(randomBytes(200));
    strangers.set('garbage', junk.s.localPort!);
    waits.push(closed(junk.s));
    // Another key.
    const wrongKey = new PskSecurity(randomBytes(32)).connect('127.0.0.1', port, 2000, 'stranger', { uuid, role: 'data', channel: 0 });
    waits.push(wrongKey.catch((e: unknown) => e));
    // A proof made for one challenge, replayed on another connection.
    const first = await challenged(port);
    const second = await challenged(port);
    second.s.write(authFrame(key, first.nonce, { uuid, role: 'data', channel: 0 }));
    strangers.set('replay', second.s.localPort!);
    waits.push(closed(second.s));
    first.s.destroy();
    // A key holder's channel proved for another migration, claiming this one in its init packet.
    const elsewhere = await new PskSecurity(key).connect('127.0.0.1', port, 2000, 'stranger', { uuid: other, role: 'data', channel: 0 });
    elsewhere.write(encodeInitPacket(uuid, 0));
    strangers.set('other migration', elsewhere.localPort!);
    waits.push(closed(elsewhere));
    // A control channel's proof used for a multifd channel.
    const asControl = await new PskSecurity(key).connect('127.0.0.1', port, 2000, 'stranger', { uuid, role: 'control', channel: 0 });
    asControl.write(encodeInitPacket(uuid, 0));
    strangers.set('control proof', asControl.localPort!);
    waits.push(closed(asControl));
    // Silence: closed when the authentication time is up.
    const silent = await challenged(port);
    strangers.set('silent', silent.s.localPort!);
    waits.push(closed(silent.s));
    t.notOk(finished, 'the strangers connected while the migration ran');
    const refused = await wrongKey.catch((e: unknown) => e);
    t.match(refused, { code: 'ERR_PSK_HANDSHAKE', message: /the receiver refused our proof/ });
    await Promise.all(waits);
  };
  const psk = new PskSecurity(key, 400);
  const { port, result } = await startReceiver({ outputDir: out, logger, security: psk });
  void result.then(() => (finished = true));
  // The strangers come after the hello was accepted and channels 0..2 connected, before channel 3 does.
  const sent = await send({
    host: '127.0.0.1',
    port,
    logger: captureLogger().logger,
    images: [{ name: 'vm.ram', path: img }],
    channels: 4,
    ...pipeline,
    security: holdChannel(psk, 3, () => attack(port)),
  });
  const received = await result;
  t.equal(sent.stats.status, 'completed');
  t.equal(received.stats.status, 'completed');
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
  const refusal = (port: number): string =>
    String(lines.find((l) => l.level === 40 && l.peer === `127.0.0.1:${port}`)?.msg ?? 'not logged');
  t.match(
    refusal(strangers.get('garbage')!),
    /refused: PSK authentication: received 0x[0-9a-f]+ version \d+, expected 0x4d464441 version 1/,
  );
  t.match(refusal(strangers.get('replay')!), /refused: PSK authentication: wrong proof/);
  t.match(
    refusal(strangers.get('other migration')!),
    /refused: multifd channel from 127\.0\.0\.1:\d+: authenticated as multifd channel 0 of migration [0-9a-f-]{36}, expected multifd channel 0 of migration/,
  );
  t.match(refusal(strangers.get('control proof')!), /refused: multifd channel from .*: authenticated as control channel of migration/);
  t.match(
    refusal(strangers.get('silent')!),
    /refused: PSK authentication: (88 bytes not received within 400 ms|connection closed after 0 of 88 bytes)/,
  );
  t.ok(
    lines.filter((l) => l.level === 40 && /wrong proof: the peer does not hold this key/.test(String(l.msg))).length >= 1,
    'the wrong key is logged',
  );
});

t.test('a flood of connections that never authenticate is capped; the migration they arrive during goes on', async (t) => {
  const work = tmpdir(t);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(work, 'vm.ram'), 8 << 20, 'mixed');
  const { logger, lines } = captureLogger('warn');
  const psk = new PskSecurity(key, 2000);
  const { port, result } = await startReceiver({ outputDir: out, logger, security: psk });
  const flood: net.Socket[] = [];
  t.teardown(() => flood.forEach((s) => s.destroy()));
  const sent = await send({
    host: '127.0.0.1',
    port,
    logger: captureLogger().logger,
    images: [{ name: 'vm.ram', path: img }],
    channels: 2,
    ...pipeline,
    // Once channel 0 is in: 3 x MAX_PENDING_AUTH silent connections, then channel 1 must still get through.
    security: holdChannel(psk, 1, async () => {
      for (let i = 0; i < 3 * MAX_PENDING_AUTH; i++) {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        flood.push(s);
      }
      await new Promise((r) => setTimeout(r, 300));
    }),
  });
  t.equal(sent.stats.status, 'completed');
  t.equal((await result).stats.status, 'completed');
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
  const capped = lines.filter((l) => /refused: dropped: 64 newer connections are authenticating/.test(String(l.msg))).length;
  t.ok(capped >= MAX_PENDING_AUTH, `${capped} connections over the cap refused at once, each logged`);
});
