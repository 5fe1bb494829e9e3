/**
 * qpl (flag 0x08), in QEMU's multifd-qpl wire format: a big-endian u32 length
 * per normal page, then each page compressed on its own as raw DEFLATE, or the
 * raw page when its length equals the page size. QEMU runs it on Intel IAA
 * through QPL; this build has no libqpl, so every page takes the software path,
 * which emits the same format (4 KiB history window, so IAA can decode it;
 * output bounded to page size - 1, else the page goes raw). Packets are
 * self-contained. The codec is in the addon (addon/qpl_codec.cc).
 */
import { ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import { MULTIFD_FLAG_QPL } from '../wire/constants.js';
import type { CompressionMethod } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';

export const qpl: CompressionMethod = {
  name: 'qpl',
  flag: MULTIFD_FLAG_QPL,
  qemuCompatible: true,
  description: 'raw deflate per page, length-prefixed (QEMU multifd-qpl); software path, no IAA in this build',
  offload: true,
  options: [],
  exactPayload: false,
  path: () => 'software deflate (4 KiB window): this build has no libqpl, so IAA hardware is never used',
  // Every page raw at worst, plus its length.
  maxPayload: (normalPages, pageSize) => normalPages * (pageSize + 4),
  params: (user) => checkParams('qpl', [], user),
  sendSetup: ({ pageSize }) => ({
    prepare(pages, normalPages) {
      const out = Buffer.allocUnsafeSlow(normalPages * (pageSize + 4));
      return [out.subarray(0, native.qplCompressPages(pages, pageSize, out))];
    },
    cleanup() {},
  }),
  recvSetup: ({ channel, pageSize }) => ({
    recv(payload, normalPages, packetNum) {
      const input = payload.length === 1 ? payload[0]! : Buffer.concat(payload);
      const out = Buffer.allocUnsafeSlow(normalPages * pageSize); // every byte is written or the packet is refused
      try {
        native.qplDecompressPages(input, normalPages, pageSize, out);
      } catch (e) {
        if ((e as { code?: string }).code === 'ERR_PAYLOAD_SIZE') {
          throw new ProtocolError('ERR_PAYLOAD_SIZE', `qpl payload: ${(e as Error).message}`, { channel, packetNum });
        }
        throw decodeError('qpl', e, channel, packetNum);
      }
      return [out];
    },
    cleanup() {},
  }),
};

registerMethod(qpl);
