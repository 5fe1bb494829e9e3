/**
 * The receiver of a method whose stream lives in the addon (zlib's ZlibStream, zstd's ZstdStream):
 * one native call per packet decodes the payload, as the socket chunks it arrived in, straight
 * into the caller's pages; anything but exactly normal_pages x page_size bytes is refused.
 */
import { ProtocolError } from '../errors.js';
import type { PathTally } from '../offload/paths.js';
import { decodeError } from './decode-error.js';
import type { MethodReceiver } from './method.js';

/** A native stream's decoder: the bytes written into `out` (it throws on a corrupt payload or one that would overflow `out`). */
export interface NativeDecoder {
  decode(payload: Uint8Array[], out: Uint8Array): number;
  close(): void;
}

export function nativeStreamReceiver(
  method: string,
  z: NativeDecoder,
  { channel, pageSize, tally }: { channel: number; pageSize: number; tally: PathTally },
): MethodReceiver {
  return {
    recv(payload, normalPages, packetNum, into) {
      const want = normalPages * pageSize;
      const out = into ? into.subarray(0, want) : Buffer.allocUnsafeSlow(want); // every byte is written or the packet is refused
      let got: number;
      try {
        got = z.decode(payload, out);
      } catch (e) {
        throw decodeError(method, e, channel, packetNum);
      }
      if (got !== want)
        throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${got}, size expected ${want}`, { channel, packetNum });
      tally.add('software', normalPages);
      return [out];
    },
    cleanup: () => z.close(),
  };
}
