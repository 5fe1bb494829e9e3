/**
 * The receiver of a method whose stream lives in the addon (zlib's ZlibStream, zstd's ZstdStream):
 * one native call per packet decodes the payload, as the socket chunks it arrived in, straight
 * into the caller's pages; anything but exactly normal_pages x page_size bytes is refused. A stream
 * that offers its decoder to a channel's thread (handle()) is also the receiver's `thread`: the
 * same stream, the same refusals.
 */
import { ProtocolError } from '../errors.js';
import type { DecoderHandle } from '../native/binding.js';
import type { PathTally } from '../offload/paths.js';
import { decodeError } from './decode-error.js';
import type { MethodReceiver } from './method.js';

/** A native stream's decoder: the bytes written into `out` (it throws on a corrupt payload or one that would overflow `out`). */
export interface NativeDecoder {
  decode(payload: Uint8Array[], out: Uint8Array): number;
  close(): void;
  /** The stream as SocketChannel.recvWrite decodes with it on a channel's thread; absent: recv() only. */
  handle?(): DecoderHandle;
}

export function nativeStreamReceiver(
  method: string,
  z: NativeDecoder,
  { channel, pageSize, tally }: { channel: number; pageSize: number; tally: PathTally },
): MethodReceiver {
  const sizeError = (got: number, want: number, packetNum: bigint): ProtocolError =>
    new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${got}, size expected ${want}`, { channel, packetNum });
  const receiver: MethodReceiver = {
    recv(payload, normalPages, packetNum, into) {
      const want = normalPages * pageSize;
      const out = into ? into.subarray(0, want) : Buffer.allocUnsafeSlow(want); // every byte is written or the packet is refused
      let got: number;
      try {
        got = z.decode(payload, out);
      } catch (e) {
        throw decodeError(method, e, channel, packetNum);
      }
      if (got !== want) throw sizeError(got, want, packetNum);
      tally.add('software', normalPages);
      return [out];
    },
    cleanup: () => z.close(),
  };
  if (z.handle) {
    receiver.thread = {
      handle: z.handle(),
      decoded: (normalPages) => tally.add('software', normalPages),
      refused: ({ decoded, code, message }, normalPages, packetNum) =>
        code !== null ? decodeError(method, { code, message }, channel, packetNum) : sizeError(decoded, normalPages * pageSize, packetNum),
    };
  }
  return receiver;
}
