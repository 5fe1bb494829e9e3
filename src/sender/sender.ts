/**
 * The sender path: control hello -> N data channels (init packet, then RAM
 * packets) -> SYNC on every channel -> completion with digests -> verdict.
 *
 * The per-packet work (load -> analyse -> method.prepare -> header) is the
 * shared pipeline (pipeline.ts); here each channel's sink is a TCP socket:
 * header and payload go out as one sendmsg from the channel's native thread
 * (transport/native-channel.ts), or, on TLS, as one corked writev. A
 * compressing method's packets are sent by the channel's compute worker, and
 * only what the socket does not take at once by the channel's thread (RelaySink).
 */
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import {
  AuthError,
  ConnectionError,
  FirstFailure,
  MfdError,
  RemoteError,
  ResumeError,
  ProtocolError,
  type NativeIoError,
  nativeIoFailure,
  errorText,
} from '../errors.js';
import { CONTROL_VERSION, DIGEST_ALGORITHM, encodePreamble, type ControlMessage, type Hello } from '../control/protocol.js';
import { ControlChannel } from '../transport/control-channel.js';
import { afterPeerGrace, endSocket, PEER_REASON_GRACE_MS } from '../transport/connect.js';
import { plainSecurity, socketError, type ChannelSecurity } from '../transport/security.js';
import { NativeChannel } from '../transport/native-channel.js';
import { encodeInitPacket, uuidFromString } from '../wire/init-packet.js';
import { INIT_PACKET_SIZE, MULTIFD_PACKET_SIZE } from '../wire/constants.js';
import type { ChannelCounters, RunStats } from '../stats/stats.js';
import { SendPipeline, type ChannelSink, type OutgoingPacket, type PipelineOptions, type RelaySink } from './pipeline.js';
import type { MethodName } from '../methods/index.js';
import type { Logger } from '../log.js';

/**
 * An extension of the sender's conversation (delta transfer: src/delta/sender.ts's
 * deltaSender), wired in by whoever assembles the migration (src/migrate/). Its
 * contract: hello()'s fields are added to the hello (after `resume`); answer()
 * may send frames of its own right after the hello (`send`), reads the
 * receiver's answer to that hello through `next` (frames of the extension's own
 * come before `ready`), may hand the pipeline packets to send before any page
 * (SendPipeline.sendFirst), and returns the message that ended the answer
 * (`ready`, or whatever the sender then refuses); stats() adds the extension's
 * counts to the run's statistics once the verdict is in.
 */
export interface SendExtension {
  /** Fields it adds to the hello. */
  hello(p: SendPipeline): Pick<Hello, 'delta' | 'deltaSample' | 'deltaSampleOffer'>;
  /** Reads the answer to the hello (`next`), may send frames of its own first (`send`); returns `ready` (or what came instead). */
  answer(
    next: (what?: string) => Promise<ControlMessage>,
    p: SendPipeline,
    log: Logger,
    send: (m: ControlMessage) => void,
  ): Promise<ControlMessage>;
  stats(stats: RunStats, p: SendPipeline): void;
}

export interface SendOptions<N extends MethodName = MethodName> extends PipelineOptions<N> {
  host: string;
  port: number;
  connectTimeoutMs?: number;
  /**
   * A receiver that takes no bytes on a data channel, or does not answer on the
   * control channel, for this long fails the migration (default 60 s).
   */
  timeoutMs?: number;
  /** Continue a failed migration from the pages the receiver has durably written (its journal). */
  resume?: boolean;
  /** Delta transfer (src/delta/sender.ts): asks the receiver for the pages it holds, and sends references to them. */
  extension?: SendExtension;
  /** How each connection authenticates (TLS, PSK); default none. */
  security?: ChannelSecurity;
  signal?: AbortSignal;
}

export interface SendResult {
  stats: RunStats;
  /** The receiver's own statistics, from its verdict. */
  receiver: Record<string, unknown>;
}

export async function send<N extends MethodName>(opts: SendOptions<N>): Promise<SendResult> {
  const startNs = process.hrtime.bigint();
  const log = opts.logger;
  const uuid = randomUUID();
  const uuidBytes = uuidFromString(uuid);
  const security = opts.security ?? plainSecurity;
  const timeout = opts.connectTimeoutMs ?? 10_000;
  const stallMs = opts.timeoutMs ?? 60_000;
  const peer = `${opts.host}:${opts.port}`;
  const sockets: Socket[] = [];
  let pipeline: SendPipeline | null = null;
  let control: ControlChannel | null = null;

  // First failure wins (an abort is one); everything else is torn down around it.
  const failure = new FirstFailure(opts.signal, (e) => {
    control?.send({ type: 'error', code: e.code, message: errorText(e) });
    for (const s of sockets) s.destroy();
  });
  const fail = failure.fail;
  // A dropped data channel is often the receiver hanging up after telling us
  // why on the control channel; give that reason a moment to arrive and win.
  const failSoon = (e: MfdError): void => {
    setTimeout(() => fail(e), PEER_REASON_GRACE_MS).unref();
  };
  const watch = new StallWatch(stallMs, (e) => fail(e));

  try {
    // Method, detector and hardware checks come first: nothing connects when they fail.
    pipeline = await SendPipeline.open(opts);
    const p = pipeline;

    const ctlSock = await security.connect(opts.host, opts.port, timeout, 'control channel', {
      uuid: uuidBytes,
      role: 'control',
      channel: 0,
    });
    sockets.push(ctlSock);
    control = new ControlChannel(ctlSock, peer);
    const ctl = control;
    const answer = (what: string): Promise<ControlMessage> => watch.answer(ctl, peer, what);
    const hello: Hello = {
      type: 'hello',
      version: CONTROL_VERSION,
      uuid,
      channels: opts.channels,
      pageSize: opts.pageSize,
      packetSize: MULTIFD_PACKET_SIZE,
      compression: p.method.name,
      methodParams: p.params,
      zeroPageDetection: p.detector.name,
      digest: DIGEST_ALGORITHM,
      ramblocks: p.blocks.map((b) => ({ name: b.source.name, size: b.source.size, source: b.sourceId })),
      ...(opts.resume ? { resume: true } : {}),
      ...opts.extension?.hello(p),
    };
    ctlSock.write(encodePreamble());
    control.send(hello);
    log.debug({ peer, channels: opts.channels, compression: p.method.name }, 'hello sent');
    // `what` names what is awaited in a timeout's message (an extension awaits more than "ready").
    const next = (what = '"ready", the answer to the hello'): Promise<ControlMessage> => answer(what);
    const ready = opts.extension ? await opts.extension.answer(next, p, log, (m) => ctl.send(m)) : unextended(await next());
    if (ready.type === 'error' && ready.code.startsWith('ERR_RESUME'))
      throw new ResumeError(ready.code, `the receiver refused to resume: ${ready.message}`);
    if (ready.type !== 'ready') throw remoteOrUnexpected(ready, 'waiting for ready');
    if (opts.resume) {
      if (!ready.have)
        throw new ResumeError('ERR_RESUME_UNSUPPORTED', 'the receiver answered the resume without the pages it holds (ready.have)');
      p.resumeFrom(ready.have);
      log.info({ heldPages: p.heldPages }, 'resuming');
    } else if (ready.have) {
      throw new ProtocolError('ERR_CONTROL_MESSAGE', 'control channel: ready.have received, but this migration is not a resume');
    }
    log.info({ uuid, channels: opts.channels, compression: p.method.name }, 'receiver ready');
    // From here on, a message from the receiver outside next() is a failure report.
    control.onUnsolicited = (m) => fail(remoteOrUnexpected(m, 'while sending pages'));
    // And the control channel dropping is the failure to report, not the data channels it takes along.
    control.onFailure = (e) => fail(e);

    // EFAULT: the kernel could not read pages mapped from an image that was truncated meanwhile.
    const shrunk = (code: string | undefined): MfdError | null =>
      code === 'EFAULT' ? (p.blocks.map((b) => b.source.shrunk()).find((x) => x !== null) ?? null) : null;
    for (let id = 0; id < opts.channels; id++) {
      const socket = await security.connect(opts.host, opts.port, timeout, `channel ${id}`, { uuid: uuidBytes, role: 'data', channel: id });
      sockets.push(socket);
      socket.on('error', (e: NodeJS.ErrnoException) => {
        const s = shrunk(e.code);
        if (s) fail(s);
        else failSoon(socketError(e, '', 'ERR_CHANNEL_CONNECTION', { channel: id }));
      });
      socket.on('close', () => {
        if (!socket.writableFinished)
          failSoon(new ConnectionError('ERR_CHANNEL_CLOSED', 'connection closed by the receiver', { channel: id }));
      });
      // The init packet is in the kernel before a native thread writes behind it.
      await new Promise<void>((resolve) => socket.write(encodeInitPacket(uuidBytes, id), () => resolve()));
      const attached = NativeChannel.attach(socket, false);
      const nativeError = (e: NativeIoError): void => {
        const s = shrunk(e.code);
        if (s) fail(s);
        else if (e.code === 'ESTALLED') fail(stalled(id, stallMs, e.asked! - e.moved!));
        else if (e.code !== 'ECANCELED') failSoon(nativeIoFailure(e, { channel: id }));
      };
      const progressed = attached ? null : watch.add(id, socket);
      await p.addChannel(id, (counters) => {
        counters.wireBytes += INIT_PACKET_SIZE;
        return attached
          ? nativeSink(attached.channel, counters, `channel ${id}`, stallMs, nativeError, true)
          : socketSink(socket, counters, `channel ${id}`, progressed!);
      });
    }

    await p.run(fail, () => failure.error);
    if (failure.error) throw failure.error;

    const complete: ControlMessage = { type: 'complete', packets: p.packetCounts(), digests: p.digests() };
    control.onUnsolicited = null;
    control.onFailure = null;
    control.send(complete);
    const verdict = await answer('the verdict, after "complete"');
    if (verdict.type !== 'verdict') throw remoteOrUnexpected(verdict, 'waiting for the verdict');
    control.close();
    const stats = p.stats(uuid, startNs);
    if (opts.resume) stats.resumedPages = p.heldPages;
    opts.extension?.stats(stats, p);
    return { stats, receiver: verdict.stats };
  } catch (e) {
    throw fail(e);
  } finally {
    watch.stop();
    failure.dispose();
    await pipeline?.close();
    for (const s of sockets) if (failure.error) s.destroy();
  }
}

/** The answer to a hello that asked for no extension: an extension's frame or field in it is refused. */
function unextended(m: ControlMessage): ControlMessage {
  if (m.type === 'fingerprints')
    throw new ProtocolError(
      'ERR_CONTROL_UNEXPECTED',
      'control channel: received "fingerprints", but this migration did not ask for delta transfer',
    );
  if (m.type === 'ready' && m.delta)
    throw new ProtocolError(
      'ERR_CONTROL_MESSAGE',
      'control channel: ready.delta received, but this migration did not ask for delta transfer',
    );
  return m;
}

function remoteOrUnexpected(m: ControlMessage, when: string): MfdError {
  // The receiver refused our certificate (TLS): an authentication failure, as when we refuse its.
  if (m.type === 'error' && m.code.startsWith('ERR_TLS_'))
    return new AuthError(m.code, `the receiver refused the connection: ${m.message}`);
  if (m.type === 'error') return new RemoteError('receiver', m.code, m.message);
  return new ProtocolError('ERR_CONTROL_UNEXPECTED', `control channel: received "${m.type}" ${when}`);
}

/**
 * The sender's side of --timeout: a receiver that stops reading (stopped,
 * hung, its host gone without a reset) leaves our writes pending for ever, and
 * one that stops answering leaves us waiting for ever on the control channel.
 * Each data channel's progress is the last time the kernel took bytes from it;
 * a channel with bytes waiting and no progress for `ms` fails the migration,
 * and so does a control-channel answer that takes longer than `ms`.
 */
class StallWatch {
  private readonly channels = new Map<number, { socket: Socket; progress: number }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly ms: number,
    private readonly fail: (e: MfdError) => void,
  ) {
    this.timer = setInterval(() => this.check(), Math.min(1000, Math.max(50, ms / 4))).unref();
  }

  /** Watches channel `id`; call the function returned when its socket took bytes, or was idle as a write began. */
  add(id: number, socket: Socket): () => void {
    const c = { socket, progress: performance.now() };
    this.channels.set(id, c);
    return () => void (c.progress = performance.now());
  }

  private check(): void {
    const now = performance.now();
    for (const [id, c] of this.channels) {
      const waiting = c.socket.writableLength;
      if (waiting > 0 && !c.socket.destroyed && now - c.progress > this.ms) {
        this.fail(stalled(id, this.ms, waiting));
        return;
      }
    }
  }

  /**
   * The control channel's next message but `busy` (each of which restarts the
   * wait), or a timeout error naming what was awaited.
   */
  async answer(control: ControlChannel, peer: string, what: string): Promise<ControlMessage> {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new ConnectionError(
                'ERR_CONTROL_TIMEOUT',
                `control channel (${peer}): no answer from the receiver for ${this.ms} ms, waiting for ${what}; it is stopped, hung or unreachable`,
              ),
            ),
          this.ms,
        );
      });
      const m = await Promise.race([control.next(), late]).finally(() => clearTimeout(timer));
      if (m.type !== 'busy') return m;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

function stalled(channel: number, ms: number, waiting: number): ConnectionError {
  return new ConnectionError(
    'ERR_CHANNEL_STALLED',
    `the receiver took no data for ${ms} ms (${waiting} bytes waiting to be written); it is stopped, hung or unreachable`,
    { channel },
  );
}

/**
 * A multifd channel's socket on its native thread as a sink: each packet one
 * sendmsg batch straight from the pipeline's buffers. Two packets may be
 * queued, so the thread goes from one to the next without waiting for the
 * event loop. The first failed send goes to `failed`; later packets are not
 * sent (their buffers are released all the same), and end() rejects after the
 * peer's grace. `relay`: the channel's compute worker may send the packets it
 * makes itself (ChannelSink.relay), in order with the ones written here.
 */
export function nativeSink(
  ch: NativeChannel,
  counters: ChannelCounters,
  what: string,
  timeoutMs: number,
  failed: (e: NativeIoError) => void,
  relay = false,
): ChannelSink {
  const queued: Promise<void>[] = [];
  let error: NativeIoError | null = null;
  const track = async (sent: Promise<void>, done: () => void): Promise<void> => {
    queued.push(
      sent.then(done, (e: NativeIoError) => {
        done();
        if (error) return;
        error = e;
        failed(e);
      }),
    );
    if (queued.length > 1) await queued.shift();
  };
  return {
    write(p: OutgoingPacket): Promise<void> {
      if (error) {
        p.done();
        return Promise.resolve();
      }
      for (const piece of p.pieces) counters.wireBytes += piece.length;
      return track(ch.send(p.pieces, timeoutMs), p.done);
    },
    ...(relay
      ? {
          relay: {
            id: ch.id,
            timeoutMs,
            expect: (pieces) => ch.expectRelay(pieces),
            settle: (token, code, left) => ch.relayed(token, code, left),
            abandon: (token) => ch.abandon(token),
            sent(bytes, completion, done) {
              counters.wireBytes += bytes;
              return track(completion, done);
            },
          } satisfies RelaySink,
        }
      : {}),
    async end(): Promise<void> {
      await Promise.all(queued.splice(0));
      ch.close();
      if (error) await afterPeerGrace(nativeIoFailure(error, { subject: what }));
      await endSocket(ch.socket, what).catch(afterPeerGrace);
    },
  };
}

/** A multifd channel's socket as a sink: header and payload as one corked batch (one writev). */
function socketSink(socket: Socket, counters: ChannelCounters, what: string, progressed: () => void): ChannelSink {
  return {
    write(p: OutgoingPacket): Promise<void> {
      counters.wireBytes += p.pieces.reduce((a, c) => a + c.length, 0);
      if (socket.writableLength === 0) progressed();
      return write(socket, p.pieces, () => {
        progressed();
        p.done();
      });
    },
    // A channel closed under us is often the receiver hanging up after telling
    // us why on the control channel: give that reason the same grace to win.
    end: () => endSocket(socket, what).catch(afterPeerGrace),
  };
}

/**
 * Writes the pieces as one corked batch (one writev). `done` runs once the
 * bytes have left our buffers; the promise resolves when the socket can take
 * more (backpressure).
 */
function write(s: Socket, pieces: Uint8Array[], done: () => void): Promise<void> {
  s.cork();
  for (let i = 0; i < pieces.length - 1; i++) s.write(pieces[i]!);
  s.write(pieces[pieces.length - 1]!, () => done());
  s.uncork();
  if (!s.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const ok = (): void => {
      s.off('close', ok);
      s.off('drain', ok);
      resolve();
    };
    s.once('drain', ok);
    s.once('close', ok);
  });
}
