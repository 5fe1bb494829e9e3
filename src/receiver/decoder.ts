/**
 * A channel's decoder on the receiving side: the method inline (one decode at
 * a time, in arrival order), or the method's state on the channel's compute
 * worker (channel i on worker i % size), which keeps the order itself. Used
 * by the network receiver and by a migration file's restore. The worker's
 * decoder also writes (decodeWrite): it decodes, digests and writes a packet
 * in one step, and only the CRCs come back (in a slot of shared memory);
 * decode() brings the pages back, for a placement of the caller's own (recv
 * --qemu, mfd inspect). An inline receiver whose stream lives in the addon
 * also offers it to the channel's own thread (Decoder.thread), which then
 * decodes, digests and writes a packet in one operation, with no worker.
 */
import type { CompressionMethod, MethodParams, MethodReceiver } from '../methods/index.js';
import type { ComputePool } from '../compute/pool.js';
import type { PathTally } from '../offload/paths.js';
import { decodeSlotViews, type DecodeReply, type DecodeWriteReply } from '../compute/messages.js';
import { BoundedPool } from '../io/bounded-pool.js';
import { pageCount } from '../wire/constants.js';
import type { Decoder } from './data-channel.js';

export interface DecoderSetup {
  channel: number;
  method: CompressionMethod;
  pageSize: number;
  params: MethodParams;
  /** Pages per decode path, all channels. */
  tally: PathTally;
  /** The compute pool for offloaded methods, else null. */
  compute: ComputePool | null;
  /** Inline receivers are added here, for cleanup(). */
  receivers: MethodReceiver[];
  /** A failed setup on the worker. */
  fail(e: unknown): void;
}

export function createDecoder({ channel, method, pageSize, params, tally, compute, receivers, fail }: DecoderSetup): Decoder {
  if (!compute) {
    const receiver = method.recvSetup({ channel, pageSize, params, tally });
    receivers.push(receiver);
    // One decode at a time, in arrival order (a method's recv may be asynchronous).
    let chain: Promise<unknown> = Promise.resolve();
    return {
      decode(payload, normal, packetNum) {
        const next = chain.then(() => receiver.recv(payload, normal, packetNum));
        chain = next.catch(() => {});
        return next;
      },
      ...(receiver.thread ? { thread: receiver.thread } : {}),
    };
  }
  const perPacket = pageCount(pageSize);
  // decodeWrite's slots: a packet's offsets go to the worker, its CRCs come back, in memory both threads see.
  const room = decodeSlotViews(null, perPacket, DECODE_SLOTS);
  let made = 0;
  const slots = new BoundedPool(DECODE_SLOTS, () => made++);
  // Messages reach the worker in order (setup first), and it handles them in order.
  compute
    .call(channel, {
      op: 'recv-setup',
      channel,
      method: method.name,
      pageSize,
      params,
      requireHardware: tally.requireHardware,
      slots: room.shared,
    })
    .catch(fail);
  const inputs = decodeBuffers(compute, method.maxPayload(perPacket, pageSize));
  const outputs = decodeBuffers(compute, perPacket * pageSize);
  // Buffers are taken in arrival order, so the packets reach the worker in that order.
  let turn: Promise<unknown> = Promise.resolve();
  return {
    async decode(payload, normal, packetNum) {
      // A native reader's payload is one view of shared memory (its read pool): the worker reads it there.
      const shared = payload.length === 1 && payload[0]!.buffer instanceof SharedArrayBuffer ? payload[0]! : null;
      const taken = turn.then(async () => ({ input: shared ? null : await inputs.acquire(), out: await outputs.acquire() }));
      turn = taken;
      const { input, out } = await taken;
      let r: DecodeReply;
      try {
        r = await compute.call<DecodeReply>(channel, {
          op: 'decode',
          channel,
          payload: shared ?? gather(payload, new Uint8Array(input!)),
          out: new Uint8Array(out),
          normal,
          packetNum,
        });
      } catch (e) {
        outputs.release(out);
        throw e;
      } finally {
        if (input) inputs.release(input);
      }
      tally.merge(r.paths);
      return [new Uint8Array(out, 0, normal * pageSize)];
    },
    done(pages) {
      // decode() returned one view of the buffer it took.
      outputs.release(pages[0]!.buffer as SharedArrayBuffer);
    },
    async decodeWrite(payload, normal, packetNum, w, digest) {
      // As decode(), the payload shared or gathered, in arrival order; the pages stay on the worker.
      const shared = payload.length === 1 && payload[0]!.buffer instanceof SharedArrayBuffer ? payload[0]! : null;
      const taken = turn.then(async () => ({ input: shared ? null : await inputs.acquire(), slot: await slots.acquire() }));
      turn = taken;
      const { input, slot } = await taken;
      const { offsets, crc } = room.slots[slot]!;
      try {
        for (let i = 0; i < normal + w.zero; i++) offsets[i] = w.offsets[i]!;
        const r = await compute.call<DecodeWriteReply>(channel, {
          op: 'decode-write',
          channel,
          payload: shared ?? gather(payload, new Uint8Array(input!)),
          normal,
          packetNum,
          fd: w.fd,
          slot,
          zero: w.zero,
          blockSize: w.blockSize,
          writeZeros: w.writeZeros,
        });
        tally.merge(r.paths);
        if (r.result >= 0) digest(crc);
        return { result: r.result, badPage: r.badPage };
      } finally {
        slots.release(slot);
        if (input) inputs.release(input);
      }
    },
  };
}

/**
 * A stream source's payload (views of socket chunks, which the worker cannot
 * see) copied once into `room`, shared with the worker; into a buffer of its
 * own when a tolerant check let more through than this method's bound.
 */
function gather(payload: Uint8Array[], room: Uint8Array): Uint8Array {
  const size = payload.reduce((a, p) => a + p.length, 0);
  const into = size <= room.length ? room : new Uint8Array(new SharedArrayBuffer(size));
  let at = 0;
  for (const p of payload) {
    into.set(p, at);
    at += p.length;
  }
  return into.subarray(0, at);
}

/**
 * Buffers in flight between the receiving thread and the compute workers, per
 * pool and size: payloads of stream sources on their way in (a native
 * reader's are in shared memory already), pages on their way out (decode():
 * until written; decodeWrite() keeps them on the worker). On SharedArrayBuffers, so nothing is transferred, allocated or
 * collected per packet, and bounded for all channels together, so memory
 * does not grow with the channel count.
 */
const DECODE_BUFFERS = 32;
/**
 * A channel's packets in flight through decodeWrite (each holds a slot of offsets and CRCs, 12 bytes a
 * page): the data channel's MAX_IN_FLIGHT and more; another waits for the first to finish.
 */
const DECODE_SLOTS = 8;
const decodeBufferSets = new WeakMap<ComputePool, Map<number, BoundedPool<SharedArrayBuffer>>>();

function decodeBuffers(compute: ComputePool, size: number): BoundedPool<SharedArrayBuffer> {
  let sets = decodeBufferSets.get(compute);
  if (!sets) decodeBufferSets.set(compute, (sets = new Map()));
  let set = sets.get(size);
  if (!set) sets.set(size, (set = new BoundedPool(DECODE_BUFFERS, () => new SharedArrayBuffer(size))));
  return set;
}
