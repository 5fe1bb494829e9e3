/**
 * lz4: mfd's own extension; QEMU has no lz4 and a QEMU receiver refuses it
 * (flags 0x3e match none of its methods). Each packet is self-contained: the
 * payload is a little-endian u32 with the uncompressed length, then one LZ4
 * block of the packet's normal pages joined in offset order
 * (docs/wire-format.md). The receiver checks the length prefix against
 * normal_pages x page_size before it decodes anything.
 *
 * Two engines make and read the same format (--lz4-engine): liblz4 in the
 * addon (addon/lz4_block.cc: one call per packet, in the caller's buffers;
 * about half lz4-napi's CPU per byte), the default where the addon was built
 * with liblz4-dev; and lz4-napi (lz4_flex), the engine of builds without it and
 * the reference the other is tested against. Each decodes what the other makes,
 * so a receiver decodes with its own engine whatever the sender used.
 */
import type * as Lz4Napi from 'lz4-napi';
import { ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import { MFD_FLAG_LZ4 } from '../wire/constants.js';
import { defineMethod, type MethodOption, type ThreadDecoder } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';
import { lazyModule } from './lazy.js';

const lz4Napi = lazyModule<typeof Lz4Napi>('lz4-napi', 'lz4');

const options = [
  {
    type: 'choice',
    flag: 'lz4-engine',
    key: 'engine',
    choices: ['liblz4', 'lz4-napi'],
    default: 'liblz4',
    description: 'lz4 engine: liblz4 in the addon (lz4-napi where the addon was built without it) or lz4-napi; the same format',
  },
] as const satisfies readonly MethodOption[];

/** LZ4's worst case for n bytes (LZ4_compressBound), plus the 4-byte length prefix. */
const bound = (n: number): number => n + Math.floor(n / 255) + 16 + 4;

/** The engine that runs for `engine`: liblz4 only where the addon has it. */
const useLiblz4 = (engine: string): boolean => engine === 'liblz4' && native.lz4Version !== null;

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.length);

export const lz4 = defineMethod({
  name: 'lz4',
  flag: MFD_FLAG_LZ4,
  qemuCompatible: false,
  description: 'lz4 block per packet (mfd extension; QEMU cannot read it)',
  offload: true,
  options,
  exactPayload: false,
  hardware: null,
  path: ({ params }) =>
    useLiblz4(params.engine)
      ? `software: liblz4 ${native.lz4Version}`
      : `software: lz4_flex (lz4-napi)${params.engine === 'liblz4' ? ' (the addon was built without liblz4)' : ''}`,
  maxPayload: (normalPages, pageSize) => bound(normalPages * pageSize),
  params(user) {
    const p = checkParams('lz4', options, user);
    if (!useLiblz4(p.engine)) lz4Napi();
    return p;
  },
  sendSetup: ({ pageSize, params, tally }) => {
    const liblz4 = useLiblz4(params.engine);
    return {
      prepare(pages, normalPages, into) {
        tally.add('software', normalPages);
        if (!liblz4) return [lz4Napi().compressSync(pages.length === 1 ? asBuffer(pages[0]!) : Buffer.concat(pages))];
        const out = into ?? Buffer.allocUnsafeSlow(bound(normalPages * pageSize));
        return [out.subarray(0, native.lz4Compress(pages, out))];
      },
      cleanup() {},
    };
  },
  // liblz4's decoder runs on a channel's own thread; lz4-napi only in recv(), on a worker.
  threadDecodes: (params) => useLiblz4(params.engine),
  recvSetup: ({ channel, pageSize, params, tally }) => {
    const liblz4 = useLiblz4(params.engine);
    // The refusals recv() and the channel's thread (lz4Decoder, the same checks in the addon) share.
    const declares = (declared: number, want: number, packetNum: bigint): ProtocolError =>
      new ProtocolError('ERR_PAYLOAD_SIZE', `lz4 payload declares ${declared} bytes, expected ${want}`, { channel, packetNum });
    const corrupt = (packetNum: bigint): ProtocolError =>
      new ProtocolError('ERR_PAYLOAD_CORRUPT', 'lz4 payload cannot be decoded: corrupt LZ4 block', { channel, packetNum });
    const size = (got: number, want: number, packetNum: bigint): ProtocolError =>
      new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${got}, size expected ${want}`, { channel, packetNum });
    // liblz4's refusal (the addon's Lz4Decoder, on a channel's thread or in recv()): its code and message.
    const refused = (code: string | null, message: string, decoded: number, want: number, packetNum: bigint): ProtocolError => {
      if (code === 'ERR_PAYLOAD_CORRUPT') return corrupt(packetNum);
      if (code === 'ERR_PAYLOAD_SIZE') return new ProtocolError(code, message, { channel, packetNum });
      return size(decoded, want, packetNum);
    };
    return {
      recv(payload, normalPages, packetNum, into) {
        const want = normalPages * pageSize;
        let out: Uint8Array;
        if (liblz4) {
          out = into ? into.subarray(0, want) : Buffer.allocUnsafeSlow(want); // every byte is written or the packet is refused
          let got: number;
          try {
            got = native.lz4Decompress(payload, out);
          } catch (e) {
            const err = e as { code?: string; message?: string };
            if (err.code !== 'ERR_PAYLOAD_CORRUPT' && err.code !== 'ERR_PAYLOAD_SIZE') throw e;
            throw refused(err.code, err.message ?? '', -1, want, packetNum);
          }
          out = out.subarray(0, got);
        } else {
          const buf = payload.length === 1 ? asBuffer(payload[0]!) : Buffer.concat(payload);
          const declared = buf.length >= 4 ? buf.readUInt32LE(0) : -1;
          if (declared !== want) throw declares(declared, want, packetNum);
          try {
            out = lz4Napi().uncompressSync(buf);
          } catch (e) {
            throw decodeError('lz4', e, channel, packetNum);
          }
        }
        if (out.length !== want) throw size(out.length, want, packetNum);
        tally.add('software', normalPages);
        return [out];
      },
      cleanup() {},
      ...(liblz4
        ? {
            thread: {
              handle: native.lz4Decoder(),
              decoded: (normalPages: number) => tally.add('software', normalPages),
              refused: ({ decoded, code, message }, normalPages, packetNum) =>
                refused(code, message, decoded, normalPages * pageSize, packetNum),
            } satisfies ThreadDecoder,
          }
        : {}),
    };
  },
});

declare module './registry.js' {
  interface MethodRegistry {
    lz4: typeof lz4;
  }
}

registerMethod(lz4);
