/**
 * A TCP proxy for fault tests on loopback: forwards every connection to the
 * receiver, sender-to-receiver bytes throttled to `rate` bytes/s per
 * connection (so a migration lasts long enough to be hit in the middle), and
 * can reset a connection (RST both ways) once it has carried N bytes.
 */
import net from 'node:net';
import type { Test } from 'tap';
import { MULTIFD_MAGIC } from '../../src/wire/constants.js';
import { CONTROL_MAGIC } from '../../src/control/protocol.js';

export interface ProxyOptions {
  /** Bytes per second per connection, sender to receiver. */
  rate: number;
  /** Reset the first multifd channel once it has carried this many bytes. */
  resetDataChannelAfter?: number;
}

export class FaultProxy {
  readonly server = net.createServer();
  port = 0;
  /** performance.now() when the reset happened. */
  resetAt: number | null = null;
  private readonly conns = new Set<net.Socket>();
  /** The control connection (first bytes 'MFDC'), both ends. */
  private control: [net.Socket, net.Socket] | null = null;

  constructor(
    private readonly upstreamPort: number,
    private readonly opts: ProxyOptions,
  ) {
    this.server.on('connection', (c) => this.onConnection(c));
  }

  static async start(t: Test, upstreamPort: number, opts: ProxyOptions): Promise<FaultProxy> {
    const p = new FaultProxy(upstreamPort, opts);
    await new Promise<void>((r) => p.server.listen(0, '127.0.0.1', () => r()));
    p.port = (p.server.address() as net.AddressInfo).port;
    t.teardown(() => p.close());
    return p;
  }

  private onConnection(client: net.Socket): void {
    const up = net.connect({ host: '127.0.0.1', port: this.upstreamPort });
    this.conns.add(client).add(up);
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
    client.on('close', () => up.destroy());
    up.on('close', () => client.destroy());
    up.pipe(client);
    let bytes = 0;
    let first: Buffer | null = null;
    let isData = false;
    client.on('data', (chunk: Buffer) => {
      if (first === null || first.length < 4) {
        first = first ? Buffer.concat([first, chunk]) : chunk;
        isData = first.length >= 4 && first.readUInt32BE(0) === MULTIFD_MAGIC;
        if (first.length >= 4 && first.readUInt32BE(0) === CONTROL_MAGIC) this.control = [client, up];
      }
      bytes += chunk.length;
      const limit = this.opts.resetDataChannelAfter;
      if (isData && limit !== undefined && this.resetAt === null && bytes >= limit) {
        this.resetAt = performance.now();
        client.resetAndDestroy();
        up.resetAndDestroy();
        return;
      }
      up.write(chunk);
      client.pause();
      setTimeout(() => client.resume(), (chunk.length / this.opts.rate) * 1000);
    });
  }

  /** Resets the control connection now, both ways; false when there is none. */
  resetControl(): boolean {
    if (!this.control || this.resetAt !== null) return false;
    this.resetAt = performance.now();
    for (const s of this.control) s.resetAndDestroy();
    return true;
  }

  close(): void {
    for (const c of this.conns) c.destroy();
    this.server.close();
  }
}
