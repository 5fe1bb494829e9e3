/**
 * The sender path: control hello -> N data channels (init packet, then RAM
 * packets) -> SYNC on every channel -> completion with digests -> verdict.
 *
 * The per-packet work (load -> analyse -> method.prepare -> header) is the
 * shared pipeline (pipeline.ts); here each channel's sink is a TCP socket:
 * header and payload go out as one corked writev, with socket backpressure.
 */
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { AuthError, ConnectionError, MfdError, RemoteError, asMfdError, InterruptedError, ProtocolError } from '../errors.js';
import { CONTROL_VERSION, DIGEST_ALGORITHM, encodePreamble, type ControlMessage, type Hello } from '../control/protocol.js';
import { ControlChannel } from '../transport/control-channel.js';
import { endSocket, PEER_REASON_GRACE_MS } from '../transport/connect.js';
import { plainSecurity, socketError, type ChannelSecurity } from '../transport/security.js';
import { encodeInitPacket, uuidFromString } from '../wire/init-packet.js';
import { INIT_PACKET_SIZE, MULTIFD_PACKET_SIZE } from '../wire/constants.js';
import type { ChannelCounters, RunStats } from '../stats.js';
import { SendPipeline, type ChannelSink, type OutgoingPacket, type PipelineOptions } from './pipeline.js';

export interface SendOptions extends PipelineOptions {
  host: string;
  port: number;
  connectTimeoutMs?: number;
  /** How each connection authenticates (TLS, PSK); default none. */
  security?: ChannelSecurity;
  signal?: AbortSignal;
}

export interface SendResult {
  stats: RunStats;
  /** The receiver's own statistics, from its verdict. */
  receiver: Record<string, unknown>;
}

export async function send(opts: SendOptions): Promise<SendResult> {
  const startNs = process.hrtime.bigint();
  const log = opts.logger;
  const uuid = randomUUID();
  const uuidBytes = uuidFromString(uuid);
  const security = opts.security ?? plainSecurity;
  const timeout = opts.connectTimeoutMs ?? 10_000;
  const sockets: Socket[] = [];
  let pipeline: SendPipeline | null = null;
  let control: ControlChannel | null = null;
  let failure: MfdError | null = null;

  // First failure wins; everything else is torn down around it.
  const fail = (e: unknown): MfdError => {
    if (!failure) {
      failure = asMfdError(e);
      control?.send({ type: 'error', code: failure.code, message: failure.message });
      for (const s of sockets) s.destroy();
    }
    return failure;
  };
  // A dropped data channel is often the receiver hanging up after telling us
  // why on the control channel; give that reason a moment to arrive and win.
  const failSoon = (e: MfdError): void => {
    setTimeout(() => fail(e), PEER_REASON_GRACE_MS).unref();
  };
  const onAbort = (): void => {
    fail(new InterruptedError(String(opts.signal?.reason ?? 'abort')));
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    // Method, detector and hardware checks come first: nothing connects when they fail.
    pipeline = await SendPipeline.open(opts);
    const p = pipeline;

    const ctlSock = await security.connect(opts.host, opts.port, timeout, 'control channel', { uuid: uuidBytes, role: 'control', channel: 0 });
    sockets.push(ctlSock);
    control = new ControlChannel(ctlSock, `${opts.host}:${opts.port}`);
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
      ramblocks: p.blocks.map((b) => ({ name: b.source.name, size: b.source.size })),
    };
    ctlSock.write(encodePreamble());
    control.send(hello);
    expectType(await control.next(), 'ready');
    log.info({ uuid, channels: opts.channels, compression: p.method.name }, 'receiver ready');
    // From here on, a message from the receiver outside next() is a failure report.
    control.onUnsolicited = (m) => fail(remoteOrUnexpected(m, 'while sending pages'));

    for (let id = 0; id < opts.channels; id++) {
      const socket = await security.connect(opts.host, opts.port, timeout, `channel ${id}`, { uuid: uuidBytes, role: 'data', channel: id });
      sockets.push(socket);
      socket.on('error', (e) => failSoon(socketError(e, '', 'ERR_CHANNEL_CONNECTION', { channel: id })));
      socket.on('close', () => {
        if (!socket.writableFinished) failSoon(new ConnectionError('ERR_CHANNEL_CLOSED', 'connection closed by the receiver', { channel: id }));
      });
      socket.write(encodeInitPacket(uuidBytes, id));
      await p.addChannel(id, (counters) => {
        counters.wireBytes += INIT_PACKET_SIZE;
        return socketSink(socket, counters);
      });
    }

    await p.run(fail, () => failure);
    if (failure) throw failure;

    const complete: ControlMessage = { type: 'complete', packets: p.packetCounts(), digests: p.digests() };
    control.onUnsolicited = null;
    control.send(complete);
    const verdict = await control.next();
    if (verdict.type !== 'verdict') throw remoteOrUnexpected(verdict, 'waiting for the verdict');
    control.close();
    return { stats: p.stats(uuid, startNs), receiver: verdict.stats };
  } catch (e) {
    throw fail(e);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    await pipeline?.close();
    for (const s of sockets) if (failure) s.destroy();
  }
}

function expectType(m: ControlMessage, type: ControlMessage['type']): void {
  if (m.type !== type) throw remoteOrUnexpected(m, `waiting for ${type}`);
}

function remoteOrUnexpected(m: ControlMessage, when: string): MfdError {
  // The receiver refused our certificate (TLS): an authentication failure, as when we refuse its.
  if (m.type === 'error' && m.code.startsWith('ERR_TLS_')) return new AuthError(m.code, `the receiver refused the connection: ${m.message}`);
  if (m.type === 'error') return new RemoteError('receiver', m.code, m.message);
  return new ProtocolError('ERR_CONTROL_UNEXPECTED', `control channel: received "${m.type}" ${when}`);
}

/** A multifd channel's socket as a sink: header and payload as one corked batch (one writev). */
function socketSink(socket: Socket, counters: ChannelCounters): ChannelSink {
  return {
    write(p: OutgoingPacket): Promise<void> {
      counters.wireBytes += p.pieces.reduce((a, c) => a + c.length, 0);
      return write(socket, p.pieces, p.done);
    },
    end: () => endSocket(socket),
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
