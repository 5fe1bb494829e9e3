/** Shared test helpers: temp dirs, images, hashes, in-process migrations, a raw (hostile) sender. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import { send as sendPath, type SendOptions, type SendResult } from '../../src/sender/sender.js';
import { receive as receivePath, type RecvOptions, type RecvResult } from '../../src/receiver/receiver.js';
import { deltaSender } from '../../src/delta/sender.js';
import { deltaReceiver, type DeltaRecvOptions } from '../../src/delta/receiver.js';
import { silentLogger } from '../../src/log.js';
import { encodePreamble, encodeFrame, type ControlMessage, type Hello } from '../../src/control/protocol.js';
import { ControlChannel } from '../../src/transport/control-channel.js';
import { connect } from '../../src/transport/connect.js';
import { MfdError } from '../../src/errors.js';
import { BlockDigest } from '../../src/image/digest.js';
import { native } from '../../src/native/load.js';
import { helloMessage } from './hello.js';

export { helloMessage };

export function tmpdir(t: Test): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-test-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/**
 * A connected pair of plain TCP sockets on loopback: `a` the connecting side, `b` the accepted one.
 * Socket errors are swallowed (the tests make peers fail on purpose); `close()` destroys both, as
 * the test's end does.
 */
export async function socketPair(t: Test): Promise<{ a: net.Socket; b: net.Socket; close(): void }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const a = net.connect(port, '127.0.0.1');
  await new Promise((r) => a.once('connect', r));
  const b = await accepted;
  server.close();
  a.on('error', () => {});
  b.on('error', () => {});
  const close = (): void => {
    a.destroy();
    b.destroy();
  };
  t.teardown(close);
  return { a, b, close };
}

export type Kind = 'zero' | 'random' | 'mixed' | 'text';

/** Writes an image of `size` bytes; mixed = runs of zero, text and random pages. */
export function makeImage(file: string, size: number, kind: Kind, seed = 1): string {
  const b = Buffer.alloc(size);
  if (kind === 'random') randomBytes(size).copy(b);
  else if (kind === 'text') for (let i = 0; i < size; i++) b[i] = 0x61 + ((i * 7 + seed) % 26);
  else if (kind === 'mixed') {
    let x = seed;
    for (let p = 0; p * 4096 < size; p++) {
      x = (x * 1103515245 + 12345) >>> 0;
      const k = x % 10;
      const page = b.subarray(p * 4096, Math.min(size, (p + 1) * 4096));
      if (k < 5) continue;
      if (k < 8) page.fill(0x20 + (x % 90));
      else randomBytes(page.length).copy(page);
    }
  }
  fs.writeFileSync(file, b);
  return file;
}

export function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** crc32c-pages-v1 of a file of whole 4 KiB pages (what recv --qemu's manifest records per ramblock). */
export function pagesDigest(file: string): string {
  const b = fs.readFileSync(file);
  const d = new BlockDigest();
  for (let p = 0; p * 4096 < b.length; p++) d.add(p, native.crc32c(b.subarray(p * 4096, (p + 1) * 4096)));
  return d.hex();
}

/** The network sender, with `delta` asking for delta transfer (wired in as migrate() in src/migrate/ does). */
export function send(o: SendOptions & { delta?: boolean }): Promise<SendResult> {
  const { delta, ...rest } = o;
  return sendPath({ ...rest, ...(delta ? { extension: deltaSender() } : {}) });
}

/** The network receiver, with `delta` offering bases to a sender that asks (wired in as migrateIncoming() does). */
export function receive(o: RecvOptions & { delta?: DeltaRecvOptions }): Promise<RecvResult> {
  const { delta, ...rest } = o;
  return receivePath({ ...rest, ...(delta ? { extension: deltaReceiver(delta) } : {}) });
}

export interface Pair {
  sent: SendResult;
  received: RecvResult;
}

/** Runs a receiver and a sender in this process over loopback. */
export async function migrate(
  send_: Omit<SendOptions, 'host' | 'port' | 'logger'> & { logger?: SendOptions['logger']; delta?: boolean },
  recv: Omit<RecvOptions, 'host' | 'port' | 'logger'> & { logger?: RecvOptions['logger']; delta?: DeltaRecvOptions },
): Promise<Pair> {
  const { port, result } = await startReceiver(recv);
  const sent = await send({ host: '127.0.0.1', port, logger: silentLogger, ...send_ });
  return { sent, received: await result };
}

export async function startReceiver(
  recv: Omit<RecvOptions, 'host' | 'port' | 'logger'> & { logger?: RecvOptions['logger']; delta?: DeltaRecvOptions },
): Promise<{ port: number; result: Promise<RecvResult> }> {
  let result!: Promise<RecvResult>;
  const port = await new Promise<number>((resolve, reject) => {
    result = receive({ host: '127.0.0.1', port: 0, logger: silentLogger, timeoutMs: 10_000, ...recv, onListening: (a) => resolve(a.port) });
    result.catch(reject);
  });
  return { port, result };
}

/** Settles to the error a promise rejects with (or fails when it resolves). */
export async function rejection(p: Promise<unknown>): Promise<MfdError> {
  try {
    await p;
  } catch (e) {
    return e as MfdError;
  }
  throw new Error('expected a rejection');
}

/** A hand-driven sender speaking the real control protocol, for feeding the receiver bad input. */
export class RawSender {
  readonly uuid = '00112233-4455-6677-8899-aabbccddeeff';
  readonly uuidBytes = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  control!: ControlChannel;
  readonly sockets: net.Socket[] = [];

  constructor(readonly port: number) {}

  async hello(over: Partial<Hello> = {}): Promise<ControlMessage> {
    const sock = await connect('127.0.0.1', this.port, 2000, 'control');
    this.sockets.push(sock);
    this.control = new ControlChannel(sock, 'test');
    sock.on('error', () => {});
    sock.write(encodePreamble());
    sock.write(encodeFrame(helloMessage({ uuid: this.uuid, ...over })));
    return this.control.next();
  }

  /** Opens a data connection and writes `bytes` to it. */
  async channel(...bytes: Uint8Array[]): Promise<net.Socket> {
    const s = await connect('127.0.0.1', this.port, 2000, 'data');
    s.on('error', () => {});
    this.sockets.push(s);
    for (const b of bytes) s.write(b);
    return s;
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
  }
}

/** Polls `f` every 50 ms until it holds; fails naming `what` after `ms`. */
export async function until(what: string, f: () => boolean, ms = 30_000): Promise<void> {
  const end = performance.now() + ms;
  while (!f()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Pages the progress journal of ramblock `name` in `dir` holds (0 when there is none yet). */
export function journalPages(dir: string, name = 'vm.ram'): number {
  try {
    const j = JSON.parse(fs.readFileSync(path.join(dir, `.${name}.mfd-journal`), 'utf8')) as { pages: number[] };
    let n = 0;
    for (let i = 1; i < j.pages.length; i += 2) n += j.pages[i]!;
    return n;
  } catch {
    return 0;
  }
}
