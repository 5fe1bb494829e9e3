/** Turns a codec's exception on a peer's payload into a ProtocolError naming the place. */
import { ProtocolError } from '../errors.js';

export function decodeError(method: string, e: unknown, channel: number, packetNum: bigint): ProtocolError {
  const err = e as { code?: string; message?: string };
  const code = err.code === 'ERR_PAYLOAD_SIZE' ? 'ERR_PAYLOAD_SIZE' : 'ERR_PAYLOAD_CORRUPT';
  return new ProtocolError(code, `${method} payload cannot be decoded: ${err.message ?? String(e)}`, { channel, packetNum });
}
