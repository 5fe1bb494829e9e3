/** TCP helpers shared by both sides. */
import net from 'node:net';
import { ConnectionError } from '../errors.js';

/**
 * How long a side that sees a data channel drop waits before failing on it:
 * the peer usually said why on the control channel just before hanging up,
 * and that reason should be the one reported.
 */
export const PEER_REASON_GRACE_MS = 250;

/** Rejects with `e` once the peer's reason has had PEER_REASON_GRACE_MS to arrive and win. */
export function afterPeerGrace(e: unknown): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(e), PEER_REASON_GRACE_MS));
}

export function connect(host: string, port: number, timeoutMs: number, what: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ConnectionError('ERR_CONNECT_TIMEOUT', `${what}: no connection to ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.setKeepAlive(true, 10_000);
      resolve(sock);
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ConnectionError(`ERR_${e.code ?? 'CONNECT'}`, `${what}: cannot connect to ${host}:${port}: ${e.message}`, {}, e));
    });
  });
}

/** "host:port", "[v6]:port" or ":port" (all interfaces) -> parts. */
export function parseHostPort(s: string, defaultHost: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  const host = m[1] ?? (m[2] === '' ? defaultHost : m[2]!);
  return { host, port };
}

/**
 * Resolves once `sock` has flushed everything and closed its write side;
 * rejects when the socket is destroyed first (end()'s callback alone would
 * never run then, and the caller would wait on nothing).
 */
export function endSocket(sock: net.Socket, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (sock.writableFinished) return resolve();
    const closedEarly = (): ConnectionError =>
      new ConnectionError('ERR_CLOSED_BEFORE_END', `${what}: connection closed before all its data was sent`);
    if (sock.destroyed) return reject(closedEarly());
    sock.once('error', reject);
    sock.once('close', () => (sock.writableFinished ? resolve() : reject(closedEarly())));
    sock.end(() => resolve());
  });
}
