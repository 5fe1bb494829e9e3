/**
 * How a connection proves who is on the other end, before any migration byte
 * crosses it (docs/control-protocol.md, "Authentication"). One interface for
 * both sides and three modes:
 *   - none: plain TCP (loopback, or a receiver started with --insecure);
 *   - tls:  TLS 1.3 both ways: the receiver verifies the sender's certificate
 *           against --tls-ca, the sender verifies the receiver's certificate
 *           and host name (IP SAN for an address);
 *   - psk:  a mutual HMAC-SHA256 challenge-response on a pre-shared key, bound
 *           to the migration's uuid, the channel's role and its id;
 *           authenticates, does not encrypt.
 * The sender asks for an authenticated socket (`connect`); the receiver gets
 * a server whose `onAccepted` only ever sees authenticated sockets, and whose
 * `onRefused` gets every other connection's peer address and reason.
 */
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
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
  /** An authenticated connection; `binding` is what it proved (PSK), null when the mode proves no binding. */
  onAccepted(socket: net.Socket, peer: string, binding: ChannelBinding | null): void;
  /** A connection that failed to authenticate: it has been closed. */
  onRefused(peer: string, why: string): void;
}

export interface ChannelSecurity {
  readonly mode: 'none' | 'tls' | 'psk';
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
/** Fewest bytes a --psk-file may hold; its whole content (raw bytes) is the key. */
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
      const challenge = await readExact(s, CHALLENGE_SIZE, timeoutMs, (why) => fail(`no challenge from the receiver: ${why} (is it running with --psk-file?)`));
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
      const hint = magic === CONTROL_MAGIC || magic === MULTIFD_MAGIC ? ' (a sender without --psk-file?)' : '';
      throw refuse(`received ${hex(magic)} version ${a[4]}, expected ${hex(AUTH_MAGIC)} version ${PSK_VERSION}${hint}`);
    }
    const role = ROLES[a[5]!];
    if (!role) throw refuse(`role ${a[5]} received, expected 0 (control) or 1 (data)`);
    const b: ChannelBinding = { uuid: Buffer.from(a.subarray(8, 24)), role, channel: a.readUInt16BE(6) };
    const nonceS = a.subarray(24, 24 + NONCE);
    if (!timingSafeEqual(a.subarray(24 + NONCE), pskMac(this.key, 'sender', nonceR, nonceS, b))) throw refuse('wrong proof: the peer does not hold this key');
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

export class TlsSecurity implements ChannelSecurity {
  readonly mode = 'tls' as const;
  constructor(
    private readonly files: TlsFiles,
    private readonly authTimeoutMs = AUTH_TIMEOUT_MS,
  ) {}

  connect(host: string, port: number, timeoutMs: number, what: string): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({
        host,
        port,
        // SNI takes a name only; for an address, Node checks the certificate's IP SANs against `host`.
        ...(net.isIP(host) === 0 ? { servername: host } : {}),
        ...this.files,
        minVersion: 'TLSv1.3',
      });
      let tcpUp = false;
      s.once('connect', () => (tcpUp = true));
      const timer = setTimeout(() => {
        s.destroy();
        reject(new ConnectionError('ERR_CONNECT_TIMEOUT', `${what}: no TLS connection to ${host}:${port} within ${timeoutMs} ms`));
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
        // A receiver without TLS hangs up on the ClientHello (its first bytes are no channel magic).
        const hint = e.code === 'ECONNRESET' && tcpUp ? ' (is the receiver running with --tls-cert/--tls-key/--tls-ca?)' : '';
        reject(socketError(e, `${what}: cannot connect to ${host}:${port} over TLS${hint}`, `ERR_${e.code ?? 'CONNECT'}`));
      });
    });
  }

  createServer(h: ServerHandlers): SecureServer {
    // A handshake still running, by its TCP socket (the TLS socket wraps it as _parent).
    const pending = new Map<net.Socket, string>();
    // A failed handshake's TLS socket may be destroyed (no address left): its TCP socket (_parent) still knows the peer.
    const peers = new WeakMap<object, string>();
    // The sender's certificate is checked here rather than by rejectUnauthorized, which would cut the
    // connection without saying why on either side: the reason is logged, and sent to the sender.
    const server = tls.createServer({
      ...this.files,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      handshakeTimeout: this.authTimeoutMs,
    });
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
      if (!s.authorized) {
        const given = Object.keys(s.getPeerCertificate()).length > 0;
        const why = given ? `TLS: the sender's certificate is refused: ${s.authorizationError} (not signed by --tls-ca)` : 'TLS: the sender gave no certificate';
        s.on('error', () => {});
        s.end(encodeFrame({ type: 'error', code: 'ERR_TLS_PEER_CERTIFICATE', message: why }));
        setTimeout(() => s.destroy(), 1000).unref();
        return h.onRefused(peer, why);
      }
      s.setNoDelay(true);
      h.onAccepted(s, peer, null);
    });
    server.on('tlsClientError', (e: Error, s: tls.TLSSocket) => {
      const parent = (s as unknown as { _parent?: object })._parent;
      const peer = s.remoteAddress ? peerOf(s) : ((parent && peers.get(parent)) ?? 'unknown peer');
      s.destroy();
      if (parent && evicted.has(parent)) return; // refused when it was dropped
      // OpenSSL's message carries its source location; its reason alone says what happened.
      const why = (e as Error & { reason?: string }).reason ?? e.message;
      h.onRefused(peer, `TLS: ${why}${(e as NodeJS.ErrnoException).code ? ` [${(e as NodeJS.ErrnoException).code}]` : ''}`);
    });
    return { server, closePending: () => pending.forEach((_, s) => s.destroy()) };
  }
}

/**
 * A socket error as an MfdError: a certificate refused, a name that does not match or a TLS
 * alert from the peer is an authentication failure (AuthError, code ERR_TLS_...), anything else
 * a connection failure with `code`. `where` prefixes the message.
 */
export function socketError(e: NodeJS.ErrnoException, where: string, code: string, place: ErrorPlace = {}): MfdError {
  if (e instanceof MfdError) return e;
  const message = where ? `${where}: ${e.message}` : e.message;
  const c = e.code ?? '';
  if (TLS_AUTH_CODE.test(c)) return new AuthError(`ERR_TLS_${c.replace(/^ERR_(TLS_|SSL_)?/, '')}`, message, place);
  return new ConnectionError(code, message, place, e);
}

// ---------------------------------------------------------------- options

export interface SecurityOptions {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  pskFile?: string;
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
  if (tlsFlags === 3) {
    return new TlsSecurity({ cert: readOption('--tls-cert', o.tlsCert!), key: readOption('--tls-key', o.tlsKey!), ca: readOption('--tls-ca', o.tlsCa!) }, o.authTimeoutMs);
  }
  if (o.pskFile !== undefined) return new PskSecurity(readPskFile(o.pskFile, warn), o.authTimeoutMs);
  return plainSecurity;
}

/** The key file's raw bytes (never logged). Refused when others may read it, or shorter than PSK_MIN_BYTES. */
export function readPskFile(file: string, warn: (msg: string) => void): Buffer {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st?.isFile()) throw new UsageError(`--psk-file "${file}": not a readable file`);
  if (st.mode & 0o007) throw new UsageError(`--psk-file "${file}": readable or writable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  if (st.mode & 0o070) warn(`--psk-file "${file}" is accessible to its group (mode ${(st.mode & 0o777).toString(8)})`);
  if (st.size > PSK_MAX_BYTES) throw new UsageError(`--psk-file "${file}": ${st.size} bytes, expected at most ${PSK_MAX_BYTES}`);
  const key = readOption('--psk-file', file);
  if (key.length < PSK_MIN_BYTES) throw new UsageError(`--psk-file "${file}": ${key.length} bytes, expected at least ${PSK_MIN_BYTES} (e.g. openssl rand -hex 32 > FILE)`);
  return key;
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
