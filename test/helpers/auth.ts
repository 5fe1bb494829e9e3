/**
 * For the authentication tests: a CA and certificates made with the openssl CLI in a temp dir
 * at test time (never committed), pre-shared key files, a logger that keeps its lines, and
 * `mfd recv` as a process.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import type { Test } from 'tap';
import { mfd, mfdRecv } from './procs.js';
import type { ChannelSecurity } from '../../src/transport/security.js';

export interface KeyPair {
  cert: string;
  key: string;
}

export interface Certs {
  ca: string;
  /** The receiver's: SAN DNS:localhost, IP:127.0.0.1, signed by `ca`. */
  recv: KeyPair;
  /** The sender's, signed by `ca`. */
  send: KeyPair;
  /** Signed by `ca` for another host name only (DNS:other.example). */
  otherName: KeyPair;
  /** Another CA, and a certificate it signed for 127.0.0.1. */
  otherCa: string;
  stranger: KeyPair;
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  openssl(
    dir,
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
    '-days',
    '1',
    '-subj',
    `/CN=${name}`,
  );
  return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
}

function issue(dir: string, ca: { cert: string; key: string }, name: string, san: string): KeyPair {
  openssl(
    dir,
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${name}`,
  );
  fs.writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  openssl(
    dir,
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-out',
    `${name}.pem`,
    '-days',
    '1',
    '-extfile',
    `${name}.ext`,
  );
  return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
}

/** A CA and the certificates the tests need, in `dir` (the caller's temp dir). */
export function makeCerts(dir: string): Certs {
  const ca = makeCa(dir, 'test-ca');
  const other = makeCa(dir, 'other-ca');
  return {
    ca: ca.cert,
    recv: issue(dir, ca, 'receiver', 'DNS:localhost,IP:127.0.0.1'),
    send: issue(dir, ca, 'sender', 'DNS:sender.test'),
    otherName: issue(dir, ca, 'elsewhere', 'DNS:other.example'),
    otherCa: other.cert,
    stranger: issue(dir, other, 'stranger', 'DNS:localhost,IP:127.0.0.1'),
  };
}

export const tlsFlags = (p: KeyPair, ca: string): string[] => ['--tls-cert', p.cert, '--tls-key', p.key, '--tls-ca', ca];
export const tlsFiles = (p: KeyPair, ca: string) => ({
  cert: fs.readFileSync(p.cert),
  key: fs.readFileSync(p.key),
  ca: fs.readFileSync(ca),
});

/** A key file of `bytes` random bytes with `mode`. */
export function pskFile(dir: string, name: string, bytes = 32, mode = 0o600): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, randomBytes(bytes), { mode });
  fs.chmodSync(file, mode);
  return file;
}

/** A pino logger whose lines (parsed) are kept, at `level`. */
export function captureLogger(level = 'warn'): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

/** `mfd recv --listen 127.0.0.1:0 ARGS` as a process (procs.ts), resolved once it listens; killed at teardown. */
export async function recvProcess(
  t: Test,
  args: string[],
): Promise<{ p: ChildProcess; port: number; exited: Promise<number | null>; stderr: () => string; stdout: () => string }> {
  const r = await mfdRecv(t, args);
  return { p: r.p, port: r.port, exited: r.done.then((e) => e.code), stderr: r.stderr, stdout: r.stdout };
}

/** `mfd ARGS` as a process (procs.ts): exit code and output. */
export async function mfdAsync(t: Test, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await mfd(t, args).done;
  return { status: code, stdout, stderr };
}

/**
 * `security` for a sender whose multifd channel `channel` connects only once `before()` has
 * settled: whatever `before` does happens while the migration is set up and under way (the
 * receiver cannot finish without that channel).
 */
export function holdChannel(security: ChannelSecurity, channel: number, before: () => Promise<unknown>): ChannelSecurity {
  return {
    mode: security.mode,
    createServer: (h) => security.createServer(h),
    connect: async (host, port, timeoutMs, what, b) => {
      if (b.role === 'data' && b.channel === channel) await before();
      return security.connect(host, port, timeoutMs, what, b);
    },
  };
}
