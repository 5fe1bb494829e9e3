/**
 * A multifd channel's plain TCP socket, once its handshake is done, handed to
 * a native thread of its own (addon/socket_channel.cc): the sender's packets
 * go out as one sendmsg batch each, the receiver's come in as a read of the
 * header and a read of the payload it announced (with what has arrived of the
 * next header), each into a buffer of the caller's. The socket copies then
 * run beside the event loop, one thread per channel, instead of on it.
 *
 * The JS socket keeps its fd (libuv closes it). While a native operation may
 * be using the fd, the socket must not be destroyed: attach() makes the
 * socket's destroy() shut the connection down first (which ends a blocked
 * operation at once) and really destroy it when no operation is left, so
 * every existing `socket.destroy()` stays safe.
 *
 * A packet may also be sent by another thread, the channel's compute worker
 * that made it (expectRelay(), then the worker's native.socketChannelSend,
 * then relayed()): it goes out from the worker when the socket takes it at
 * once, else from the channel's thread, in order with the rest.
 *
 * TLS sockets have no plain fd to hand over: for them, and for streams that
 * are teed to a file, callers keep Node's stream path.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { native } from '../native/load.js';
import type { DecoderHandle, SocketChannel } from '../native/binding.js';
import { NativeIoError } from '../errors.js';
import { nativeIoError } from '../native/io-error.js';
import type { WriteRequest } from '../native/packet-io.js';

/** A packet's write, all of it but its pages and the room for their CRCs. */
export type PageWriteTo = Omit<WriteRequest, 'pages' | 'crc'>;

/** Internals of a net.Socket this module relies on (as Node's own stream code does). */
interface TcpHandle {
  fd?: number;
  reading?: boolean;
  readStop?(): number;
}

/** A packet another thread sends (expectRelay). */
interface Relay {
  /** Pinned until it is done. */
  pieces: Uint8Array[];
  asked: number;
  /** The channel thread's completion, when it came first. */
  outcome: { code: number; left: number } | null;
  /** Waits for that completion. */
  settle: ((code: number, left: number) => void) | null;
}

/** What recvWrite read and, for a payload its decoder refused (nothing written), why. */
export interface RecvWriteResult {
  got: number;
  ahead: number;
  refused?: { decoded: number; code: string | null; message: string };
}

/**
 * A packet of at most this many bytes (a header-only packet: a run of zero pages, a SYNC) goes out from
 * the calling thread when the socket takes it at once, as a worker's does (socketChannelSend): a hop to
 * the channel's thread and back would cost more than the copy.
 */
const SEND_HERE_BYTES = 16 * 1024;

export class NativeChannel {
  private pending = 0;
  /** socketChannelSend's answer ([code, left]) for a send from this thread. */
  private readonly sentHere = new Float64Array(2);
  private channelId = 0;
  private readonly relays = new Map<number, Relay>();
  private nextToken = 1;
  /** Held here: the addon keeps only a weak reference to it. */
  private readonly onRelayed = (token: number, code: number, left: number): void => {
    const r = this.relays.get(token);
    if (!r) return;
    if (r.settle) r.settle(code, left);
    else r.outcome = { code, left };
  };
  private idle: (() => void)[] = [];
  private closed = false;
  /** The code a read ahead failed with: the next read's failure. */
  private aheadFailed: number | null = null;
  /**
   * Why the socket was destroyed, when the peer did it (libuv, still polling the fd, saw it reset
   * or end the connection, and Node destroyed the socket): the operations destroy() cancels fail
   * with that code (EPIPE for an end), not ECANCELED, so the error says the peer hung up.
   */
  private destroyedBy: string | null = null;

  private constructor(
    private readonly ch: SocketChannel,
    readonly socket: net.Socket,
  ) {
    ch.onRelayed(this.onRelayed);
  }

  /** The channel's number for native.socketChannelSend on another thread. */
  get id(): number {
    return (this.channelId ||= this.ch.id());
  }

  /**
   * A packet another thread will send on this channel with native.socketChannelSend(id, pieces, ...,
   * token): until relayed() or abandon() says it is done, its pieces stay pinned and the socket is not
   * destroyed under it. Returns the token.
   */
  expectRelay(pieces: Uint8Array[]): number {
    return this.pin(pieces);
  }

  /** A send by socketChannelSend, from another thread or this one: its pieces pinned until it is done; its token. */
  private pin(pieces: Uint8Array[]): number {
    const token = this.nextToken++;
    this.pending++;
    this.ch.hold();
    this.relays.set(token, { pieces, asked: pieces.reduce((a, p) => a + p.length, 0), outcome: null, settle: null });
    return token;
  }

  /**
   * What socketChannelSend did with the packet ([code, left]): resolves once every byte is in the
   * kernel (at once, or when the channel's thread has sent what was queued); rejects as send() does.
   */
  relayed(token: number, code: number, left: number): Promise<void> {
    const r = this.relays.get(token);
    if (!r) return Promise.reject(new NativeIoError('ECANCELED', { on: 'socket', op: 'write' }));
    if (code !== 1) return this.finishRelay(token, r, code, left);
    if (r.outcome) return this.finishRelay(token, r, r.outcome.code, r.outcome.left);
    return new Promise((resolve, reject) => {
      r.settle = (c, l) => this.finishRelay(token, r, c, l).then(resolve, reject);
    });
  }

  /**
   * The call that was to send the packet failed or never ran (its worker failed or was stopped): done,
   * unless the call queued it after all, which then completes as sends do.
   */
  abandon(token: number): void {
    const r = this.relays.get(token);
    if (!r) return;
    const drop = (): void => void this.finishRelay(token, r, 0, 0).catch(() => {});
    if (r.outcome || !this.ch.relayQueued(token)) drop();
    else r.settle = drop;
  }

  private finishRelay(token: number, r: Relay, code: number, left: number): Promise<void> {
    this.relays.delete(token);
    this.ch.release();
    let e: NativeIoError | null = null;
    if (code < 0) {
      e = nativeIoError(code, { on: 'socket', op: 'write', asked: r.asked, moved: r.asked - left });
      if (e.code === 'ECANCELED' && this.destroyedBy) e = new NativeIoError(this.destroyedBy, e.fields());
    }
    if (--this.pending === 0) for (const f of this.idle.splice(0)) f();
    return e ? Promise.reject(e) : Promise.resolve();
  }

  /**
   * Takes over `socket`'s I/O, or returns null when it has no plain fd (TLS).
   * `stopReading`: the receiver's case; libuv stops reading and what it had
   * read but not delivered is returned in `buffered`, to be parsed first.
   */
  static attach(socket: net.Socket, stopReading: boolean): { channel: NativeChannel; buffered: Buffer[] } | null {
    if (socket instanceof tls.TLSSocket) return null;
    const handle = (socket as unknown as { _handle?: TcpHandle })._handle;
    const fd = handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return null;
    const buffered: Buffer[] = [];
    if (stopReading) {
      socket.pause();
      for (let c: Buffer | null; (c = socket.read() as Buffer | null) !== null;) buffered.push(c);
      // After read(), which may have asked libuv to read on: nothing is read until the event loop polls again.
      if (handle!.reading !== false && handle!.readStop) {
        handle!.reading = false;
        handle!.readStop();
      }
    }
    const channel = new NativeChannel(new native.SocketChannel(fd), socket);
    const destroy = socket.destroy.bind(socket);
    socket.destroy = (err?: Error): net.Socket => {
      // An error, or the peer's end of the stream (Node destroys a socket whose peer ended it).
      const code = (err as NodeJS.ErrnoException | undefined)?.code ?? (socket.readableEnded ? 'EPIPE' : null);
      if (code && channel.destroyedBy === null) channel.destroyedBy = code;
      channel.ch.shutdown();
      channel.close();
      void channel.settled().then(() => destroy(err));
      return socket;
    };
    return { channel, buffered };
  }

  /**
   * Sends the pieces in order; rejects with a NativeIoError (errno name, or ESTALLED: the peer took
   * nothing for timeoutMs) whose `moved` of `asked` bytes were sent. Up to SEND_HERE_BYTES go out from
   * this thread when nothing is queued and the socket takes them at once; else the channel's thread sends.
   */
  send(pieces: Uint8Array[], timeoutMs: number): Promise<void> {
    let bytes = 0;
    for (const p of pieces) bytes += p.length;
    if (bytes <= SEND_HERE_BYTES && !this.closed) {
      // From this thread when nothing is queued before it and the socket takes it, else queued behind.
      const token = this.pin(pieces);
      native.socketChannelSend(this.id, pieces, timeoutMs, token, this.sentHere);
      return this.relayed(token, this.sentHere[0]!, this.sentHere[1]!);
    }
    return this.op('write', (done) =>
      this.ch.send(pieces, timeoutMs, (err, code, left) => {
        if (err) return done(err);
        if (code >= 0) return done(null);
        const asked = pieces.reduce((a, p) => a + p.length, 0);
        done(nativeIoError(code, { on: 'socket', op: 'write', asked, moved: asked - left }));
      }),
    );
  }

  /**
   * Reads into buf after its first `have` bytes until it is full, then, into
   * `ahead` (when given), what has already arrived after it, up to ahead's
   * length, without waiting: the next header comes with the payload before
   * it, one operation a packet. Resolves to the bytes in buf and in ahead;
   * fewer than buf's length means the peer ended the stream. Rejects with a
   * NativeIoError (errno name, or ESTALLED: nothing arrived for timeoutMs)
   * whose `moved` bytes are in buf; a failure of the read ahead is the next
   * read's.
   */
  recv(buf: Uint8Array, have: number, timeoutMs: number, ahead?: Uint8Array): Promise<{ got: number; ahead: number }> {
    const failed = this.aheadFailure(have);
    if (failed) return Promise.reject(failed);
    const r = { got: have, ahead: 0 };
    return this.op('read', (done) =>
      this.ch.recv(buf, have, ahead ?? null, timeoutMs, (err, n, code, aheadGot, aheadCode) => {
        if (err) return done(err);
        r.got = n;
        r.ahead = aheadGot;
        if (aheadCode < 0) this.aheadFailed = aheadCode;
        done(code < 0 ? nativeIoError(code, { on: 'socket', op: 'read', moved: n }) : null);
      }),
    ).then(() => r);
  }

  /**
   * A packet header into buf[0, headerSize) after its first `have` bytes, waiting for it as recv() does;
   * then, without waiting, the headers that have wholly arrived after it, as long as the last one read
   * announces no payload (its u32 at `sizeAt`, next_packet_size, is 0) and buf has room: a run of
   * zero-page packets comes in one operation. Resolves to the bytes in buf: headerSize times the headers,
   * or fewer than headerSize when the peer ended the stream. Rejects as recv().
   */
  recvHeaders(buf: Uint8Array, have: number, headerSize: number, sizeAt: number, timeoutMs: number): Promise<number> {
    const failed = this.aheadFailure(have);
    if (failed) return Promise.reject(failed);
    let got = have;
    return this.op('read', (done) =>
      this.ch.recvHeaders(buf, have, headerSize, sizeAt, timeoutMs, (err, n, code) => {
        if (err) return done(err);
        got = n;
        done(code < 0 ? nativeIoError(code, { on: 'socket', op: 'read', moved: n }) : null);
      }),
    ).then(() => got);
  }

  /**
   * A packet's payload read into all of buf, then its `w.normal` pages digested into crc and written as `w`
   * says, on the channel's thread in the same operation (then, into `ahead`, what has arrived of the next
   * header). The payload is the pages as they are (buf: w.normal * w.pageSize bytes), or, with `decode`, a
   * stream's payload that the thread decodes into `decode.pages` (w.normal * w.pageSize bytes) first.
   * Resolves to the payload bytes read (fewer than buf's length: the peer ended the stream; nothing was
   * written), those read ahead, and, for a payload that did not decode (nothing written), why: `refused`,
   * the bytes it decoded to (-1: none) with the decoder's code and message. Rejects with a NativeIoError on
   * the socket, as recv(), or on the file (`op` write: ENOSPC, say, or EPADDING with its badPage).
   */
  recvWrite(
    buf: Uint8Array,
    w: PageWriteTo,
    crc: Uint32Array,
    timeoutMs: number,
    ahead?: Uint8Array,
    decode?: { decoder: DecoderHandle; pages: Uint8Array },
  ): Promise<RecvWriteResult> {
    const failed = this.aheadFailure(0);
    if (failed) return Promise.reject(failed);
    const r: RecvWriteResult = { got: 0, ahead: 0 };
    return this.op('read', (done) =>
      this.ch.recvWrite(
        buf,
        w.fd,
        w.pageSize,
        w.offsets,
        w.normal,
        w.zero,
        w.blockSize,
        w.writeZeros,
        crc,
        ahead ?? null,
        decode?.decoder ?? null,
        decode?.pages ?? null,
        timeoutMs,
        (err, n, code, aheadGot, aheadCode, onFile, badPage, decoded, decodeCode, decodeMessage) => {
          if (err) return done(err);
          r.got = n;
          r.ahead = aheadGot;
          if (aheadCode < 0) this.aheadFailed = aheadCode;
          if (code >= 0) {
            if (n === buf.length && decode && decoded !== decode.pages.length)
              r.refused = { decoded, code: decodeCode, message: decodeMessage };
            return done(null);
          }
          done(
            onFile
              ? nativeIoError(code, { on: 'file', op: 'write', ...(badPage >= 0 ? { badPage } : {}) })
              : nativeIoError(code, { on: 'socket', op: 'read', moved: n }),
          );
        },
      ),
    ).then(() => r);
  }

  /** The failure of the last read ahead (the one a read makes after its buffer), as this read's, once; or null. */
  private aheadFailure(moved: number): NativeIoError | null {
    const failed = this.aheadFailed;
    if (failed === null) return null;
    this.aheadFailed = null;
    return nativeIoError(failed, { on: 'socket', op: 'read', moved });
  }

  /** No more operations: the thread ends after the queued ones. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ch.close();
  }

  /** Resolves when no operation is queued or running. */
  settled(): Promise<void> {
    return this.pending === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }

  private op(op: 'read' | 'write', start: (done: (e: Error | null) => void) => void): Promise<void> {
    if (this.closed) return Promise.reject(new NativeIoError(this.destroyedBy ?? 'ECANCELED', { on: 'socket', op }));
    this.pending++;
    return new Promise((resolve, reject) => {
      const done = (e: Error | null): void => {
        if (--this.pending === 0) for (const f of this.idle.splice(0)) f();
        if (e instanceof NativeIoError && e.code === 'ECANCELED' && this.destroyedBy) e = new NativeIoError(this.destroyedBy, e.fields());
        if (e) reject(e);
        else resolve();
      };
      try {
        start(done);
      } catch (e) {
        done(e as Error); // refused before it was queued
      }
    });
  }
}
