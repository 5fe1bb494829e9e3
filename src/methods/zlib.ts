/**
 * zlib (flag 0x02), framed as QEMU's multifd-zlib: one zlib stream per channel
 * for the whole migration, each page deflated from a bounce copy with
 * Z_NO_FLUSH and the packet's last page with Z_SYNC_FLUSH; never finished.
 * The receiver inflates a channel's payloads in order and requires exactly
 * normal_pages x page_size bytes. The stream lives in the addon.
 *
 * Where ISA-L is available (the addon built with libisal-dev's headers, and
 * libisal.so.2 found at run time: addon/isal.h), igzip makes the same
 * standard zlib stream, about twice as fast, for the levels where its output
 * stays within 5% of zlib's bytes at that level (ISAL_LEVEL_FOR, measured on
 * mixed and text images: docs/wire-format.md); other levels deflate with zlib. The
 * receiver inflates with igzip whenever it is there: it reads any zlib stream.
 */
import { native } from '../native/load.js';
import { MULTIFD_FLAG_ZLIB } from '../wire/constants.js';
import { defineMethod, type MethodOption } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { nativeStreamReceiver } from './native-stream.js';

/**
 * QEMU's zlib level -> the fastest ISA-L level whose output stays within 5%
 * of zlib's bytes at that level, both on a mixed image (the issue's
 * benchmark) and on a text-only one (where igzip's shorter match search
 * shows most). Measured with this framing (docs/wire-format.md): level 1 ->
 * ISA-L 1 (+1.0% mixed, -0.9% text), 2 -> 1 (+1.8%, +1.8%), 3 -> 3 (+1.4%,
 * +3.0%). From level 4 on, no ISA-L level is within 5% on text (ISA-L 3 is
 * +6.3% at 4), so 4..9 deflate with zlib; level 0 (stored blocks) too.
 */
export const ISAL_LEVEL_FOR: Readonly<Record<number, number>> = { 1: 1, 2: 1, 3: 3 };

/** The ISA-L level that deflates QEMU's zlib `level` in this build, or null when zlib does. */
export function isalLevel(level: number): number | null {
  return native.isalVersion !== null ? (ISAL_LEVEL_FOR[level] ?? null) : null;
}

/** How a path names ISA-L deflating zlib's `level` at its level `mapped`. */
export function isalDeflateName(level: number, mapped: number): string {
  return `isa-l igzip ${native.isalVersion} (level ${level} -> isal ${mapped})`;
}

/** The sender's path names the level it deflates at; a receiver's inflate has none. */
function zlibPath(level: number, receiving: boolean): string {
  const zlibName = `zlib ${native.zlibVersion}`;
  if (native.isalVersion === null) return receiving ? `software: ${zlibName}` : `software: ${zlibName} (level ${level})`;
  const mapped = isalLevel(level);
  if (mapped !== null) return `software: ${isalDeflateName(level, mapped)}`;
  return `software: ${zlibName} deflate (level ${level}: no isal level within 5%), isa-l igzip ${native.isalVersion} inflate`;
}

const options = [
  {
    type: 'int',
    flag: 'zlib-level',
    qemu: 'multifd-zlib-level',
    key: 'level',
    min: 0,
    max: 9,
    default: 1,
    description: "zlib level (QEMU's multifd-zlib-level)",
  },
] as const satisfies readonly MethodOption[];

export const zlib = defineMethod({
  name: 'zlib',
  flag: MULTIFD_FLAG_ZLIB,
  qemuCompatible: true,
  description: 'zlib stream per channel, sync flush per packet (QEMU multifd-zlib)',
  offload: true,
  options,
  exactPayload: false,
  hardware: null,
  path: ({ params, receiving }) => zlibPath(params.level, receiving === true),
  maxPayload: (normalPages, pageSize) => native.zlibCompressBound(normalPages * pageSize),
  params: (user) => checkParams('zlib', options, user),
  sendSetup({ pageSize, params, tally }) {
    const mapped = isalLevel(params.level);
    const z = mapped !== null ? new native.ZlibStream(false, mapped, 'isal') : new native.ZlibStream(false, params.level);
    return {
      prepare(pages, normalPages, into) {
        const out = into ?? Buffer.allocUnsafeSlow(native.zlibCompressBound(normalPages * pageSize));
        tally.add('software', normalPages);
        return [out.subarray(0, z.deflatePages(pages, pageSize, out))];
      },
      cleanup: () => z.close(),
    };
  },
  // The addon's inflate stream (zlib's or igzip's) decodes on a channel's own thread too.
  threadDecodes: () => true,
  recvSetup(ctx) {
    const z = new native.ZlibStream(true, 0, native.isalVersion !== null ? 'isal' : 'zlib');
    return nativeStreamReceiver(
      'zlib',
      { decode: (payload, out) => z.inflate(payload, out), close: () => z.close(), handle: () => z.decoder() },
      ctx,
    );
  },
});

declare module './registry.js' {
  interface MethodRegistry {
    zlib: typeof zlib;
  }
}

registerMethod(zlib);
