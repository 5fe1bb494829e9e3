/**
 * lz4: mfd's own extension; QEMU has no lz4 and a QEMU receiver refuses it
 * (flags 0x3e match none of its methods). Each packet is self-contained: the
 * payload is a little-endian u32 with the uncompressed length, then one LZ4
 * block of the packet's normal pages joined in offset order
 * (docs/wire-format.md). liblz4 makes and reads it in the addon, in the
 * caller's buffers (addon/lz4_block.cc). The receiver checks the length prefix
 * against normal_pages x page_size before it decodes anything.
 */
import { ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import { MFD_FLAG_LZ4 } from '../wire/constants.js';
import { defineMethod } from './method.js';
import { checkParams, registerMethod } from './registry.js';

/** LZ4's worst case for n bytes (LZ4_compressBound), plus the 4-byte length prefix. */
const bound = (n: number): number => n + Math.floor(n / 255) + 16 + 4;

export const lz4 = defineMethod({
  name: 'lz4',
  flag: MFD_FLAG_LZ4,
  qemuCompatible: false,
  description: 'lz4 block per packet (mfd extension; QEMU cannot read it)',
  offload: true,
  options: [],
  exactPayload: false,
  hardware: null,
  path: () => `software: lz4 ${native.lz4Version}`,
  maxPayload: (normalPages, pageSize) => bound(normalPages * pageSize),
  params: (user) => checkParams('lz4', [], user),
  sendSetup: ({ pageSize, tally }) => ({
    prepare(pages, normalPages, into) {
      const out = into ?? Buffer.allocUnsafeSlow(bound(normalPages * pageSize));
      tally.add('software', normalPages);
      return [out.subarray(0, native.lz4Compress(pages, out))];
    },
    cleanup() {},
  }),
  recvSetup: ({ channel, pageSize, tally }) => ({
    recv(payload, normalPages, packetNum, into) {
      const want = normalPages * pageSize;
      const buf = payload.length === 1 ? payload[0]! : Buffer.concat(payload);
      const declared = buf.length >= 4 ? Buffer.from(buf.buffer, buf.byteOffset, 4).readUInt32LE(0) : -1;
      if (declared !== want)
        throw new ProtocolError('ERR_PAYLOAD_SIZE', `lz4 payload declares ${declared} bytes, expected ${want}`, { channel, packetNum });
      const out = into ? into.subarray(0, want) : Buffer.allocUnsafeSlow(want); // every byte is written or the packet is refused
      const got = native.lz4Decompress(buf, out);
      if (got < 0)
        throw new ProtocolError('ERR_PAYLOAD_CORRUPT', 'lz4 payload cannot be decoded: corrupt LZ4 block', { channel, packetNum });
      if (got !== want)
        throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${got}, size expected ${want}`, { channel, packetNum });
      tally.add('software', normalPages);
      return [out];
    },
    cleanup() {},
  }),
});

declare module './registry.js' {
  interface MethodRegistry {
    lz4: typeof lz4;
  }
}

registerMethod(lz4);
