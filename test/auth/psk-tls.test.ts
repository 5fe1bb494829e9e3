/**
 * TLS 1.3 on the pre-shared key (--psk-mode tls, the default): what crosses the wire is encrypted
 * (and is not in auth mode), an altered byte ends the migration, each connection's key is bound to
 * its migration, role and channel (a replayed, forged or misbound channel is refused while the
 * migration goes on), and the key file may be QEMU's keys.psk.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { makeImage, rejection, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { captureLogger, holdChannel, makeCerts, mfdAsync, pskFile, recvProcess, tlsFiles } from '../helpers/auth.js';
import { mfd } from '../helpers/files.js';
import { loadSecurity, PskSecurity, TlsPskSecurity, TlsSecurity, type ChannelSecurity } from '../../src/transport/security.js';
import { NativeChannel } from '../../src/transport/native-channel.js';
import { send } from '../../src/sender/sender.js';
import { encodeInitPacket, uuidFromString } from '../../src/wire/init-packet.js';
import { ExitCode } from '../../src/errors.js';

const key = randomBytes(32);
const tlsPsk = (timeoutMs?: number): TlsPskSecurity => new TlsPskSecurity(new Map([['mfd', key]]), 'mfd', timeoutMs);
const pipeline = { pageSize: 4096, compression: 'none', methodParams: {}, zeroPageDetection: 'multifd' } as const;

/**
 * A TCP relay to the receiver: keeps what each connection's sender wrote (connections in the order
 * they came: the control channel, then multifd channels 0, 1, ...), and can flip one bit of it.
 */
class Relay {
  readonly server = net.createServer();
  readonly sent: Buffer[][] = [];
  private readonly socks = new Set<net.Socket>();
  constructor(upstream: number, flip?: { conn: number; at: number }) {
    this.server.on('connection', (c) => {
      const i = this.sent.push([]) - 1;
      const up = net.connect(upstream, '127.0.0.1');
      for (const [a, b] of [
        [c, up],
        [up, c],
      ] as const) {
        this.socks.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => b.destroy());
      }
      up.pipe(c);
      let seen = 0;
      c.on('data', (chunk: Buffer) => {
        if (flip?.conn === i && flip.at >= seen && flip.at < seen + chunk.length) chunk[flip.at - seen]! ^= 0x01;
        seen += chunk.length;
        this.sent[i]!.push(Buffer.from(chunk));
        up.write(chunk);
      });
    });
  }
  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as net.AddressInfo).port;
  }
  close(): void {
    this.socks.forEach((s) => s.destroy());
    this.server.close();
  }
}

/** A migration of a random image named `name` through a relay; what its senders wrote. */
async function relayed(t: Test, security: ChannelSecurity, name: string, img: string): Promise<Buffer> {
  const out = path.join(tmpdir(t), 'out');
  fs.mkdirSync(out);
  const { port, result } = await startReceiver({ outputDir: out, security });
  const relay = new Relay(port);
  t.teardown(() => relay.close());
  const sent = await send({
    host: '127.0.0.1',
    port: await relay.listen(),
    logger: captureLogger().logger,
    images: [{ name, path: img }],
    channels: 2,
    ...pipeline,
    security,
  });
  t.equal(sent.stats.status, 'completed');
  t.equal((await result).stats.status, 'completed');
  t.equal(sha256(path.join(out, name)), sha256(img), 'byte-identical');
  return Buffer.concat(relay.sent.flat());
}

t.test('on the wire: TLS-PSK shows no page and no name; auth mode shows them all', async (t) => {
  const img = makeImage(path.join(tmpdir(t), 'vm.ram'), 2 << 20, 'random');
  const image = fs.readFileSync(img);
  // 48 bytes from every 64 KiB of the image: each is in the clear stream if pages cross in clear.
  const samples = Array.from({ length: 32 }, (_, i) => image.subarray(i * 65536 + 1000, i * 65536 + 1048));
  const name = 'secret-ramblock-name';
  const wireTls = await relayed(t, tlsPsk(), name, img);
  t.ok(wireTls.length > image.length, `all ${wireTls.length} bytes went through the relay`);
  t.equal(samples.filter((s) => wireTls.includes(s)).length, 0, 'no page content on the wire with TLS-PSK');
  t.notOk(wireTls.includes(name), 'nor the ramblock name in the hello');
  const wireAuth = await relayed(t, new PskSecurity(key), name, img);
  t.equal(samples.filter((s) => wireAuth.includes(s)).length, samples.length, 'auth mode: every sampled page is on the wire as it is');
  t.ok(wireAuth.includes(name), 'and the hello in clear');
});

t.test('TLS-PSK channels stay on the stream path: no native thread takes a TLS socket', async (t) => {
  const psk = tlsPsk();
  let accepted!: () => void;
  const both = new Promise<void>((r) => (accepted = r));
  const { server } = psk.createServer({ onAccepted: (s) => (s.end(), accepted()), onRefused: (_, why) => t.fail(why) });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const s = await psk.connect('127.0.0.1', (server.address() as net.AddressInfo).port, 2000, 'channel 0', {
    uuid: randomBytes(16),
    role: 'data',
    channel: 0,
  });
  t.teardown(() => s.destroy());
  t.ok(s instanceof tls.TLSSocket, 'a TLS socket');
  t.equal((s as tls.TLSSocket).getProtocol(), 'TLSv1.3');
  t.equal((s as tls.TLSSocket).getCipher().name, 'TLS_AES_128_GCM_SHA256');
  t.match((s as tls.TLSSocket).getEphemeralKeyInfo(), { name: 'X25519' }, 'an ephemeral key exchange beside the PSK (forward secrecy)');
  t.equal(NativeChannel.attach(s, false), null, 'not handed to a native thread');
  await both;
});

t.test('a bit flipped on a multifd channel ends the migration with a TLS error; nothing takes its final name', async (t) => {
  const work = tmpdir(t);
  const out = path.join(work, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(work, 'vm.ram'), 4 << 20, 'random');
  const psk = tlsPsk();
  const { port, result } = await startReceiver({ outputDir: out, security: psk, journal: false });
  // Connection 1 is multifd channel 0; at 100 KiB it is well past its handshake.
  const relay = new Relay(port, { conn: 1, at: 100 << 10 });
  t.teardown(() => relay.close());
  const sent = send({
    host: '127.0.0.1',
    port: await relay.listen(),
    logger: captureLogger().logger,
    images: [{ name: 'vm.ram', path: img }],
    channels: 2,
    ...pipeline,
    security: psk,
  });
  const recvError = await rejection(result);
  t.match(recvError.message, /decrypt|bad record mac/i, `the receiver says the record does not authenticate: ${recvError.message}`);
  t.ok(
    await sent.then(
      () => false,
      () => true,
    ),
    'the sender fails too',
  );
  t.notOk(fs.existsSync(path.join(out, 'vm.ram')), 'no output under its final name');
});

/** The connection's TLS key for `identity`, derived as docs/control-protocol.md says. */
const docPsk = (k: Buffer, identity: string): Buffer =>
  Buffer.from(hkdfSync('sha256', k, Buffer.alloc(0), `mfd tls-psk v1 ${identity}`, 32));
const docIdentity = (name: string, uuid: Uint8Array, role: string, channel: number): string =>
  `${name}:mfd-v1:${Buffer.from(uuid).toString('hex')}:${role}:${channel}`;

/** A hand-made TLS-PSK connection offering `identity` with `psk`: the socket once connected, or the error. */
function handMade(port: number, identity: string, psk: Buffer): Promise<tls.TLSSocket | Error> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      minVersion: 'TLSv1.3',
      ciphers: 'TLS_AES_128_GCM_SHA256',
      pskCallback: () => ({ identity, psk }),
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', (e) => resolve(e));
  });
}

t.test(
  'replayed, forged and misbound channels while a TLS-PSK migration runs are refused and logged; the migration ends byte-identical',
  async (t) => {
    const work = tmpdir(t);
    const out = path.join(work, 'out');
    fs.mkdirSync(out);
    const img = makeImage(path.join(work, 'vm.ram'), 16 << 20, 'mixed');
    const { logger, lines } = captureLogger('info');
    const psk = tlsPsk(1000);
    const { port, result } = await startReceiver({ outputDir: out, logger, security: psk });
    const relay = new Relay(port);
    t.teardown(() => relay.close());
    let finished = false;
    void result.then(() => (finished = true));
    const strangers = new Map<string, number>();
    const closed = (s: net.Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.resume().once('close', () => r())));
    const attack = async (): Promise<void> => {
      const uuid = uuidFromString(String(lines.find((l) => l.msg === 'migration set up')!.uuid));
      const other = uuidFromString(randomUUID());
      const waits: Promise<unknown>[] = [];
      // Multifd channel 0's bytes as its sender wrote them, replayed on a new connection.
      const replay = net.connect(port, '127.0.0.1');
      replay.on('error', () => {});
      await new Promise((r) => replay.once('connect', r));
      replay.write(Buffer.concat(relay.sent[1]!));
      strangers.set('replay', replay.localPort!);
      waits.push(closed(replay));
      // Channel 0's identity rewritten to claim channel 3 (its key still derived for channel 0).
      const forged = await handMade(port, docIdentity('mfd', uuid, 'data', 3), docPsk(key, docIdentity('mfd', uuid, 'data', 0)));
      t.match(forged, { code: 'ERR_SSL_SSLV3_ALERT_ILLEGAL_PARAMETER' }, 'the forged identity fails its handshake');
      // A key holder's channel proved for another migration (by the docs' derivation), claiming this one in its init packet.
      const elsewhere = await handMade(port, docIdentity('mfd', other, 'data', 0), docPsk(key, docIdentity('mfd', other, 'data', 0)));
      if (elsewhere instanceof Error) throw elsewhere;
      elsewhere.write(encodeInitPacket(uuid, 0));
      strangers.set('other migration', elsewhere.localPort!);
      waits.push(closed(elsewhere));
      // A control channel's key used for a multifd channel.
      const asControl = await psk.connect('127.0.0.1', port, 2000, 'stranger', { uuid, role: 'control', channel: 0 });
      asControl.write(encodeInitPacket(uuid, 0));
      strangers.set('control key', asControl.localPort!);
      waits.push(closed(asControl));
      // QEMU's identity (no binding), and a name the key file does not have.
      t.match(await handMade(port, 'qemu', key), Error);
      t.match(await handMade(port, docIdentity('bob', uuid, 'data', 3), docPsk(key, docIdentity('bob', uuid, 'data', 3))), Error);
      // A wrong key: the sender's error says so.
      const wrong = await rejection(
        new TlsPskSecurity(new Map([['mfd', randomBytes(32)]]), 'mfd').connect('127.0.0.1', port, 2000, 'stranger', {
          uuid,
          role: 'data',
          channel: 3,
        }),
      );
      t.match(wrong, {
        code: 'ERR_PSK_HANDSHAKE',
        exitCode: ExitCode.AUTH,
        message:
          /stranger \(127\.0\.0\.1:\d+\): TLS-PSK: the receiver refused the handshake: its key for identity "mfd" differs from --psk-file/,
      });
      t.notOk(finished, 'the strangers came while the migration ran');
      await Promise.all(waits);
    };
    const sent = await send({
      host: '127.0.0.1',
      port: await relay.listen(),
      logger: captureLogger().logger,
      images: [{ name: 'vm.ram', path: img }],
      channels: 4,
      ...pipeline,
      security: holdChannel(psk, 3, attack),
    });
    const received = await result;
    t.equal(sent.stats.status, 'completed');
    t.equal(received.stats.status, 'completed');
    t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
    const refusal = (port: number): string =>
      String(lines.find((l) => l.level === 40 && l.peer === `127.0.0.1:${port}`)?.msg ?? 'not logged');
    const refusals = lines.filter((l) => l.level === 40).map((l) => String(l.msg));
    t.match(
      refusal(strangers.get('replay')!),
      /refused: TLS-PSK: .*(decrypt|bad record mac|digest check failed)/i,
      `the replay fails its handshake: ${refusal(strangers.get('replay')!)}`,
    );
    t.match(
      refusal(strangers.get('other migration')!),
      /refused: multifd channel from 127\.0\.0\.1:\d+: authenticated as multifd channel 0 of migration [0-9a-f-]{36}, expected multifd channel 0 of migration/,
    );
    t.match(refusal(strangers.get('control key')!), /refused: multifd channel from .*: authenticated as control channel of migration/);
    t.ok(
      refusals.some((m) => /TLS-PSK: wrong key: the peer does not hold the key of identity "mfd" \(or altered its identity\)/.test(m)),
      'the forged identity and the wrong key are logged',
    );
    t.ok(
      refusals.some((m) => /TLS-PSK: identity "qemu" is not NAME:mfd-v1:UUID:ROLE:CHANNEL/.test(m)),
      'an identity without a binding is named',
    );
    t.ok(
      refusals.some((m) => /TLS-PSK: unknown identity "bob": not in --psk-file/.test(m)),
      'an unknown identity is named',
    );
    t.notOk(
      lines.some((l) => JSON.stringify(l).includes(key.toString('hex'))),
      'the key is never logged',
    );
  },
);

/** `client` connecting to a server of `server`: the client's error and the server's refusal. */
async function mismatch(server: ChannelSecurity, client: ChannelSecurity): Promise<{ error: Error; refused: string }> {
  let refused!: (why: string) => void;
  const why = new Promise<string>((r) => (refused = r));
  const { server: srv } = server.createServer({ onAccepted: (s) => s.destroy(), onRefused: (_, w) => refused(w) });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    const error = await rejection(
      client.connect('127.0.0.1', (srv.address() as net.AddressInfo).port, 5000, 'control channel', {
        uuid: randomBytes(16),
        role: 'control',
        channel: 0,
      }),
    );
    return { error, refused: await why };
  } finally {
    srv.close();
  }
}

t.test('a key meets certificates: exit 10 on the sender, and each side names the mode the other probably has', async (t) => {
  const certs = makeCerts(tmpdir(t));
  const cert = (p: { cert: string; key: string }): TlsSecurity => new TlsSecurity(tlsFiles(p, certs.ca));
  const a = await mismatch(cert(certs.recv), tlsPsk());
  t.match(a.error, {
    code: 'ERR_PSK_HANDSHAKE',
    exitCode: ExitCode.AUTH,
    message: /TLS-PSK: the receiver answered with a certificate \(\w+; is it running with --tls-cert\/--tls-key\/--tls-ca\?\)/,
  });
  t.match(a.refused, /^TLS: /);
  const b = await mismatch(tlsPsk(), cert(certs.send));
  t.match(b.error, {
    exitCode: ExitCode.AUTH,
    message: /cannot connect to 127\.0\.0\.1:\d+ over TLS \(is the receiver running with --psk-file\?\)/,
  });
  t.match(b.refused, /TLS-PSK: the sender offered no pre-shared key \(a sender with --tls-cert\/--tls-key\/--tls-ca\?\)/);
});

/** A keys.psk line per [identity, key]. */
function keysPsk(file: string, entries: [string, Buffer][]): string {
  fs.writeFileSync(file, entries.map(([n, k]) => `${n}:${k.toString('hex')}\n`).join(''), { mode: 0o600 });
  return file;
}

t.test(
  "QEMU's keys.psk: the receiver takes any identity of the file, a sender offers --psk-identity or qemu; the wrong key, identity or mode is refused with exit 10",
  async (t) => {
    const work = tmpdir(t);
    const out = path.join(work, 'out');
    fs.mkdirSync(out);
    const img = makeImage(path.join(work, 'vm.ram'), 2 << 20, 'mixed');
    const alice = randomBytes(32);
    const qemu = randomBytes(24);
    // A directory holding keys.psk, as QEMU's tls-creds-psk dir= has it.
    const credsDir = path.join(work, 'creds');
    fs.mkdirSync(credsDir);
    keysPsk(path.join(credsDir, 'keys.psk'), [
      ['alice', alice],
      ['qemu', qemu],
    ]);
    const r = await recvProcess(t, ['--output', out, '--psk-file', credsDir]);
    const to = ['send', '--to', `127.0.0.1:${r.port}`];
    const wrongKey = await mfdAsync(t, [
      ...to,
      '--psk-file',
      keysPsk(path.join(work, 'wrong.psk'), [['qemu', randomBytes(32)]]),
      '--json',
      img,
    ]);
    t.equal(wrongKey.status, ExitCode.AUTH, wrongKey.stderr);
    t.match(
      wrongKey.stderr,
      /control channel \(127\.0\.0\.1:\d+\): TLS-PSK: the receiver refused the handshake: its key for identity "qemu" differs from --psk-file \[ERR_PSK_HANDSHAKE\]/,
    );
    t.match(JSON.parse(wrongKey.stdout), { status: 'failed', error: { code: 'ERR_PSK_HANDSHAKE' } });
    const unknown = await mfdAsync(t, [...to, '--psk-file', keysPsk(path.join(work, 'bob.psk'), [['bob', alice]]), img]);
    t.equal(unknown.status, ExitCode.AUTH);
    t.match(unknown.stderr, /TLS-PSK: the receiver refused the handshake: it has no key for identity "bob" in its --psk-file/);
    const plain = await mfdAsync(t, [...to, img]);
    t.equal(plain.status, ExitCode.AUTH, 'a sender without a key is told, not just hung up on');
    t.match(
      plain.stderr,
      /the receiver refused the connection: TLS-PSK: wrong version number .*\(not a TLS handshake: a sender without --psk-file, or with --psk-mode auth\?\) \[ERR_TLS_REQUIRED\]/,
    );
    t.same(fs.readdirSync(out), [], 'nothing written for them');
    const ok = await mfdAsync(t, [...to, '--psk-file', path.join(credsDir, 'keys.psk'), '--psk-identity', 'alice', img]);
    t.equal(ok.status, 0, ok.stderr);
    t.equal(await r.exited, 0, r.stderr());
    t.equal(sha256(path.join(out, 'vm.ram')), sha256(img));
    t.match(r.stderr(), /refused: TLS-PSK: wrong key: the peer does not hold the key of identity \\"qemu\\"/);
    t.match(r.stderr(), /refused: TLS-PSK: unknown identity \\"bob\\": not in --psk-file/);
    for (const k of [alice, qemu]) t.notMatch(r.stderr(), k.toString('hex'), 'no key is logged');
  },
);

t.test('key files and flags: both formats, the identity chosen, bad keys.psk lines named without their content', async (t) => {
  const work = tmpdir(t);
  const warn = (): void => {};
  const k = randomBytes(32);
  const file = (name: string, content: string | Buffer): string => {
    const f = path.join(work, name);
    fs.writeFileSync(f, content, { mode: 0o600 });
    return f;
  };
  t.match(loadSecurity({ pskFile: pskFile(work, 'raw') }, warn), { mode: 'tls-psk' }, 'TLS-PSK is the default');
  t.match(loadSecurity({ pskFile: pskFile(work, 'raw2'), pskMode: 'auth' }, warn), { mode: 'psk' });
  t.match(
    loadSecurity({ pskFile: file('crlf.psk', `x:${k.toString('hex')}\r\n\r\nqemu:${k.toString('hex')}\r\n`) }, warn),
    { mode: 'tls-psk', identity: 'qemu' },
    'qemu by default, CRLF and blank lines taken',
  );
  t.match(
    loadSecurity({ pskFile: file('first.psk', `x:${k.toString('hex')}\ny:${k.toString('hex')}\n`) }, warn),
    { identity: 'x' },
    'else the first identity',
  );
  const bad: [string, RegExp][] = [
    [
      `a:${k.toString('hex')}\nnot a key line ${k.toString('hex')}\n`,
      /line 2: expected IDENTITY:HEXKEY \(QEMU's keys\.psk format, like the lines before it\)/,
    ],
    [`a:${k.toString('hex')}0\n`, /line 1: 65 hex digits, expected an even number/],
    [`a:${k.subarray(0, 8).toString('hex')}\n`, /line 1: a key of 8 bytes, expected at least 16/],
    [`a:${k.toString('hex')}\na:${k.toString('hex')}\n`, /line 2: identity "a" is there twice/],
    [`${'n'.repeat(129)}:${k.toString('hex')}\n`, /line 1: an identity of 129 bytes, expected at most 128/],
  ];
  for (const [i, [content, re]] of bad.entries()) {
    const e = t.throws(() => loadSecurity({ pskFile: file(`bad${i}.psk`, content) }, warn)) as unknown as Error;
    t.match(e, { code: 'ERR_USAGE', message: re });
    t.notMatch(e.message, k.subarray(0, 8).toString('hex'), 'the key is not quoted');
  }
  t.throws(() => loadSecurity({ pskFile: file('one.psk', `a:${k.toString('hex')}\n`), pskIdentity: 'b' }, warn), {
    message: /--psk-identity "b": not in --psk-file ".*one\.psk", which has "a"/,
  });
  t.throws(() => loadSecurity({ pskFile: pskFile(work, 'raw3'), pskIdentity: 'qemu' }, warn), {
    message: /--psk-identity "qemu": not in --psk-file ".*raw3", which has "mfd"/,
  });
  const img = makeImage(path.join(work, 'vm.ram'), 8192, 'mixed');
  const noFile = mfd('send', '--to', '127.0.0.1:1', '--psk-mode', 'auth', img);
  t.equal(noFile.status, 2);
  t.match(noFile.stderr, /--psk-mode needs --psk-file/);
  const badMode = mfd('recv', '--listen', '127.0.0.1:0', '--output', work, '--psk-file', pskFile(work, 'raw4'), '--psk-mode', 'none');
  t.equal(badMode.status, 2);
  t.match(badMode.stderr, /--psk-mode.*Allowed choices are tls, auth/);
  const help = mfd('send', '--help').stdout;
  t.match(help, /--psk-file <file>[\s\S]*--psk-mode <mode>[\s\S]*--psk-identity <name>/);
});
