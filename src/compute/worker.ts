/**
 * A compute worker: holds the method state of the channels pinned to it and
 * runs their CPU-heavy work (scan, compression, decompression) in order, one
 * message at a time, so a channel's stream is only ever touched by this thread.
 */
import { parentPort } from 'node:worker_threads';
import { getMethod, type MethodReceiver, type MethodSender } from '../methods/index.js';
import { getDetector, type ZeroPageDetector } from '../zero-page/index.js';
import { ImageSource } from '../sender/image-source.js';
import { MfdError } from '../errors.js';
import { pageCount, MULTIFD_PACKET_SIZE } from '../wire/constants.js';
import { pageRuns } from '../sender/page-runs.js';
import type { FromWorker, PacketReply, ToWorker } from './messages.js';

interface SendState {
  method: MethodSender;
  detector: ZeroPageDetector;
  pageSize: number;
  slab: Uint8Array;
}

const senders = new Map<number, SendState>();
const receivers = new Map<number, MethodReceiver>();
const images = new Map<number, ImageSource>();

async function handle(m: ToWorker): Promise<{ value: unknown; transfer: ArrayBuffer[] }> {
  switch (m.op) {
    case 'send-setup': {
      const method = getMethod(m.method);
      senders.set(m.channel, {
        method: method.sendSetup({ channel: m.channel, pageSize: m.pageSize, params: m.params }),
        detector: getDetector(m.detector),
        pageSize: m.pageSize,
        slab: new Uint8Array(MULTIFD_PACKET_SIZE),
      });
      return { value: null, transfer: [] };
    }
    case 'recv-setup':
      receivers.set(m.channel, getMethod(m.method).recvSetup({ channel: m.channel, pageSize: m.pageSize, params: m.params }));
      return { value: null, transfer: [] };
    case 'packet': {
      const s = senders.get(m.channel)!;
      let img = images.get(m.fd);
      if (!img) {
        img = ImageSource.fromFd(m.fd, m.path, m.size);
        images.set(m.fd, img);
      }
      const { pages, release } = await img.load(m.offset, m.pages, s.pageSize, s.slab);
      try {
        const n = pageCount(s.pageSize);
        const zero = new Uint8Array(n);
        const crc = new Uint32Array(n);
        const zeros = await s.detector.analyse(pages, s.pageSize, m.pages, zero, crc);
        const runs = pageRuns(pages, zero, m.pages, s.pageSize);
        const chunks = zeros < m.pages ? await s.method.prepare(runs, m.pages - zeros) : [];
        // Own each chunk's buffer so it can be transferred, not copied.
        const payload = chunks.map((c) => (c.byteOffset === 0 && c.byteLength === c.buffer.byteLength ? c : c.slice()));
        const reply: PacketReply = { zeros, zero, crc, payload };
        return { value: reply, transfer: payload.map((p) => p.buffer as ArrayBuffer) };
      } finally {
        release();
      }
    }
    case 'decode': {
      const r = receivers.get(m.channel)!;
      const pages = await r.recv([new Uint8Array(m.payload)], m.normal, m.packetNum);
      const owned = pages.map((c) => (c.byteOffset === 0 && c.byteLength === c.buffer.byteLength ? c : c.slice()));
      return { value: { pages: owned }, transfer: owned.map((p) => p.buffer as ArrayBuffer) };
    }
    case 'cleanup':
      senders.get(m.channel)?.method.cleanup();
      receivers.get(m.channel)?.cleanup();
      senders.delete(m.channel);
      receivers.delete(m.channel);
      return { value: null, transfer: [] };
  }
}

let chain: Promise<void> = Promise.resolve();
parentPort!.on('message', ({ id, msg }: { id: number; msg: ToWorker }) => {
  // In arrival order: a channel's packets reach its stream in the order they were sent.
  chain = chain.then(async () => {
    try {
      const { value, transfer } = await handle(msg);
      parentPort!.postMessage({ id, ok: true, value } satisfies FromWorker, transfer);
    } catch (e) {
      const err = e as MfdError & { code?: string };
      parentPort!.postMessage({
        id,
        ok: false,
        error: {
          name: err.name ?? 'Error',
          code: err.code ?? 'ERR_INTERNAL',
          message: err instanceof MfdError ? err.message.replace(/^channel \d+(, packet \d+)?: /, '') : String((e as Error).stack ?? e),
          ...(err.exitCode !== undefined ? { exitCode: err.exitCode } : {}),
          ...(err.channel !== undefined ? { channel: err.channel } : {}),
          ...(err.packetNum !== undefined ? { packetNum: String(err.packetNum) } : {}),
        },
      } satisfies FromWorker);
    }
  });
});
