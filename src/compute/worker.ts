/**
 * A compute worker: holds the method state of the channels pinned to it and
 * runs their CPU-heavy work (scan, compression, decompression) in order, one
 * message at a time, so a channel's stream is only ever touched by this thread.
 */
import { parentPort } from 'node:worker_threads';
import { getMethod, type MethodReceiver, type MethodSender } from '../methods/index.js';
import { getDetector, type ZeroPageScanner } from '../zero-page/index.js';
import { PathTally } from '../offload/paths.js';
import { ImageSource } from '../image/image-source.js';
import { ExitCode, MfdError } from '../errors.js';
import { MULTIFD_PACKET_SIZE, pageCount } from '../wire/constants.js';
import { pageRuns } from '../image/page-runs.js';
import {
  decodeSlotViews,
  sharedSlabViews,
  type DecodeReply,
  type DecodeSlot,
  type DecodeWriteReply,
  type FromWorker,
  type PacketReply,
  type ToWorker,
} from './messages.js';
import { writePacketHere } from '../native/packet-io.js';
import { sendPagesPacket } from './relay-send.js';
import { serializeError } from './error-hop.js';

interface SendState {
  method: MethodSender;
  scanner: ZeroPageScanner;
  /** The detector's skipsHoles: pages in holes are left unread. */
  skipsHoles: boolean;
  methodTally: PathTally;
  zeroTally: PathTally;
  pageSize: number;
}

/**
 * The worker's scratch for a packet's pages (read, never mapped: see
 * ImageSource), allocated on first use: one for all its channels, since it
 * handles one packet at a time.
 */
let scratch: Uint8Array | null = null;
const pageScratch = (): Uint8Array => (scratch ??= new Uint8Array(MULTIFD_PACKET_SIZE));

/**
 * The worker's room for a packet's decoded pages on their way to the output (decode-write): one
 * for all its channels, since it handles one packet at a time; grown to the largest packet seen.
 */
let decoded: Uint8Array | null = null;
function decodeScratch(bytes: number): Uint8Array {
  if (!decoded || decoded.length < bytes) decoded = new Uint8Array(Math.max(bytes, MULTIFD_PACKET_SIZE));
  return decoded.subarray(0, bytes);
}

const senders = new Map<number, SendState>();
const receivers = new Map<number, { method: MethodReceiver; tally: PathTally; pageSize: number; slots: DecodeSlot[] }>();
const images = new Map<number, ImageSource>();

async function handle(m: ToWorker): Promise<unknown> {
  switch (m.op) {
    case 'send-setup': {
      const method = getMethod(m.method);
      const methodTally = new PathTally(`${method.name} compression`, m.requireHardware);
      const detector = getDetector(m.detector);
      const zeroTally = new PathTally(`${detector.name} zero-page detection`, m.requireHardware);
      senders.set(m.channel, {
        method: method.sendSetup({ channel: m.channel, channels: m.channels, pageSize: m.pageSize, params: m.params, tally: methodTally }),
        scanner: detector.open({
          channel: m.channel,
          accelPaths: m.accelPaths,
          requireHardware: m.requireHardware,
          tally: zeroTally,
          onWorker: true,
        }),
        skipsHoles: detector.skipsHoles === true,
        methodTally,
        zeroTally,
        pageSize: m.pageSize,
      });
      return null;
    }
    case 'recv-setup': {
      const method = getMethod(m.method);
      const tally = new PathTally(`${method.name} decompression`, m.requireHardware);
      receivers.set(m.channel, {
        method: method.recvSetup({ channel: m.channel, pageSize: m.pageSize, params: m.params, tally }),
        tally,
        pageSize: m.pageSize,
        slots: m.slots ? decodeSlotViews(m.slots, pageCount(m.pageSize)).slots : [],
      });
      return null;
    }
    case 'packet': {
      const s = senders.get(m.channel)!;
      let img = images.get(m.fd);
      if (!img) {
        img = ImageSource.forWorker(m.fd, m.path, m.size);
        images.set(m.fd, img);
      }
      const views = sharedSlabViews(m.slab, m.pagesPerPacket);
      const { zero, crc, out } = views;
      const list = m.listed ? views.list.subarray(0, m.pages) : undefined;
      const { pages, holes, release } = await img.load(m.offset, m.pages, s.pageSize, pageScratch, list, s.skipsHoles);
      try {
        const zeros = await s.scanner.analyse(pages, s.pageSize, m.pages, zero, crc, holes);
        // The pages are the worker's own copy (read, not mapped), so a method may read them in user space.
        const payloadBytes =
          zeros < m.pages ? place(out, await s.method.prepare(pageRuns(pages, zero, m.pages, s.pageSize), m.pages - zeros, out)) : 0;
        const reply: PacketReply = {
          zeros,
          payloadBytes,
          paths: { compression: s.methodTally.take(), zeroPage: s.zeroTally.take() },
        };
        if (m.send) reply.sent = sendPagesPacket(m.send, s.pageSize, m.offset, m.pages, list, zero, zeros, out.subarray(0, payloadBytes));
        return reply;
      } finally {
        release();
      }
    }
    case 'decode': {
      const r = receivers.get(m.channel)!;
      place(m.out, await r.method.recv([m.payload], m.normal, m.packetNum, m.out));
      const reply: DecodeReply = { paths: r.tally.take() };
      return reply;
    }
    case 'decode-write': {
      const r = receivers.get(m.channel)!;
      const pages = await r.method.recv([m.payload], m.normal, m.packetNum, decodeScratch(m.normal * r.pageSize));
      const slot = r.slots[m.slot]!;
      const { result, badPage } = writePacketHere({
        fd: m.fd,
        pages,
        pageSize: r.pageSize,
        offsets: slot.offsets,
        normal: m.normal,
        zero: m.zero,
        blockSize: m.blockSize,
        writeZeros: m.writeZeros,
        crc: slot.crc,
      });
      const reply: DecodeWriteReply = { paths: r.tally.take(), result, badPage };
      return reply;
    }
    case 'cleanup':
      senders.get(m.channel)?.method.cleanup();
      receivers.get(m.channel)?.method.cleanup();
      senders.delete(m.channel);
      receivers.delete(m.channel);
      return null;
  }
}

/**
 * A method's result as the first bytes of `out` (a payload into the slab's
 * room, decoded pages into the decoder's buffer): where the method wrote into
 * `out` (the usual case) nothing moves; chunks of its own buffers are copied
 * in. Returns the length.
 */
function place(out: Uint8Array, chunks: Uint8Array[]): number {
  const c0 = chunks[0];
  if (chunks.length === 1 && c0!.buffer === out.buffer && c0!.byteOffset === out.byteOffset) return c0!.length;
  let at = 0;
  for (const c of chunks) {
    if (at + c.length > out.length)
      throw new MfdError('ERR_INTERNAL', `a result of more than ${out.length} bytes (the method's bound)`, ExitCode.INTERNAL);
    out.set(c, at);
    at += c.length;
  }
  return at;
}

let chain: Promise<void> = Promise.resolve();
parentPort!.on('message', ({ id, msg }: { id: number; msg: ToWorker }) => {
  // In arrival order: a channel's packets reach its stream in the order they were sent.
  chain = chain.then(async () => {
    try {
      const value = await handle(msg);
      parentPort!.postMessage({ id, ok: true, value } satisfies FromWorker);
    } catch (e) {
      parentPort!.postMessage({ id, ok: false, error: serializeError(e) } satisfies FromWorker);
    }
  });
});
