/**
 * zlib (flag 0x02), framed as QEMU's multifd-zlib: one zlib stream per channel
 * for the whole migration, each page deflated from a bounce copy with
 * Z_NO_FLUSH and the packet's last page with Z_SYNC_FLUSH; never finished.
 * The receiver inflates a channel's payloads in order and requires exactly
 * normal_pages x page_size bytes. The stream lives in the addon.
 */
import { ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import { MULTIFD_FLAG_ZLIB } from '../wire/constants.js';
import type { CompressionMethod } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';

const options = [{ flag: 'zlib-level', key: 'level', min: 0, max: 9, default: 1, description: "zlib level (QEMU's multifd-zlib-level)" }];

export const zlib: CompressionMethod = {
  name: 'zlib',
  flag: MULTIFD_FLAG_ZLIB,
  qemuCompatible: true,
  description: 'zlib stream per channel, sync flush per packet (QEMU multifd-zlib)',
  offload: true,
  options,
  exactPayload: false,
  hardware: null,
  path: () => `software: zlib ${native.zlibVersion}`,
  maxPayload: (normalPages, pageSize) => native.zlibCompressBound(normalPages * pageSize),
  params: (user) => checkParams('zlib', options, user),
  sendSetup({ pageSize, params, tally }) {
    const z = new native.ZlibStream(false, params.level as number);
    return {
      prepare(pages, normalPages) {
        const out = Buffer.allocUnsafeSlow(native.zlibCompressBound(normalPages * pageSize));
        tally.add('software', normalPages);
        return [out.subarray(0, z.deflatePages(pages, pageSize, out))];
      },
      cleanup: () => z.close(),
    };
  },
  recvSetup({ channel, pageSize, tally }) {
    const z = new native.ZlibStream(true, 0);
    return {
      recv(payload, normalPages, packetNum) {
        const want = normalPages * pageSize;
        const out = Buffer.allocUnsafeSlow(want); // every byte is written or the packet is refused
        let got: number;
        try {
          got = z.inflate(payload, out);
        } catch (e) {
          throw decodeError('zlib', e, channel, packetNum);
        }
        if (got !== want) throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${got}, size expected ${want}`, { channel, packetNum });
        tally.add('software', normalPages);
        return [out];
      },
      cleanup: () => z.close(),
    };
  },
};

registerMethod(zlib);
