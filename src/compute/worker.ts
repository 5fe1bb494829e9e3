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
import { MfdError } from '../errors.js';
import { pageCount, MULTIFD_PACKET_SIZE } from '../wire/constants.js';
import { pageRuns } from '../image/page-runs.js';
import { copyPages } from '../native/packet-io.js';
import type { FromWorker, PacketReply, ToWorker } from './messages.js';

interface SendState {
  method: MethodSender;
  scanner: ZeroPageScanner;
  methodTally: PathTally;
  zeroTally: PathTally;
  pageSize: number;
  /** Scratch for packets read rather than mapped (allocated on first use). */
  slab: Uint8Array | null;
}

const senders = new Map<number, SendState>();
const receivers = new Map<number, { method: MethodReceiver; tally: PathTally }>();
const images = new Map<number, ImageSource>();

async function handle(m: ToWorker): Promise<{ value: unknown; transfer: ArrayBuffer[] }> {
  switch (m.op) {
    case 'send-setup': {
      const method = getMethod(m.method);
      const methodTally = new PathTally(`${method.name} compression`, m.requireHardware);
      const detector = getDetector(m.detector);
      const zeroTally = new PathTally(`${detector.name} zero-page detection`, m.requireHardware);
      senders.set(m.channel, {
        method: method.sendSetup({ channel: m.channel, pageSize: m.pageSize, params: m.params, tally: methodTally }),
        scanner: detector.open({
          channel: m.channel,
          accelPaths: m.accelPaths,
          requireHardware: m.requireHardware,
          tally: zeroTally,
          onWorker: true,
        }),
        methodTally,
        zeroTally,
        pageSize: m.pageSize,
        slab: null,
      });
      return { value: null, transfer: [] };
    }
    case 'recv-setup': {
      const method = getMethod(m.method);
      const tally = new PathTally(`${method.name} decompression`, m.requireHardware);
      receivers.set(m.channel, { method: method.recvSetup({ channel: m.channel, pageSize: m.pageSize, params: m.params, tally }), tally });
      return { value: null, transfer: [] };
    }
    case 'packet': {
      const s = senders.get(m.channel)!;
      let img = images.get(m.fd);
      if (!img) {
        img = ImageSource.fromFd(m.fd, m.path, m.size);
        images.set(m.fd, img);
      }
      const { pages, holes, release } = await img.load(
        m.offset,
        m.pages,
        s.pageSize,
        () => (s.slab ??= new Uint8Array(MULTIFD_PACKET_SIZE)),
        m.list,
      );
      try {
        const n = pageCount(s.pageSize);
        const zero = new Uint8Array(n);
        const crc = new Uint32Array(n);
        const zeros = await s.scanner.analyse(pages, s.pageSize, m.pages, zero, crc, holes);
        // The method reads the pages in user space, where a mapping of a file truncated meanwhile is
        // SIGBUS, fatal to the process: it gets a copy made under the scan's guard (cache-warm).
        let data = pages;
        if (zeros < m.pages && pages.buffer !== s.slab?.buffer) {
          data = s.slab ??= new Uint8Array(MULTIFD_PACKET_SIZE);
          copyPages(data, pages, s.pageSize, m.pages, zero);
        }
        const runs = pageRuns(data, zero, m.pages, s.pageSize);
        const payload = zeros < m.pages ? await s.method.prepare(runs, m.pages - zeros) : [];
        const reply: PacketReply = {
          zeros,
          zero,
          crc,
          payload,
          paths: { compression: s.methodTally.take(), zeroPage: s.zeroTally.take() },
        };
        return { value: reply, transfer: transferable(payload) };
      } finally {
        release();
      }
    }
    case 'decode': {
      const r = receivers.get(m.channel)!;
      const pages = await r.method.recv([new Uint8Array(m.payload)], m.normal, m.packetNum);
      return { value: { pages, paths: r.tally.take() }, transfer: transferable(pages) };
    }
    case 'cleanup':
      senders.get(m.channel)?.method.cleanup();
      receivers.get(m.channel)?.method.cleanup();
      senders.delete(m.channel);
      receivers.delete(m.channel);
      return { value: null, transfer: [] };
  }
}

/**
 * The buffers under these views, each once, to transfer (a transferred view
 * keeps its offset and length). Offloaded methods hand over the buffers they
 * return (method.ts); only a view into Node's shared pool of small Buffers is
 * copied, since that pool serves other Buffers too.
 */
function transferable(views: Uint8Array[]): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (let i = 0; i < views.length; i++) {
    const v = views[i]!;
    if (Buffer.isBuffer(v) && v.buffer.byteLength === Buffer.poolSize && v.length < Buffer.poolSize)
      views[i] = Uint8Array.prototype.slice.call(v);
    out.add(views[i]!.buffer as ArrayBuffer);
  }
  return [...out];
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
