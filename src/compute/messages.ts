/** Messages between the main thread and compute workers (src/compute/worker.ts). */
import type { MethodParams } from '../methods/method.js';
import type { PathCounts } from '../offload/paths.js';

export type ToWorker =
  | {
      op: 'send-setup';
      channel: number;
      method: string;
      pageSize: number;
      params: MethodParams;
      detector: string;
      accelPaths: string[];
      requireHardware: boolean;
    }
  | { op: 'recv-setup'; channel: number; method: string; pageSize: number; params: MethodParams; requireHardware: boolean }
  /** Load, analyse and compress one packet of an image (the worker maps the file through the shared fd). */
  | { op: 'packet'; channel: number; fd: number; path: string; size: number; offset: number; pages: number; list?: Uint32Array }
  /** Decode one packet's payload (transferred) into its normal pages. */
  | { op: 'decode'; channel: number; payload: ArrayBuffer; normal: number; packetNum: bigint }
  | { op: 'cleanup'; channel: number };

export interface PacketReply {
  zeros: number;
  zero: Uint8Array;
  crc: Uint32Array;
  payload: Uint8Array[];
  /** Path counts of this packet (the worker's tallies since the last reply). */
  paths: { compression: PathCounts; zeroPage: PathCounts };
}

export interface DecodeReply {
  pages: Uint8Array[];
  paths: PathCounts;
}

export interface SerializedError {
  name: string;
  code: string;
  message: string;
  exitCode?: number;
  channel?: number;
  packetNum?: string;
}

export type FromWorker = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: SerializedError };
