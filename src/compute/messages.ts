/** Messages between the main thread and compute workers (src/compute/worker.ts). */
import type { MethodParams } from '../methods/method.js';
import type { PathCounts } from '../offload/paths.js';
import type { NativeIoFields } from '../errors.js';
import type { PacketSend } from './relay-send.js';

export type ToWorker =
  | {
      op: 'send-setup';
      channel: number;
      channels: number;
      method: string;
      pageSize: number;
      params: MethodParams;
      detector: string;
      accelPaths: string[];
      requireHardware: boolean;
    }
  | {
      op: 'recv-setup';
      channel: number;
      method: string;
      pageSize: number;
      params: MethodParams;
      requireHardware: boolean;
      /** The channel's decode-write slots (decodeSlotViews), shared with the caller; absent, no decode-write. */
      slots?: SharedArrayBuffer;
    }
  /**
   * Load, analyse and compress one packet of an image (the worker maps the file through the shared
   * fd), into `slab` (sharedSlabViews with `pagesPerPacket`): its page flags, CRCs and payload.
   * `listed`: the pages are scattered, their indices the first `pages` of the slab's `list`.
   */
  | {
      op: 'packet';
      channel: number;
      fd: number;
      path: string;
      size: number;
      offset: number;
      pages: number;
      listed?: boolean;
      slab: SharedArrayBuffer;
      pagesPerPacket: number;
      /** Also encode the packet's header and send the packet on the channel's native socket (PacketSend). */
      send?: PacketSend;
    }
  /** Decode one packet's payload into its normal pages: both views of buffers shared with the caller (decoder.ts). */
  | { op: 'decode'; channel: number; payload: Uint8Array; out: Uint8Array; normal: number; packetNum: bigint }
  /**
   * Decode one packet's payload (a view of shared memory) into the worker's own buffer, then digest
   * and write its pages to `fd` there (writePacket's fields): the decoded pages never come back. The
   * page offsets (the normal pages', then the zero pages' to write) are in decode-write slot `slot`
   * of the channel (decodeSlotViews), and the normal pages' CRC-32C go there.
   */
  | {
      op: 'decode-write';
      channel: number;
      payload: Uint8Array;
      normal: number;
      packetNum: bigint;
      fd: number;
      slot: number;
      zero: number;
      blockSize: number;
      writeZeros: boolean;
    }
  | { op: 'cleanup'; channel: number };

/** A 'packet' the worker also sends, and how (src/compute/relay-send.ts). */
export type { PacketSend };

/** What came back of a packet; its page flags, CRCs and payload (the first payloadBytes of `out`) are in the slab. */
export interface PacketReply {
  zeros: number;
  payloadBytes: number;
  /**
   * With `send`: what socketChannelSend did: code 0, sent; 1, the rest (`left` bytes) queued on the
   * channel's thread; < 0, failed (-errno) with `left` bytes not sent.
   */
  sent?: { code: number; left: number };
  /** Path counts of this packet (the worker's tallies since the last reply). */
  paths: { compression: PathCounts; zeroPage: PathCounts };
}

/** A decoded packet: its normal pages are the first normal x pageSize bytes of the request's `out`. */
export interface DecodeReply {
  paths: PathCounts;
}

/**
 * A decoded and written packet: the write's result (0, or the negative code with the page a padding
 * failure is about: writeFailure()); the CRC-32C of each normal page are in the request's slot. A
 * failed decode rejects.
 */
export interface DecodeWriteReply {
  paths: PathCounts;
  result: number;
  badPage: number;
}

export interface SerializedError {
  name: string;
  code: string;
  message: string;
  exitCode?: number;
  channel?: number;
  packetNum?: string;
  /** A NativeIoError's fields (src/errors.ts). */
  native?: NativeIoFields;
}

export type FromWorker = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: SerializedError };

/**
 * The views of a slab shared between the main thread and a compute worker:
 * per page a CRC-32C (`crc`), a page index (`list`, a gathered job's) and a
 * zero flag (`zero`), then `out`, the room for the packet's payload. `shared`
 * null: a new one (`outSize` bytes of room); else the views of one made so,
 * as the worker sees it.
 */
export function sharedSlabViews(
  shared: SharedArrayBuffer | null,
  pagesPerPacket: number,
  outSize = 0,
): { shared: SharedArrayBuffer; crc: Uint32Array; list: Uint32Array; zero: Uint8Array; out: Uint8Array } {
  const head = Math.ceil((pagesPerPacket * 9) / 64) * 64; // the payload on a cache line
  const sab = shared ?? new SharedArrayBuffer(head + outSize);
  return {
    shared: sab,
    crc: new Uint32Array(sab, 0, pagesPerPacket),
    list: new Uint32Array(sab, pagesPerPacket * 4, pagesPerPacket),
    zero: new Uint8Array(sab, pagesPerPacket * 8, pagesPerPacket),
    out: new Uint8Array(sab, head),
  };
}

/** A decode-write slot: one packet's page offsets, written by the caller, and its normal pages' CRC-32C, by the worker. */
export interface DecodeSlot {
  offsets: Float64Array;
  crc: Uint32Array;
}

/**
 * A channel's decode-write slots, one per packet in flight to its worker, on one SharedArrayBuffer
 * made at setup: nothing is allocated, cloned or copied back per packet. `shared` null: a new one of
 * `count` slots; else the views of one made so, as the worker sees it.
 */
export function decodeSlotViews(
  shared: SharedArrayBuffer | null,
  pagesPerPacket: number,
  count = 0,
): { shared: SharedArrayBuffer; slots: DecodeSlot[] } {
  const crcAt = pagesPerPacket * 8;
  const size = crcAt + Math.ceil((pagesPerPacket * 4) / 8) * 8; // each slot's offsets on an 8-byte boundary
  const sab = shared ?? new SharedArrayBuffer(size * count);
  const slots: DecodeSlot[] = [];
  for (let at = 0; at + size <= sab.byteLength; at += size)
    slots.push({ offsets: new Float64Array(sab, at, pagesPerPacket), crc: new Uint32Array(sab, at + crcAt, pagesPerPacket) });
  return { shared: sab, slots };
}
