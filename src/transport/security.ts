/**
 * How a connection proves who is on the other end, before any migration byte
 * crosses it (docs/control-protocol.md, "Authentication"). One interface for
 * both sides and four modes:
 *   - none:    plain TCP (loopback, or a receiver started with --insecure);
 *   - tls:     TLS 1.3 both ways: the receiver verifies the sender's certificate
 *              against --tls-ca, the sender verifies the receiver's certificate
 *              and host name (IP SAN for an address);
 *   - tls-psk: TLS 1.3 on a pre-shared key (--psk-file, --psk-mode tls, the
 *              default): no certificates; each connection's TLS key is derived
 *              from the file's key and an identity naming the migration's uuid,
 *              the channel's role and its id; encrypts and protects every byte;
 *   - psk:     a mutual HMAC-SHA256 challenge-response on a pre-shared key, bound
 *              to the migration's uuid, the channel's role and its id
 *              (--psk-mode auth); authenticates, then sends in clear.
 * The sender asks for an authenticated socket (`connect`); the receiver gets
 * a server whose `onAccepted` only ever sees authenticated sockets, and whose
 * `onRefused` gets every other connection's peer address and reason.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthError, ConnectionError, MfdError, UsageError, type ErrorPlace } from '../errors.js';
import { MULTIFD_MAGIC, hex } from '../wire/constants.js';
import { CONTROL_MAGIC, encodeFrame } from '../control/protocol.js';
import { connect as tcpConnect } from './connect.js';

export type ChannelRole = 'control' | 'data';

/** What a connection is for: the PSK handshake proves it, so it cannot be moved to another migration or channel. */
export interface ChannelBinding {
  /** The migration's uuid (16 bytes), as in the hello and every init packet. */
  uuid: Uint8Array;
  role: ChannelRole;
  /** The multifd channel id (0 for the control channel). */
  channel: number;
}

export interface SecureServer {
  server: net.Server;
  /** Destroys connections that have not authenticated yet (the migration is over). */
  closePending(): void;
}

export interface ServerHandlers {
  /** An authenticated connection; `binding` is what it proved (either PSK mode), null when the mode proves no binding. */
  onAccepted(socket: net.Socket, peer: string, binding: ChannelBinding | null): void;
  /** A connection that failed to authenticate: it has been closed. */
  onRefused(peer: string, why: string): void;
}

export interface ChannelSecurity {
  readonly mode: 'none' | 'tls' | 'tls-psk' | 'psk';
  /** Sender: a TCP connection to host:port, authenticated for `binding`. */
  connect(host: string, port: number, timeoutMs: number, what: string, binding: ChannelBinding): Promise<net.Socket>;
  /** Receiver: a server that hands over only authenticated connections. */
  createServer(h: ServerHandlers): SecureServer;
}

/** How long an accepted connection has to authenticate before it is closed. */
export const AUTH_TIMEOUT_MS = 5000;
/**
 * Most connections authenticating at once. Each holds a descriptor for up to
 * AUTH_TIMEOUT_MS: without a cap, a flood of them would exhaust the process's
 * descriptors and fail the migration they arrive during. A legitimate sender
 * opens its 1 + channels connections one after another and each proves itself
 * within a round trip, so the oldest pending one is dropped to make room: a
 * flood then evicts mostly its own connections, not the sender's.
 */
export const MAX_PENDING_AUTH = 64;

/** Evicted connections, whose failing handshake is not refused (and logged) a second time. */
const evicted = new WeakSet<object>();

/** Makes room for one more pending connection: drops the oldest (insertion order) beyond the cap. */
function evictOldest(pending: Map<net.Socket, string>, h: ServerHandlers): void {
  while (pending.size >= MAX_PENDING_AUTH) {
    const [oldest, peer] = pending.entries().next().value as [net.Socket, string];
    pending.delete(oldest);
    evicted.add(oldest);
    oldest.destroy();
    h.onRefused(peer, `dropped: ${MAX_PENDING_AUTH} newer connections are authenticating`);
  }
}
/** Fewest bytes of a key: a raw --psk-file's whole content, or a keys.psk line's decoded hex. */
export const PSK_MIN_BYTES = 16;
/** Most bytes read from a --psk-file. */
export const PSK_MAX_BYTES = 4096;

const peerOf = (s: net.Socket): string => `${s.remoteAddress}:${s.remotePort}`;

/** Plain TCP: no proof either way. */
export const plainSecurity: ChannelSecurity = {
  mode: 'none',
  connect: (host, port, timeoutMs, what) => tcpConnect(host, port, timeoutMs, what),
  createServer(h) {
    const server = net.createServer({ noDelay: true }, (s) => h.onAccepted(s, peerOf(s), null));
    return { server, closePending: () => {} };
  },
};

// ---------------------------------------------------------------- PSK

/*
 * PSK handshake, all fields big-endian, fixed sizes (so every length is bounded):
 *   receiver -> sender  challenge  'MFDP' u8 version=1, nonce_r[32]                      37 bytes
 *   sender -> receiver  auth       'MFDA' u8 version=1, u8 role (0 control, 1 data),
 *                                  u16 channel, uuid[16], nonce_s[32], mac_s[32]           88 bytes
 *   receiver -> sender  accept     'MFDK' mac_r[32]                                         36 bytes
 *                   or  refuse     'MFDX' u8[32] zero                                       36 bytes, then close
 * mac_s = HMAC-SHA256(key, "mfd-psk-v1 sender"   || nonce_r || nonce_s || uuid || role || channel)
 * mac_r = HMAC-SHA256(key, "mfd-psk-v1 receiver" || nonce_r || nonce_s || uuid || role || channel)
 */
const PSK_VERSION = 1;
const NONCE = 32;
const MAC = 32;
/** The receiver's first bytes in PSK mode; a sender without --psk-file reads them as a control frame length. */
export const PSK_CHALLENGE_MAGIC = 0x4d464450; // 'MFDP'
const CHALLENGE_MAGIC = PSK_CHALLENGE_MAGIC;
const AUTH_MAGIC = 0x4d464441; // 'MFDA'
const ACCEPT_MAGIC = 0x4d46444b; // 'MFDK'
const REFUSE_MAGIC = 0x4d464458; // 'MFDX'
const CHALLENGE_SIZE = 5 + NONCE;
const AUTH_SIZE = 8 + 16 + NONCE + MAC;
const ANSWER_SIZE = 4 + MAC;
const ROLES: ChannelRole[] = ['control', 'data'];
/** A TLS record's first byte when it carries a handshake (a ClientHello opens every TLS connection). */
const TLS_HANDSHAKE_RECORD = 0x16;

function pskMac(key: Buffer, who: 'sender' | 'receiver', nonceR: Uint8Array, nonceS: Uint8Array, b: ChannelBinding): Buffer {
  const tail = Buffer.alloc(3);
  tail.writeUInt8(ROLES.indexOf(b.role), 0);
  tail.writeUInt16BE(b.channel, 1);
  return createHmac('sha256', key).update(`mfd-psk-v1 ${who}`).update(nonceR).update(nonceS).update(b.uuid).update(tail).digest();
}

/**
 * Reads exactly n bytes in paused mode (read(n)), so whatever follows stays in
 * the socket for the next reader. Rejects with `fail(why)` on close, error or
 * timeout.
 */
function readExact(s: net.Socket, n: number, timeoutMs: number, fail: (why: string) => Error): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = (e: Error | null, b?: Buffer): void => {
      clearTimeout(timer);
      s.off('readable', onReadable);
      s.off('close', onClose);
      s.off('error', onError);
      if (e) reject(e);
      else resolve(b!);
    };
    const onReadable = (): void => {
      const b = s.read(n) as Buffer | null;
      if (b && b.length === n) done(null, b);
    };
    const onClose = (): void => done(fail(`connection closed after ${s.readableLength} of ${n} bytes`));
    const onError = (e: Error): void => done(fail(e.message));
    const timer = setTimeout(() => done(fail(`${n} bytes not received within ${timeoutMs} ms`)), timeoutMs);
    s.on('readable', onReadable);
    s.once('close', onClose);
    s.once('error', onError);
    onReadable();
  });
}

export class PskSecurity implements ChannelSecurity {
  readonly mode = 'psk' as const;
  constructor(
    private readonly key: Buffer,
    private readonly authTimeoutMs = AUTH_TIMEOUT_MS,
  ) {}

  async connect(host: string, port: number, timeoutMs: number, what: string, b: ChannelBinding): Promise<net.Socket> {
    const s = await tcpConnect(host, port, timeoutMs, what);
    const where = `${what} (${host}:${port})`;
    try {
      const fail = (why: string): Error => new AuthError('ERR_PSK_HANDSHAKE', `${where}: PSK authentication: ${why}`);
      const challenge = await readExact(s, CHALLENGE_SIZE, timeoutMs, (why) =>
        fail(`no challenge from the receiver: ${why} (is it running with --psk-file --psk-mode auth?)`),
      );
      const magic = challenge.readUInt32BE(0);
      if (magic !== CHALLENGE_MAGIC || challenge[4] !== PSK_VERSION) {
        throw fail(`challenge received ${hex(magic)} version ${challenge[4]}, expected ${hex(CHALLENGE_MAGIC)} version ${PSK_VERSION}`);
      }
      const nonceR = challenge.subarray(5);
      const nonceS = randomBytes(NONCE);
      const auth = Buffer.alloc(AUTH_SIZE);
      auth.writeUInt32BE(AUTH_MAGIC, 0);
      auth.writeUInt8(PSK_VERSION, 4);
      auth.writeUInt8(ROLES.indexOf(b.role), 5);
      auth.writeUInt16BE(b.channel, 6);
      auth.set(b.uuid, 8);
      nonceS.copy(auth, 24);
      pskMac(this.key, 'sender', nonceR, nonceS, b).copy(auth, 24 + NONCE);
      s.write(auth);
      const answer = await readExact(s, ANSWER_SIZE, timeoutMs, (why) => fail(`no answer from the receiver: ${why}`));
      const am = answer.readUInt32BE(0);
      if (am === REFUSE_MAGIC) throw fail('the receiver refused our proof: its key differs from --psk-file');
      if (am !== ACCEPT_MAGIC) throw fail(`answer received ${hex(am)}, expected ${hex(ACCEPT_MAGIC)}`);
      if (!timingSafeEqual(answer.subarray(4), pskMac(this.key, 'receiver', nonceR, nonceS, b))) {
        throw fail("the receiver's proof does not match: it does not hold the key in --psk-file");
      }
      return s;
    } catch (e) {
      s.destroy();
      throw e;
    }
  }

  createServer(h: ServerHandlers): SecureServer {
    const pending = new Map<net.Socket, string>();
    const server = net.createServer({ noDelay: true }, (s) => {
      evictOldest(pending, h);
      const peer = peerOf(s);
      pending.set(s, peer);
      s.on('error', () => {});
      this.accept(s).then(
        (b) => {
          if (!pending.delete(s)) return; // evicted meanwhile
          h.onAccepted(s, peer, b);
        },
        (e: Error) => {
          // Evicted already (then refused and logged there), or refused now.
          if (!pending.delete(s)) return;
          // A refusal is flushed (the sender then says why) before the connection is cut.
          if (s.writableEnded) setTimeout(() => s.destroy(), 1000).unref();
          else s.destroy();
          h.onRefused(peer, e.message);
        },
      );
    });
    return { server, closePending: () => pending.forEach((_, s) => s.destroy()) };
  }

  /** Receiver side of the handshake: the binding the sender proved, or a rejection. */
  private async accept(s: net.Socket): Promise<ChannelBinding> {
    const nonceR = randomBytes(NONCE);
    const challenge = Buffer.alloc(CHALLENGE_SIZE);
    challenge.writeUInt32BE(CHALLENGE_MAGIC, 0);
    challenge.writeUInt8(PSK_VERSION, 4);
    nonceR.copy(challenge, 5);
    s.write(challenge);
    const a = await readExact(s, AUTH_SIZE, this.authTimeoutMs, (why) => new Error(`PSK authentication: ${why}`));
    const refuse = (why: string): Error => {
      s.end(Buffer.concat([u32(REFUSE_MAGIC), Buffer.alloc(MAC)]));
      return new Error(`PSK authentication: ${why}`);
    };
    const magic = a.readUInt32BE(0);
    if (magic !== AUTH_MAGIC || a[4] !== PSK_VERSION) {
      const hint =
        magic === CONTROL_MAGIC || magic === MULTIFD_MAGIC
          ? ' (a sender without --psk-file?)'
          : magic >>> 24 === TLS_HANDSHAKE_RECORD
            ? ' (a TLS handshake: a sender with --psk-mode tls or --tls-*?)'
            : '';
      throw refuse(`received ${hex(magic)} version ${a[4]}, expected ${hex(AUTH_MAGIC)} version ${PSK_VERSION}${hint}`);
    }
    const role = ROLES[a[5]!];
    if (!role) throw refuse(`role ${a[5]} received, expected 0 (control) or 1 (data)`);
    const b: ChannelBinding = { uuid: Buffer.from(a.subarray(8, 24)), role, channel: a.readUInt16BE(6) };
    const nonceS = a.subarray(24, 24 + NONCE);
    if (!timingSafeEqual(a.subarray(24 + NONCE), pskMac(this.key, 'sender', nonceR, nonceS, b)))
      throw refuse('wrong proof: the peer does not hold this key');
    s.write(Buffer.concat([u32(ACCEPT_MAGIC), pskMac(this.key, 'receiver', nonceR, nonceS, b)]));
    return b;
  }
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v, 0);
  return b;
}

// ---------------------------------------------------------------- TLS

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

/** Error codes of a TLS handshake that failed on a certificate, a name or an alert (OpenSSL's verify codes, Node's ERR_TLS_ and ERR_SSL_). */
const TLS_AUTH_CODE = /^(ERR_SSL_|ERR_TLS_|UNABLE_TO_|CERT_|SELF_SIGNED_|DEPTH_ZERO_|INVALID_|HOSTNAME_)/;

/** What the receiver makes of a connection whose TLS handshake is done: the binding it proved, or why it is refused. */
type Verdict = { binding: ChannelBinding | null } | { refused: string; code: string };

/**
 * A TLS connection made with `options`, resolved once its handshake is done. On failure,
 * `fail(e, tcpUp)` is the error (tcpUp: the TCP connection was made, the handshake failed).
 */
function tlsConnect(
  options: tls.ConnectionOptions,
  timeoutMs: number,
  timedOut: () => MfdError,
  fail: (e: NodeJS.ErrnoException, tcpUp: boolean) => MfdError,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect(options);
    let tcpUp = false;
    s.once('connect', () => (tcpUp = true));
    const timer = setTimeout(() => {
      s.destroy();
      reject(timedOut());
    }, timeoutMs);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      s.setNoDelay(true);
      s.setKeepAlive(true, 10_000);
      resolve(s);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      s.destroy();
      reject(fail(e, tcpUp));
    });
  });
}

/**
 * A TLS server (`options`) whose `onAccepted` sees a connection once its handshake is done and
 * `verdict` takes it. A connection the verdict refuses is told why in an `error` control frame,
 * then closed; `explain` says why a handshake failed.
 */
function serveTls(
  options: tls.TlsOptions,
  h: ServerHandlers,
  verdict: (s: tls.TLSSocket) => Verdict,
  explain: (e: Error, s: tls.TLSSocket) => string,
): SecureServer {
  // A handshake still running, by its TCP socket (the TLS socket wraps it as _parent).
  const pending = new Map<net.Socket, string>();
  // A failed handshake's TLS socket may be destroyed (no address left): its TCP socket (_parent) still knows the peer.
  const peers = new WeakMap<object, string>();
  const server = tls.createServer(options);
  server.on('connection', (raw: net.Socket) => {
    evictOldest(pending, h);
    const peer = peerOf(raw);
    pending.set(raw, peer);
    peers.set(raw, peer);
    raw.once('close', () => pending.delete(raw));
  });
  server.on('secureConnection', (s: tls.TLSSocket) => {
    const peer = peerOf(s);
    const parent = (s as unknown as { _parent?: net.Socket })._parent;
    if (parent) pending.delete(parent);
    const v = verdict(s);
    if ('refused' in v) {
      s.on('error', () => {});
      s.end(encodeFrame({ type: 'error', code: v.code, message: v.refused }));
      setTimeout(() => s.destroy(), 1000).unref();
      return h.onRefused(peer, v.refused);
    }
    s.setNoDelay(true);
    h.onAccepted(s, peer, v.binding);
  });
  server.on('tlsClientError', (e: Error, s: tls.TLSSocket) => {
    const parent = (s as unknown as { _parent?: object })._parent;
    const peer = s.remoteAddress ? peerOf(s) : ((parent && peers.get(parent)) ?? 'unknown peer');
    if (parent && evicted.has(parent)) return void s.destroy(); // refused when it was dropped
    const why = explain(e, s);
    // A sender without TLS (its first bytes are no TLS record) reads the reason as a control frame.
    if ((e as NodeJS.ErrnoException).code === 'ERR_SSL_WRONG_VERSION_NUMBER' && parent instanceof net.Socket && parent.writable) {
      parent.on('error', () => {});
      parent.end(encodeFrame({ type: 'error', code: 'ERR_TLS_REQUIRED', message: why }));
      setTimeout(() => s.destroy(), 1000).unref();
    } else s.destroy();
    h.onRefused(peer, why);
  });
  return { server, closePending: () => pending.forEach((_, s) => s.destroy()) };
}

/** What the receiver says of a connection whose first bytes are no TLS record: which flags its sender lacks. */
function notTls(e: Error, flags: string): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_HTTP_REQUEST'
    ? ` (not a TLS handshake: a sender without ${flags}?)`
    : '';
}

/** A failed handshake's reason (OpenSSL's, without its source location) and Node's code. */
function tlsReason(e: Error): string {
  const code = (e as NodeJS.ErrnoException).code;
  return `${(e as Error & { reason?: string }).reason ?? e.message}${code ? ` [${code}]` : ''}`;
}

export class TlsSecurity implements ChannelSecurity {
  readonly mode = 'tls' as const;
  constructor(
    private readonly files: TlsFiles,
    private readonly authTimeoutMs = AUTH_TIMEOUT_MS,
  ) {}

  connect(host: string, port: number, timeoutMs: number, what: string): Promise<net.Socket> {
    // SNI takes a name only; for an address, Node checks the certificate's IP SANs against `host`.
    const options = { host, port, ...(net.isIP(host) === 0 ? { servername: host } : {}), ...this.files, minVersion: 'TLSv1.3' as const };
    return tlsConnect(
      options,
      timeoutMs,
      () => new ConnectionError('ERR_CONNECT_TIMEOUT', `${what}: no TLS connection to ${host}:${port} within ${timeoutMs} ms`),
      (e, tcpUp) => {
        // A receiver without TLS hangs up on the ClientHello (its first bytes are no channel magic);
        // a TLS-PSK receiver has no certificate to answer with.
        const hint =
          e.code === 'ECONNRESET' && tcpUp
            ? ' (is the receiver running with --tls-cert/--tls-key/--tls-ca?)'
            : e.code === 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE'
              ? ' (is the receiver running with --psk-file?)'
              : '';
        return socketError(e, `${what}: cannot connect to ${host}:${port} over TLS${hint}`, `ERR_${e.code ?? 'CONNECT'}`);
      },
    );
  }

  createServer(h: ServerHandlers): SecureServer {
    // The sender's certificate is checked here rather than by rejectUnauthorized, which would cut the
    // connection without saying why on either side: the reason is logged, and sent to the sender.
    const options = {
      ...this.files,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3' as const,
      handshakeTimeout: this.authTimeoutMs,
    };
    const verdict = (s: tls.TLSSocket): Verdict => {
      if (s.authorized) return { binding: null };
      const given = Object.keys(s.getPeerCertificate()).length > 0;
      return {
        refused: given
          ? `TLS: the sender's certificate is refused: ${s.authorizationError} (not signed by --tls-ca)`
          : 'TLS: the sender gave no certificate',
        code: 'ERR_TLS_PEER_CERTIFICATE',
      };
    };
    return serveTls(options, h, verdict, (e) => `TLS: ${tlsReason(e)}${notTls(e, '--tls-cert/--tls-key/--tls-ca')}`);
  }
}

// ---------------------------------------------------------------- TLS-PSK

/*
 * TLS 1.3 on a pre-shared key instead of certificates (RFC 8446's external PSK; OpenSSL still runs
 * X25519 beside it, psk_dhe_ke, so a key that leaks later does not open recorded sessions). The
 * sender offers, per connection:
 *   identity = NAME ":mfd-v1:" uuid (32 lower-case hex digits) ":" role ":" channel id
 *              e.g. qemu:mfd-v1:5f0c...e1:data:3   (NAME: the key's identity in the key file)
 *   psk      = HKDF-SHA256(ikm = the key file's key for NAME, salt = none,
 *                          info = "mfd tls-psk v1 " || identity, 32 bytes)
 * The receiver parses the identity, derives the PSK from its own key for NAME, and the handshake
 * completes only when both hold the key and agree on every field of the identity: the binding is
 * proved by TLS's key schedule itself, with no extra round trip and no frame of mfd's own. The
 * key file's key is never a TLS key itself, nor the same secret in both PSK modes.
 */
const TLS_PSK_IDENTITY = /^([^:]+):mfd-v1:([0-9a-f]{32}):(control|data):(\d{1,5})$/;
/** OpenSSL's verify codes for a certificate that does not chain to a trusted CA. */
const CERT_VERIFY_CODE = /^(UNABLE_TO_|SELF_SIGNED_|DEPTH_ZERO_|CERT_)/;
/** The TLS 1.3 suites that run on OpenSSL's PSK callbacks (SHA-256), AES-GCM first (AES-NI beats ChaCha20 here). */
const TLS_PSK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';

/** The identity a sender offers for `b` with the key named `name`. */
function tlsPskIdentity(name: string, b: ChannelBinding): string {
  return `${name}:mfd-v1:${Buffer.from(b.uuid).toString('hex')}:${b.role}:${b.channel}`;
}

/** The connection's TLS key: the file's key, derived for the whole identity. */
function tlsPsk(key: Buffer, identity: string): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `mfd tls-psk v1 ${identity}`, 32));
}

/** Why a TLS-PSK handshake failed, as the sender sees it: by the receiver's alert or answer; null when it says nothing about keys. */
function tlsPskFailure(e: NodeJS.ErrnoException, name: string): string | null {
  switch (e.code) {
    case 'ERR_SSL_SSLV3_ALERT_ILLEGAL_PARAMETER':
    case 'ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR':
      return `the receiver refused the handshake: its key for identity "${name}" differs from --psk-file`;
    case 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE':
      return `the receiver refused the handshake: it has no key for identity "${name}" in its --psk-file`;
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
    case 'ERR_SSL_PACKET_LENGTH_TOO_LONG':
      return 'the receiver does not answer in TLS (is it running with --psk-mode auth?)';
    default:
      // A receiver with certificates ignores the key and shows a certificate, which nothing here can verify.
      return CERT_VERIFY_CODE.test(e.code ?? '')
        ? `the receiver answered with a certificate (${e.code}; is it running with --tls-cert/--tls-key/--tls-ca?)`
        : null;
  }
}

export class TlsPskSecurity implements ChannelSecurity {
  readonly mode = 'tls-psk' as const;
  constructor(
    /** The keys a receiver accepts, by identity (NAME). */
    private readonly keys: ReadonlyMap<string, Buffer>,
    /** The identity a sender offers: one of `keys`. */
    readonly identity: string,
    private readonly authTimeoutMs = AUTH_TIMEOUT_MS,
  ) {
    if (!keys.has(identity)) throw new UsageError(`PSK identity "${identity}" has no key`);
  }

  connect(host: string, port: number, timeoutMs: number, what: string, b: ChannelBinding): Promise<net.Socket> {
    const identity = tlsPskIdentity(this.identity, b);
    const psk = tlsPsk(this.keys.get(this.identity)!, identity);
    const where = `${what} (${host}:${port})`;
    return tlsConnect(
      { host, port, pskCallback: () => ({ psk, identity }), ciphers: TLS_PSK_CIPHERS, minVersion: 'TLSv1.3' },
      timeoutMs,
      () => new ConnectionError('ERR_CONNECT_TIMEOUT', `${where}: no TLS-PSK connection within ${timeoutMs} ms`),
      (e, tcpUp) => {
        const why = tlsPskFailure(e, this.identity);
        if (why) return new AuthError('ERR_PSK_HANDSHAKE', `${where}: TLS-PSK: ${why}`);
        // A receiver without a key hangs up on the ClientHello (its first bytes are no channel magic).
        const hint = e.code === 'ECONNRESET' && tcpUp ? ' (is the receiver running with --psk-file?)' : '';
        return socketError(e, `${what}: cannot connect to ${host}:${port} over TLS-PSK${hint}`, `ERR_${e.code ?? 'CONNECT'}`);
      },
    );
  }

  createServer(h: ServerHandlers): SecureServer {
    // What each handshake's identity claimed (proved once the handshake completes), or why it has no key.
    const claimed = new WeakMap<tls.TLSSocket, { name: string; binding: ChannelBinding }>();
    const unknown = new WeakMap<tls.TLSSocket, string>();
    const pskCallback = (s: tls.TLSSocket, identity: string): Buffer | null => {
      const m = TLS_PSK_IDENTITY.exec(identity);
      if (!m || Number(m[4]) > 0xffff) {
        unknown.set(
          s,
          `identity ${JSON.stringify(identity.slice(0, 200))} is not NAME:mfd-v1:UUID:ROLE:CHANNEL (a sender of another program?)`,
        );
        return null;
      }
      const key = this.keys.get(m[1]!);
      if (!key) {
        unknown.set(s, `unknown identity "${m[1]}": not in --psk-file`);
        return null;
      }
      claimed.set(s, { name: m[1]!, binding: { uuid: Buffer.from(m[2]!, 'hex'), role: m[3] as ChannelRole, channel: Number(m[4]) } });
      return tlsPsk(key, identity);
    };
    const options = { pskCallback, ciphers: TLS_PSK_CIPHERS, minVersion: 'TLSv1.3' as const, handshakeTimeout: this.authTimeoutMs };
    // Without a certificate, a handshake completes only on a PSK: the identity's binding is proved.
    const verdict = (s: tls.TLSSocket): Verdict => {
      const c = claimed.get(s);
      return c ? { binding: c.binding } : { refused: 'TLS-PSK: the handshake completed without a key', code: 'ERR_PSK_HANDSHAKE' };
    };
    const explain = (e: Error, s: tls.TLSSocket): string => {
      const why = unknown.get(s);
      if (why) return `TLS-PSK: ${why}`;
      const c = claimed.get(s);
      const code = (e as NodeJS.ErrnoException).code;
      if (c && code === 'ERR_SSL_BINDER_DOES_NOT_VERIFY')
        return `TLS-PSK: wrong key: the peer does not hold the key of identity "${c.name}" (or altered its identity)`;
      // No certificate to fall back on: a ClientHello without a key ends here.
      if (!c && code === 'ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM')
        return `TLS-PSK: the sender offered no pre-shared key (a sender with --tls-cert/--tls-key/--tls-ca?) [${code}]`;
      return `TLS-PSK: ${tlsReason(e)}${notTls(e, '--psk-file, or with --psk-mode auth')}`;
    };
    return serveTls(options, h, verdict, explain);
  }
}

/**
 * A socket error as an MfdError: a certificate refused, a name that does not match or a TLS
 * alert from the peer is an authentication failure (AuthError, code ERR_TLS_...), anything else
 * a connection failure with `code`. `where` prefixes the message.
 */
export function socketError(e: NodeJS.ErrnoException, where: string, code: string, place: ErrorPlace = {}): MfdError {
  if (e instanceof MfdError) return e;
  // OpenSSL's message carries its source location; its reason alone says what happened.
  const ssl = e as Error & { library?: string; reason?: string };
  const text = ssl.library && ssl.reason ? ssl.reason : e.message;
  const message = where ? `${where}: ${text}` : text;
  const c = e.code ?? '';
  if (TLS_AUTH_CODE.test(c)) return new AuthError(`ERR_TLS_${c.replace(/^ERR_(TLS_|SSL_)?/, '')}`, message, place);
  return new ConnectionError(code, message, place, e);
}

// ---------------------------------------------------------------- options

export const PSK_MODES = ['tls', 'auth'] as const;

export interface SecurityOptions {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  pskFile?: string;
  /** What --psk-file does: tls (the default) = TLS 1.3 on the key; auth = the challenge-response only. */
  pskMode?: string;
  /** The key file's identity to use (QEMU's tls-creds-psk username). */
  pskIdentity?: string;
  /** Time an accepted connection has to authenticate (tests shorten it). */
  authTimeoutMs?: number;
}

function readOption(flag: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new UsageError(`${flag} "${file}": cannot read it: ${(e as Error).message}`);
  }
}

/** The security the command line asks for; a partial or contradictory set of flags is a usage error. */
export function loadSecurity(o: SecurityOptions, warn: (msg: string) => void): ChannelSecurity {
  const tlsFlags = [o.tlsCert, o.tlsKey, o.tlsCa].filter((v) => v !== undefined).length;
  if (tlsFlags > 0 && o.pskFile !== undefined) throw new UsageError('give either --tls-cert/--tls-key/--tls-ca or --psk-file, not both');
  if (tlsFlags > 0 && tlsFlags < 3) throw new UsageError('TLS needs all three of --tls-cert, --tls-key and --tls-ca');
  if (o.pskFile === undefined && (o.pskMode ?? o.pskIdentity) !== undefined)
    throw new UsageError(`${o.pskMode !== undefined ? '--psk-mode' : '--psk-identity'} needs --psk-file`);
  if (tlsFlags === 3) {
    return new TlsSecurity(
      { cert: readOption('--tls-cert', o.tlsCert!), key: readOption('--tls-key', o.tlsKey!), ca: readOption('--tls-ca', o.tlsCa!) },
      o.authTimeoutMs,
    );
  }
  if (o.pskFile === undefined) return plainSecurity;
  const mode = o.pskMode ?? 'tls';
  if (!(PSK_MODES as readonly string[]).includes(mode))
    throw new UsageError(`Expected ${PSK_MODES.join(' or ')} for --psk-mode but received "${mode}"`);
  const keys = readPskFile(o.pskFile, warn);
  const identity = pskIdentity(keys, o.pskIdentity, o.pskFile);
  if (mode === 'auth') return new PskSecurity(keys.get(identity)!, o.authTimeoutMs);
  // Named, the identity is the only one a receiver accepts; otherwise it accepts every key of the file (as QEMU does).
  return new TlsPskSecurity(o.pskIdentity !== undefined ? new Map([[identity, keys.get(identity)!]]) : keys, identity, o.authTimeoutMs);
}

/** The identity of mfd's raw key file's one key. */
const RAW_KEY_IDENTITY = 'mfd';
/** Longest identity in a keys.psk: with mfd's 54 bytes around it, a TLS identity fits OpenSSL's 256. */
const MAX_IDENTITY_BYTES = 128;
/** QEMU's tls-creds-psk username when none is given. */
const QEMU_IDENTITY = 'qemu';
/** The key file in a QEMU tls-creds-psk directory. */
const QEMU_PSK_FILE = 'keys.psk';
/** A line of QEMU's keys.psk (GnuTLS psktool's format): IDENTITY:HEXKEY. */
const KEYS_PSK_LINE = /^([^:\s]+):([0-9a-fA-F]+)$/;

/**
 * The keys of a --psk-file, by identity, never logged: QEMU's keys.psk (IDENTITY:HEXKEY lines; a
 * directory means DIR/keys.psk, QEMU's tls-creds-psk layout), or mfd's raw key file (its bytes
 * are the one key, identity "mfd"). A file whose first line reads IDENTITY:HEXKEY is keys.psk.
 * Refused when others may read it, or when a key is shorter than PSK_MIN_BYTES.
 */
export function readPskFile(given: string, warn: (msg: string) => void): Map<string, Buffer> {
  const file = fs.statSync(given, { throwIfNoEntry: false })?.isDirectory() ? path.join(given, QEMU_PSK_FILE) : given;
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st?.isFile()) throw new UsageError(`--psk-file "${file}": not a readable file`);
  if (st.mode & 0o007)
    throw new UsageError(`--psk-file "${file}": readable or writable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  if (st.mode & 0o070) warn(`--psk-file "${file}" is accessible to its group (mode ${(st.mode & 0o777).toString(8)})`);
  if (st.size > PSK_MAX_BYTES) throw new UsageError(`--psk-file "${file}": ${st.size} bytes, expected at most ${PSK_MAX_BYTES}`);
  const content = readOption('--psk-file', file);
  const lines = content.toString('latin1').split('\n');
  if (KEYS_PSK_LINE.test(lines[0]!.replace(/\r$/, ''))) return parseKeysPsk(file, lines);
  if (content.length < PSK_MIN_BYTES)
    throw new UsageError(
      `--psk-file "${file}": ${content.length} bytes, expected at least ${PSK_MIN_BYTES} (e.g. openssl rand -hex 32 > FILE)`,
    );
  return new Map([[RAW_KEY_IDENTITY, content]]);
}

/** QEMU's keys.psk, line by line (blank lines skipped); a line's content is never quoted, it may hold a key. */
function parseKeysPsk(file: string, lines: string[]): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return;
    const where = `--psk-file "${file}" line ${i + 1}`;
    const m = KEYS_PSK_LINE.exec(line);
    if (!m) throw new UsageError(`${where}: expected IDENTITY:HEXKEY (QEMU's keys.psk format, like the lines before it)`);
    const [, name, hexKey] = m as unknown as [string, string, string];
    if (hexKey.length % 2 !== 0) throw new UsageError(`${where}: ${hexKey.length} hex digits, expected an even number`);
    if (hexKey.length / 2 < PSK_MIN_BYTES)
      throw new UsageError(
        `${where}: a key of ${hexKey.length / 2} bytes, expected at least ${PSK_MIN_BYTES} (e.g. psktool -u ${name} -p FILE)`,
      );
    if (Buffer.byteLength(name) > MAX_IDENTITY_BYTES)
      throw new UsageError(`${where}: an identity of ${Buffer.byteLength(name)} bytes, expected at most ${MAX_IDENTITY_BYTES}`);
    if (keys.has(name)) throw new UsageError(`${where}: identity "${name}" is there twice`);
    keys.set(name, Buffer.from(hexKey, 'hex'));
  });
  return keys;
}

/** The identity this side uses: --psk-identity, or else "qemu" when the file has it (QEMU's default), or else its first. */
function pskIdentity(keys: Map<string, Buffer>, wanted: string | undefined, file: string): string {
  if (wanted === undefined) return keys.has(QEMU_IDENTITY) ? QEMU_IDENTITY : keys.keys().next().value!;
  if (!keys.has(wanted))
    throw new UsageError(
      `--psk-identity "${wanted}": not in --psk-file "${file}", which has ${[...keys.keys()].map((k) => `"${k}"`).join(', ')}`,
    );
  return wanted;
}

/** 127.0.0.0/8, ::1 (also v4-mapped) and localhost: the addresses a receiver may listen on without authentication. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  return /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** A receiver without TLS or PSK listens on loopback only, unless --insecure says otherwise. */
export function checkListenSecurity(host: string, security: ChannelSecurity, insecure: boolean): void {
  if (security.mode !== 'none' || insecure || isLoopback(host)) return;
  throw new UsageError(
    `refusing to listen on ${host} without authentication: anyone who reaches the port could write files. ` +
      'Give --tls-cert/--tls-key/--tls-ca or --psk-file (on both sides), or --insecure to accept any sender',
  );
}
