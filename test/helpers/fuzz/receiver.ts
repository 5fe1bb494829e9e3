/**
 * End-to-end fuzz target: a live receiver (in this process, over loopback)
 * fed a mutated data-channel byte stream after a valid hello, then the
 * sender's `complete`. Whatever the bytes, the migration must end, within
 * the receiver's own timeouts, in success (and then the output is exactly the
 * image) or a typed MfdError (a packet or payload error names the channel);
 * and no write may leave the ramblock: with --in-place the output file stays
 * behind on failure and must still be exactly the declared size.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type net from 'node:net';
import fc from 'fast-check';
import { CONTROL_VERSION, DIGEST_ALGORITHM, encodeFrame, encodePreamble, type Hello } from '../../../src/control/protocol.js';
import { ExitCode, MfdError } from '../../../src/errors.js';
import { silentLogger } from '../../../src/log.js';
import { listMethods } from '../../../src/methods/index.js';
import { receive } from '../../../src/receiver/receiver.js';
import { ControlChannel } from '../../../src/transport/control-channel.js';
import { connect } from '../../../src/transport/connect.js';
import { uuidToString } from '../../../src/wire/init-packet.js';
import { MULTIFD_PACKET_SIZE } from '../../../src/wire/constants.js';
import { type FuzzTarget, typed, violation } from './harness.js';
import { split } from './mutate.js';
import { buildChannelStream, makeImage, mutateStream, streamMutation, type ChannelStream, type StreamMutation } from './streams.js';
import { FUZZ_UUID } from './wire.js';
import { HELLO_CORPUS, helloBytes } from './control.js';

/** The receiver's idle timeout in these runs (a stalled channel fails after it). */
const RECEIVER_TIMEOUT_MS = 1000;
/** Longest a run may take before it counts as a hang: the receiver's timeout, the peer-reason grace and slack. */
const HANG_MS = 5000;

interface ReceiverInput {
  stream: number;
  mutations: readonly StreamMutation[];
  cuts: readonly number[];
  inPlace: boolean;
  /** Send `complete` (the sender's claim) or just close the control channel after the data. */
  complete: boolean;
}

/** Data codes: failures a channel's bytes cause, which must name the channel (a field, not baked into the message). */
const CHANNEL_CODES = /^ERR_(PACKET|PAYLOAD|PAGE|CHANNEL)_/;

export async function receiverCorpus(): Promise<ChannelStream[]> {
  const out: ChannelStream[] = [];
  for (const method of listMethods()) {
    const image = makeImage(20 * 4096 + 100, 4096, ['text', 'zero', 'random', 'sparse', 'zero'], 21);
    out.push(await buildChannelStream({ method, pageSize: 4096, block: 'pc.ram', image, uuid: FUZZ_UUID, channel: 0, perPacket: 6 }));
  }
  return out;
}

export function helloFor(s: Pick<ChannelStream, 'pageSize' | 'method' | 'block' | 'blockSize'>): Hello {
  return {
    type: 'hello',
    version: CONTROL_VERSION,
    uuid: uuidToString(FUZZ_UUID),
    channels: 1,
    pageSize: s.pageSize,
    packetSize: MULTIFD_PACKET_SIZE,
    compression: s.method,
    methodParams: {},
    zeroPageDetection: 'multifd',
    digest: DIGEST_ALGORITHM,
    ramblocks: [{ name: s.block, size: s.blockSize }],
  };
}

/** A receiver on a free loopback port; `ended` settles to 'ok' or the error it failed with. */
export async function startReceiver(
  dir: string,
  signal: AbortSignal,
  inPlace: boolean,
  timeoutMs = RECEIVER_TIMEOUT_MS,
): Promise<{ port: number; ended: Promise<unknown> }> {
  let port = 0;
  let listening!: () => void;
  const listened = new Promise<void>((r) => (listening = r));
  const ended: Promise<unknown> = receive({
    host: '127.0.0.1',
    port: 0,
    logger: silentLogger,
    outputDir: dir,
    inPlace,
    timeoutMs,
    threads: 1,
    signal,
    onListening: (a) => {
      port = a.port;
      listening();
    },
  }).then(
    () => 'ok',
    (e: unknown) => e,
  );
  await Promise.race([listened, ended]);
  return { port, ended };
}

/** One run: a receiver, a control channel, one data channel carrying `bytes`. */
async function migrateBytes(s: ChannelStream, bytes: Buffer, x: ReceiverInput, dir: string): Promise<string> {
  const abort = new AbortController();
  const sockets: net.Socket[] = [];
  const { port, ended } = await startReceiver(dir, abort.signal, x.inPlace);
  let timer: NodeJS.Timeout | undefined;
  try {
    if (port === 0) violation(`receiver did not listen: ${String(await ended)}`);
    const ctlSock = await connect('127.0.0.1', port, 2000, 'control');
    sockets.push(ctlSock);
    ctlSock.on('error', () => {});
    const ctl = new ControlChannel(ctlSock, 'fuzz');
    ctlSock.write(encodePreamble());
    ctlSock.write(encodeFrame(helloFor(s)));
    const ready = await ctl.next().catch((e: unknown) => e);
    if (!(ready && typeof ready === 'object' && (ready as { type?: string }).type === 'ready'))
      violation(`receiver did not accept a valid hello: ${JSON.stringify(ready)}`);
    const data = await connect('127.0.0.1', port, 2000, 'data');
    sockets.push(data);
    data.on('error', () => {});
    for (const piece of split(bytes, x.cuts)) data.write(piece);
    data.end();
    if (x.complete) ctlSock.write(encodeFrame({ type: 'complete', packets: [s.packets.length], digests: { [s.block]: s.digest } }));
    else ctlSock.end();
    const hang = new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), HANG_MS)));
    const end = await Promise.race([ended, hang]);
    if (end === 'hang') {
      abort.abort('fuzz: hang');
      await ended;
      violation(`receiver did not end within ${HANG_MS} ms (its own timeout is ${RECEIVER_TIMEOUT_MS} ms)`);
    }
    const out = path.join(dir, s.block);
    if (end === 'ok') {
      const got = fs.readFileSync(out);
      if (!got.equals(s.image))
        violation(`migration succeeded but the output differs from the image (${got.length} bytes, image ${s.image.length})`);
      return 'ok';
    }
    const e = typed(end, 'receiver');
    if (CHANNEL_CODES.test(e.code) && (e.channel !== 0 || e.message.startsWith('channel ')))
      violation(`${e.code} does not name the channel: ${e.message}`);
    if (e.code.startsWith('ERR_INIT_') && !e.message.includes('multifd channel from'))
      violation(`${e.code} does not name the connection: ${e.message}`);
    if (x.inPlace) {
      const size = fs.statSync(out).size;
      if (size !== s.blockSize)
        violation(`in-place output is ${size} bytes after ${e.code}, the ramblock ${s.blockSize}: a write left the block`);
    } else {
      // Kept for mfd send --resume: the partial output (never past the block) and its journal, after a
      // failure that does not make the pages suspect (a dropped or timed-out channel, not bad input).
      const left = fs.readdirSync(dir).sort();
      const kept = [`.${s.block}.mfd-journal`, `.${s.block}.mfd-partial`];
      if (left.length > 0) {
        if (left.join('/') !== kept.join('/')) violation(`files left behind after ${e.code}: ${left.join(', ')}`);
        if (e.exitCode === ExitCode.PROTOCOL || e.exitCode === ExitCode.VERIFY)
          violation(`partial output kept for a resume after ${e.code}, whose pages are suspect`);
        const size = fs.statSync(path.join(dir, kept[1]!)).size;
        if (size !== s.blockSize)
          violation(`partial output is ${size} bytes after ${e.code}, the ramblock ${s.blockSize}: a write left the block`);
        for (const f of kept) fs.rmSync(path.join(dir, f));
      }
    }
    return e.code;
  } catch (e) {
    if (e instanceof MfdError && e.exitCode !== ExitCode.INTERNAL) violation(`the fuzz client failed: ${e.message}`);
    throw e;
  } finally {
    clearTimeout(timer);
    abort.abort('fuzz: done');
    for (const sock of sockets) sock.destroy();
    await ended;
  }
}

export async function receiverTarget(): Promise<FuzzTarget<ReceiverInput>> {
  const corpus = await receiverCorpus();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-fuzz-recv-'));
  let n = 0;
  return {
    name: 'receiver',
    corpusSize: corpus.length,
    async: true,
    arbitrary: fc.record({
      stream: fc.nat({ max: corpus.length - 1 }),
      mutations: fc.oneof(
        { weight: 1, arbitrary: fc.constant([]) },
        { weight: 10, arbitrary: fc.array(streamMutation, { minLength: 1, maxLength: 3 }) },
      ),
      cuts: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 4 }),
      inPlace: fc.boolean(),
      complete: fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    }),
    async run(x) {
      const s = corpus[x.stream]!;
      const dir = path.join(root, String(n++));
      fs.mkdirSync(dir);
      try {
        return await migrateBytes(s, mutateStream(s, x.mutations), x, dir);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    close() {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/**
 * The hello through a live receiver: whatever it declares (sizes, names,
 * methods, parameters, thousands of blocks), the receiver answers `ready` or
 * `error`, ends typed when the control channel closes, leaves no file, and
 * allocates nothing sized by the declared sizes (array buffers stay small).
 */
export function receiverHelloTarget(): FuzzTarget<Uint8Array> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-fuzz-hello-'));
  let n = 0;
  return {
    name: 'receiver-hello',
    corpusSize: HELLO_CORPUS.length,
    async: true,
    arbitrary: helloBytes,
    async run(body) {
      const dir = path.join(root, String(n++));
      fs.mkdirSync(dir);
      const abort = new AbortController();
      const { port, ended } = await startReceiver(dir, abort.signal, false);
      let sock: net.Socket | null = null;
      let timer: NodeJS.Timeout | undefined;
      try {
        if (port === 0) violation(`receiver did not listen: ${String(await ended)}`);
        const buffers = process.memoryUsage().arrayBuffers;
        sock = await connect('127.0.0.1', port, 2000, 'control');
        sock.on('error', () => {});
        const ctl = new ControlChannel(sock, 'fuzz');
        const len = Buffer.alloc(4);
        len.writeUInt32BE(body.length);
        sock.write(Buffer.concat([encodePreamble(), len, body]));
        const reply = await ctl.next().catch((e: unknown) => e);
        const type = (reply as { type?: unknown } | null)?.type;
        if (type !== 'ready' && type !== 'error') violation(`hello answered with ${String(type)}`);
        const grew = process.memoryUsage().arrayBuffers - buffers;
        if (grew > 64 << 20) violation(`the hello made the receiver allocate ${grew} bytes of buffers`);
        sock.end();
        const hang = new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), HANG_MS)));
        const end = await Promise.race([ended, hang]);
        if (end === 'hang') violation(`receiver did not end within ${HANG_MS} ms of the control channel closing`);
        if (end === 'ok') violation('a migration without channels succeeded');
        const e = typed(end, 'receiver hello');
        if (type === 'error' && (reply as { code?: unknown }).code !== e.code)
          violation(`the sender was told ${String((reply as { code?: unknown }).code)}, the receiver ended with ${e.code}`);
        const left = fs.readdirSync(dir);
        if (left.length > 0) violation(`files left after ${e.code}: ${left.slice(0, 3).join(', ')}`);
        return type === 'ready' ? `ready+${e.code}` : e.code;
      } finally {
        clearTimeout(timer);
        abort.abort('fuzz: done');
        sock?.destroy();
        await ended;
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
    close() {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}
