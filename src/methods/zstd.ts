/**
 * zstd (flag 0x04), framed as QEMU's multifd-zstd: one zstd stream per channel,
 * each page fed with ZSTD_e_continue and the packet's last with ZSTD_e_flush;
 * ZSTD_e_end is never used, so a channel is one never-ending frame. Decoded
 * per channel in order, exactly normal_pages x page_size bytes. Both engines
 * are synchronous, so this runs in the compute pool's workers.
 *
 * Two engines make and read the same stream (--zstd-engine): libzstd in the
 * addon (addon/zstd_stream.cc: one call per packet, from the page runs into the
 * caller's output and from the payload into the caller's pages), the default
 * where the addon was built with libzstd-dev; and zstd-napi (its own zstd
 * build), the engine of builds without it and the reference the other is
 * tested against. A channel's stream is one engine's from start to end, and
 * each engine decodes the other's: mfd recv runs the engine the sender's hello
 * names (zstd-napi where its addon lacks libzstd), the default for a QEMU source.
 */
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import { MULTIFD_FLAG_ZSTD } from '../wire/constants.js';
import { defineMethod, type MethodOption } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';
import { nativeStreamReceiver } from './native-stream.js';
import { lazyModule } from './lazy.js';

const zstdNapi = lazyModule<typeof ZstdBinding>('zstd-napi/binding', 'zstd');

const options = [
  {
    type: 'int',
    flag: 'zstd-level',
    qemu: 'multifd-zstd-level',
    key: 'level',
    min: 0,
    max: 20,
    default: 1,
    description: "zstd level (QEMU's multifd-zstd-level)",
  },
  {
    type: 'choice',
    flag: 'zstd-engine',
    key: 'engine',
    choices: ['libzstd', 'zstd-napi'],
    default: 'libzstd',
    description: 'zstd engine: libzstd in the addon (zstd-napi where the addon was built without it) or zstd-napi; the same stream',
  },
] as const satisfies readonly MethodOption[];

/** The engine that runs for `engine`: libzstd only where the addon has it. */
const useLibzstd = (engine: string): boolean => engine === 'libzstd' && native.zstdVersion !== null;

/** ZSTD_COMPRESSBOUND (zstd.h): the most n bytes compress to, whatever the engine. */
export const zstdCompressBound = (n: number): number =>
  n + Math.floor(n / 256) + (n < 128 * 1024 ? Math.floor((128 * 1024 - n) / 2048) : 0);

/** A packet's payload at most, and the output room its prepare() allocates: the bound of its pages plus a 64-byte margin. */
const payloadBound = (normalPages: number, pageSize: number): number => zstdCompressBound(normalPages * pageSize) + 64;

/**
 * Largest window a channel's frame may ask the decoder to allocate: 2^25
 * (32 MiB), what level 20, the highest multifd-zstd-level, uses; zstd's own
 * default limit is 2^27 per channel, for a size the peer alone declares.
 */
export const ZSTD_WINDOW_LOG_MAX = 25;

/** What all channels' compression contexts may hold together before their windows shrink. */
const SEND_CONTEXTS_BUDGET = 64 * 2 ** 20;

/**
 * The window of each channel's stream (ZSTD_c_windowLog) for `channels`
 * channels, or null for the level's own. A level-1 context, once used, holds
 * its window, three blocks (a block is the window up to 128 KiB: the input
 * buffer's, the output buffer and the sequences) and about 96 KiB of tables;
 * measured with zstd 1.5.7 after two flushed 512 KiB packets: 908 KiB at
 * level 1's 2^19, 361 at 2^16, 237 at 2^15, 169 at 2^14, 116 at 2^12. Past
 * SEND_CONTEXTS_BUDGET in all, the window halves until they fit (2^15 at 255
 * channels: 56 MiB), never below 2^10. Any window decodes (the receiver's
 * limit is only an upper bound; its context shrinks with the window too:
 * 265 KiB at 2^16, 149 at 2^15), and on multifd's 512 KiB packets, which a
 * channel gets one in N of, a smaller window costs little: on a mixed image
 * at 255 channels, 2^16 wrote 6.3% more bytes than 2^19, and 2^15 0.5% more
 * than 2^16.
 */
export function zstdWindowLog(channels: number): number | null {
  const cost = (log: number): number => 2 ** log + 3 * Math.min(2 ** log, 128 * 1024) + 96 * 1024;
  if (channels * cost(19) <= SEND_CONTEXTS_BUDGET) return null;
  let log = 18;
  while (log > 10 && channels * cost(log) > SEND_CONTEXTS_BUDGET) log--;
  return log;
}

export const zstd = defineMethod({
  name: 'zstd',
  flag: MULTIFD_FLAG_ZSTD,
  qemuCompatible: true,
  description: 'zstd stream per channel, flushed per packet (QEMU multifd-zstd)',
  offload: true,
  options,
  exactPayload: false,
  hardware: null,
  path: ({ params }) =>
    useLibzstd(params.engine)
      ? `software: zstd ${native.zstdVersion} (libzstd)`
      : `software: zstd ${zstdNapi().versionString()} (zstd-napi)${params.engine === 'libzstd' ? ' (the addon was built without libzstd)' : ''}`,
  maxPayload: payloadBound,
  params(user) {
    const p = checkParams('zstd', options, user);
    if (!useLibzstd(p.engine)) zstdNapi();
    return p;
  },
  sendSetup({ channels, pageSize, params, tally }) {
    const windowLog = zstdWindowLog(channels ?? 1);
    if (useLibzstd(params.engine)) {
      const z = new native.ZstdStream(false, params.level, windowLog ?? 0);
      return {
        prepare(pages, normalPages, into) {
          const out = into ?? Buffer.allocUnsafeSlow(payloadBound(normalPages, pageSize));
          const wrote = z.compress(pages, out);
          tally.add('software', normalPages);
          return [out.subarray(0, wrote)];
        },
        cleanup: () => z.close(),
      };
    }
    const { CCtx, CParameter, EndDirective } = zstdNapi();
    const c = new CCtx();
    c.setParameter(CParameter.compressionLevel, params.level);
    if (windowLog !== null) c.setParameter(CParameter.windowLog, windowLog);
    return {
      prepare(pages, normalPages, into) {
        const out = into ?? Buffer.allocUnsafeSlow(payloadBound(normalPages, pageSize));
        let produced = 0;
        // One call per run of pages, not per page: the stream's bytes are the same, and the
        // compressor works on long contiguous inputs (measured 1.6-1.8x faster than per page).
        for (let i = 0; i < pages.length; i++) {
          const last = i === pages.length - 1;
          let src = pages[i]!;
          for (;;) {
            const [remaining, wrote, read] = c.compressStream2(
              out.subarray(produced),
              src,
              last ? EndDirective.flush : EndDirective.continue,
            );
            produced += wrote;
            src = src.subarray(read);
            if (src.length === 0 && (!last || remaining === 0)) break;
            if (produced === out.length) throw new Error('zstd: compressStream buffer too small');
          }
        }
        tally.add('software', normalPages);
        return [out.subarray(0, produced)];
      },
      cleanup() {},
    };
  },
  // libzstd's stream decodes on a channel's own thread; zstd-napi's only in recv(), on a worker.
  threadDecodes: (params) => useLibzstd(params.engine),
  recvSetup(ctx) {
    const { channel, pageSize, params, tally } = ctx;
    if (useLibzstd(params.engine)) {
      const z = new native.ZstdStream(true, 0, ZSTD_WINDOW_LOG_MAX);
      return nativeStreamReceiver(
        'zstd',
        { decode: (payload, out) => z.decompress(payload, out), close: () => z.close(), handle: () => z.decoder() },
        ctx,
      );
    }
    const { DCtx, DParameter } = zstdNapi();
    const d = new DCtx();
    const spare = Buffer.alloc(1);
    const empty = Buffer.alloc(0);
    d.setParameter(DParameter.windowLogMax, ZSTD_WINDOW_LOG_MAX);
    return {
      recv(payload, normalPages, packetNum, into) {
        const want = normalPages * pageSize;
        const out = into ? into.subarray(0, want) : Buffer.allocUnsafeSlow(want); // every byte is written or the packet is refused
        let got = 0;
        try {
          for (const piece of payload) {
            let src = piece;
            while (src.length > 0) {
              const [, wrote, read] = d.decompressStream(out.subarray(got), src);
              got += wrote;
              src = src.subarray(read);
              if (read === 0 && wrote === 0) {
                throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet decodes to more than ${want} bytes`, { channel, packetNum });
              }
            }
          }
          // With out full, the context may still hold decoded bytes it took the input for: more than the packet's pages.
          if (got === want && d.decompressStream(spare, empty)[1] !== 0)
            throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet decodes to more than ${want} bytes`, { channel, packetNum });
        } catch (e) {
          if (e instanceof ProtocolError) throw e;
          throw decodeError('zstd', e, channel, packetNum);
        }
        if (got !== want)
          throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${got}, size expected ${want}`, { channel, packetNum });
        tally.add('software', normalPages);
        return [out];
      },
      cleanup() {},
    };
  },
});

declare module './registry.js' {
  interface MethodRegistry {
    zstd: typeof zstd;
  }
}

registerMethod(zstd);
