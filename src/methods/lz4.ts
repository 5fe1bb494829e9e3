/**
 * lz4: mfd's own extension; QEMU has no lz4 and a QEMU receiver refuses it
 * (flags 0x3e match none of its methods). Each packet is self-contained: the
 * payload is lz4-napi's block format for the packet's normal pages joined in
 * offset order: a little-endian u32 with the uncompressed length, then one
 * LZ4 block (docs/wire-format.md). The receiver checks the length prefix
 * against normal_pages x page_size before it decodes anything.
 */
import type * as Lz4Napi from 'lz4-napi';
import { ProtocolError } from '../errors.js';
import { MFD_FLAG_LZ4 } from '../wire/constants.js';
import { defineMethod } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';
import { lazyModule } from './lazy.js';

const lz4Napi = lazyModule<typeof Lz4Napi>('lz4-napi', 'lz4');

/** LZ4's worst case for n bytes, plus the 4-byte length prefix. */
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
  path: () => 'software: lz4_flex (lz4-napi)',
  maxPayload: (normalPages, pageSize) => bound(normalPages * pageSize),
  params(user) {
    lz4Napi();
    return checkParams('lz4', [], user);
  },
  sendSetup: ({ tally }) => ({
    prepare(pages, normalPages) {
      tally.add('software', normalPages);
      return [
        lz4Napi().compressSync(
          pages.length === 1 ? Buffer.from(pages[0]!.buffer, pages[0]!.byteOffset, pages[0]!.length) : Buffer.concat(pages),
        ),
      ];
    },
    cleanup() {},
  }),
  recvSetup: ({ channel, pageSize, tally }) => ({
    recv(payload, normalPages, packetNum) {
      const want = normalPages * pageSize;
      const buf =
        payload.length === 1 ? Buffer.from(payload[0]!.buffer, payload[0]!.byteOffset, payload[0]!.length) : Buffer.concat(payload);
      const declared = buf.length >= 4 ? buf.readUInt32LE(0) : -1;
      if (declared !== want)
        throw new ProtocolError('ERR_PAYLOAD_SIZE', `lz4 payload declares ${declared} bytes, expected ${want}`, { channel, packetNum });
      let out: Buffer;
      try {
        out = lz4Napi().uncompressSync(buf);
      } catch (e) {
        throw decodeError('lz4', e, channel, packetNum);
      }
      if (out.length !== want)
        throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${out.length}, size expected ${want}`, { channel, packetNum });
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
