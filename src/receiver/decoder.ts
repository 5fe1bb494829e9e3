/**
 * A channel's decoder on the receiving side: the method inline (one decode at
 * a time, in arrival order), or the method's state on the channel's compute
 * worker (channel i on worker i % size), which keeps the order itself. Used
 * by the network receiver and by a migration file's restore.
 */
import type { CompressionMethod, MethodParams, MethodReceiver } from '../methods/index.js';
import type { ComputePool } from '../compute/pool.js';
import type { PathTally } from '../offload/paths.js';
import type { DecodeReply } from '../compute/messages.js';
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
    };
  }
  // Messages reach the worker in order (setup first), and it handles them in order.
  compute
    .call(channel, { op: 'recv-setup', channel, method: method.name, pageSize, params, requireHardware: tally.requireHardware })
    .catch(fail);
  return {
    async decode(payload, normal, packetNum) {
      // Socket chunks cannot be transferred (they share buffers): copy the compressed bytes once.
      const size = payload.reduce((a, p) => a + p.length, 0);
      const buf = Buffer.allocUnsafeSlow(size); // its own ArrayBuffer, so it can be transferred
      let at = 0;
      for (const p of payload) {
        buf.set(p, at);
        at += p.length;
      }
      const r = await compute.call<DecodeReply>(channel, { op: 'decode', channel, payload: buf.buffer, normal, packetNum }, [buf.buffer]);
      tally.merge(r.paths);
      return r.pages;
    },
  };
}
