/** Messages between the main thread and compute workers (src/compute/worker.ts). */
import type { MethodParams } from '../methods/method.js';
import type { PathCounts } from '../offload/paths.js';
import type { NativeIoFields } from '../errors.js';

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
  | { op: 'recv-setup'; channel: number; method: string; pageSize: number; params: MethodParams; requireHardware: boolean }
  /**
   * Load, analyse and compress one packet of an image (the worker maps the file through the shared
   * fd), into `slab` (sharedSlabViews with `pagesPerPacket`): its page flags, CRCs and payload.
   */
  | {
      op: 'packet';
      channel: number;
      fd: number;
      path: string;
      size: number;
      offset: number;
      pages: number;
      list?: Uint32Array;
      slab: SharedArrayBuffer;
      pagesPerPacket: number;
      /** Also encode the packet's header and send the packet on the channel's native socket (PacketSend). */
      send?: PacketSend;
    }
  /** Decode one packet's payload into its normal pages: both views of buffers shared with the caller (decoder.ts). */
  | { op: 'decode'; channel: number; payload: Uint8Array; out: Uint8Array; normal: number; packetNum: bigint }
  /**
   * Decode one packet's payload (a view of shared memory) into the worker's own buffer, then digest
   * and write its pages to `fd` there (writePacket's fields; offsets: the normal pages', then the
   * zero pages' to write): the decoded pages never come back.
   */
  | {
      op: 'decode-write';
      channel: number;
      payload: Uint8Array;
      normal: number;
      packetNum: bigint;
      fd: number;
      offsets: Float64Array;
      zero: number;
      blockSize: number;
      writeZeros: boolean;
    }
  | { op: 'cleanup'; channel: number };

/**
 * A 'packet' the worker also sends: it encodes the header into `header` (shared with the main thread,
 * which recycles it with the slab) and hands header and payload to native.socketChannelSend on
 * channel `id` (SocketChannel.id()), with `token` for a completion that comes to the main thread.
 */
export interface PacketSend {
  id: number;
  token: number;
  timeoutMs: number;
  header: Uint8Array;
  flags: number;
  packetNum: bigint;
  ramblock: Uint8Array;
  /** False: zero_pages 0 in the header (see PipelineOptions.zeroPagesInPackets). */
  zeroPagesInPackets: boolean;
}

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
 * A decoded and written packet: the CRC-32C of each normal page, and the write's result (0, or the
 * negative code with the page a padding failure is about: writeFailure()). A failed decode rejects.
 */
export interface DecodeWriteReply {
  paths: PathCounts;
  crc: Uint32Array;
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
 * per page a CRC-32C (`crc`) and a zero flag (`zero`), then `out`, the room
 * for the packet's payload. `shared` null: a new one (`outSize` bytes of
 * room); else the views of one made so, as the worker sees it.
 */
export function sharedSlabViews(
  shared: SharedArrayBuffer | null,
  pagesPerPacket: number,
  outSize = 0,
): { shared: SharedArrayBuffer; crc: Uint32Array; zero: Uint8Array; out: Uint8Array } {
  const head = Math.ceil((pagesPerPacket * 5) / 64) * 64; // the payload on a cache line
  const sab = shared ?? new SharedArrayBuffer(head + outSize);
  return {
    shared: sab,
    crc: new Uint32Array(sab, 0, pagesPerPacket),
    zero: new Uint8Array(sab, pagesPerPacket * 4, pagesPerPacket),
    out: new Uint8Array(sab, head),
  };
}
