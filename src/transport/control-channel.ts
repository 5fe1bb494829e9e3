/** Message-at-a-time view of the control connection (framing in control/protocol.ts). */
import type { Socket } from 'node:net';
import { AuthError, ConnectionError, MfdError, ProtocolError, errorText } from '../errors.js';
import { CONTROL_FRAME_MAX, decodeFrame, encodeFrame, type ControlMessage } from '../control/protocol.js';
import { ByteQueue } from './byte-queue.js';
import { PSK_CHALLENGE_MAGIC, socketError } from './security.js';

/**
 * Messages that may wait unread. The protocol is lock-step (hello, ready,
 * complete, verdict, and an error at any time), so a peer that gets further
 * ahead than this is flooding: each queued message is memory it makes us hold.
 */
export const MAX_UNREAD_MESSAGES = 16;

export class ControlChannel {
  private readonly queue = new ByteQueue();
  private readonly messages: ControlMessage[] = [];
  private waiter: { resolve: (m: ControlMessage) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  /** Called for each message that arrives while nobody waits in next(). */
  onUnsolicited: ((m: ControlMessage) => void) | null = null;
  /** Called when the connection fails while nobody waits in next(). */
  onFailure: ((e: Error) => void) | null = null;

  constructor(
    readonly socket: Socket,
    peer: string,
    initial?: Buffer,
  ) {
    if (initial) this.queue.push(initial);
    socket.on('data', (c: Buffer) => {
      if (this.broken) return;
      this.queue.push(c);
      this.drain();
    });
    socket.on('error', (e) => this.fail(socketError(e, `control channel (${peer})`, 'ERR_CONTROL_CONNECTION')));
    socket.on('close', () => this.fail(new ConnectionError('ERR_CONTROL_CLOSED', `control channel (${peer}) closed by the peer`)));
    this.drain();
  }

  send(msg: ControlMessage): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(encodeFrame(msg));
  }

  /** The next message; rejects when the connection fails or a frame is bad. */
  next(): Promise<ControlMessage> {
    const m = this.messages.shift();
    if (m) return Promise.resolve(m);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  close(): void {
    this.socket.end();
  }

  /** Length of the frame whose body has not fully arrived yet, or -1. */
  private pendingLen = -1;
  /** A bad frame arrived: the peer has been told, later bytes are dropped. */
  private broken = false;

  private drain(): void {
    try {
      for (;;) {
        if (this.pendingLen < 0) {
          const lenBytes = this.queue.take(4);
          if (!lenBytes) return;
          const len = lenBytes.readUInt32BE(0);
          // A receiver with --psk-file --psk-mode auth opens with its challenge ("MFDP"), which reads as this length.
          if (len === PSK_CHALLENGE_MAGIC)
            throw new AuthError(
              'ERR_PSK_REQUIRED',
              'control channel: the peer asks for PSK authentication: give --psk-file --psk-mode auth',
            );
          if (len > CONTROL_FRAME_MAX) {
            // Four printable bytes ("HTTP", "SSH-") are another protocol speaking: say which.
            const text = /^[\x20-\x7e]{4}$/.test(lenBytes.toString('latin1'))
              ? `: the peer does not speak mfd's control protocol (it sent "${lenBytes.toString('latin1')}...")`
              : '';
            throw new ProtocolError(
              'ERR_CONTROL_FRAME',
              `control channel: frame of ${len} bytes received, expected at most ${CONTROL_FRAME_MAX}${text}`,
            );
          }
          this.pendingLen = len;
        }
        const body = this.queue.take(this.pendingLen);
        if (!body) return;
        this.pendingLen = -1;
        this.deliver(decodeFrame(body));
      }
    } catch (e) {
      this.broken = true;
      this.fail(e as Error);
      // Tell the peer why before hanging up, as for any other failure (it was only ever told "closed").
      if (e instanceof MfdError && this.socket.writable)
        this.socket.end(encodeFrame({ type: 'error', code: e.code, message: errorText(e) }));
      else this.socket.destroy();
    }
  }

  private deliver(m: ControlMessage): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve(m);
    } else if (this.onUnsolicited) {
      this.onUnsolicited(m);
    } else {
      if (this.messages.length >= MAX_UNREAD_MESSAGES) {
        throw new ProtocolError(
          'ERR_CONTROL_FLOOD',
          `control channel: received a message with ${this.messages.length} unread, expected at most ${MAX_UNREAD_MESSAGES} unread`,
        );
      }
      this.messages.push(m);
    }
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(e);
    } else {
      this.onFailure?.(e);
    }
  }
}
