/**
 * qpl (flag 0x08), in QEMU's multifd-qpl wire format: a big-endian u32 length
 * per normal page, then each page compressed on its own as raw DEFLATE, or the
 * raw page when its length equals the page size. Packets are self-contained.
 *
 * Per page, QEMU's policy (addon/qpl_codec.cc): Intel IAA through libqpl when
 * the addon was built with it and a hardware job initialises (a busy queue is
 * retried 3 times), else the software path, which emits the same format (4 KiB
 * history window, so IAA can decode it; output bounded to page size - 1, else
 * the page goes raw). The software path is libqpl's own (qpl_path_software,
 * what QEMU runs without a device: fixed Huffman codes) in a build with QPL
 * (--qpl-sw-engine auto, the default, or qpl), else mfd's deflate (mfd). Every
 * page is counted under the path that handled it ("qpl-software" or "software").
 */
import { AccelError, ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import { MULTIFD_FLAG_QPL } from '../wire/constants.js';
import type { PathTally } from '../offload/paths.js';
import { qplState, STATE_TEXT } from '../offload/state.js';
import { libraryBackend } from '../offload/probe.js';
import { defineMethod, type MethodOption, type ParamsOf } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';

const HARDWARE = 'Intel IAA through QPL';
const SOFTWARE = 'software deflate (4 KiB window)';

const options = [
  {
    flag: 'qpl-sw-engine',
    key: 'swEngine',
    type: 'choice',
    choices: ['auto', 'mfd', 'qpl'],
    default: 'auto',
    description:
      "software path without IAA (and for pages IAA refuses): libqpl's own (qpl_path_software, QEMU's; needs a build with QPL), mfd's deflate (smaller, slower), or auto: libqpl's when built with it",
  },
] as const satisfies readonly MethodOption[];

/** The parameters its options make. */
type Params = ParamsOf<typeof options>;

/** The engine this process uses (probed once), or why there is none. */
function engine(): { name: string; hardware: boolean; version: string } | { reason: string } {
  const probe = native.qplHardwareOpen();
  const e = native.qplEngine();
  if (e) return { ...e, version: probe.version };
  const state = STATE_TEXT[qplState(probe)];
  // Not compiled: the addon's reason says so itself.
  return { reason: probe.version ? `${state} (libqpl ${probe.version}): ${probe.reason}` : probe.reason };
}

/**
 * The software path for pages without IAA. Compressing: mfd's deflate, or libqpl's software path
 * when the parameters ask for it (auto: when this build has it; bench/engines.mjs measured it about
 * 3.5 times faster than mfd's, for 1.23 times the bytes); a libqpl path this build lacks is refused.
 * Decoding: always mfd's inflate (as fast as libqpl's, and it checks each page's length), whatever
 * engine the sender chose.
 */
function software(params: Params, receiving: boolean): { code: 0 | 1; name: string; label: string } {
  const mfd = { code: 0 as const, name: 'software', label: receiving ? 'software inflate' : SOFTWARE };
  if (receiving || params.swEngine === 'mfd') return mfd;
  const s = native.qplSoftwareOpen();
  if (s.ok) return { code: 1, name: 'qpl-software', label: `libqpl ${native.qplHardwareOpen().version} software path (qpl_path_software)` };
  if (params.swEngine === 'auto') return mfd;
  throw new AccelError('ERR_QPL_UNAVAILABLE', `qpl: --qpl-sw-engine qpl, but libqpl's software path is unavailable: ${s.reason}`);
}

/**
 * Counts one call's pages ([hardware, software, raw, busy, error, retries, library errors]) into
 * the tally. The engine is looked up once, at set-up: the addon uses the same one for every call of the run.
 */
function counter(tally: PathTally, sw: { name: string }): (c: Float64Array) => void {
  const e = native.qplEngine();
  const noDevice = e ? '' : `no IAA engine (${native.qplHardwareOpen().reason})`;
  return (c) => {
    tally.add(e?.name ?? 'iaa', c[0]!, c[0]! > 0 ? 1 : 0);
    tally.add(sw.name, c[1]!, c[1]! > 0 ? 1 : 0);
    tally.add('raw', c[2]!, c[2]! > 0 ? 1 : 0);
    tally.fallback('library-error', c[6]!, "libqpl's software job failed on these pages (sent raw)");
    if (!e) {
      tally.fallback('no-device', c[1]! + c[2]!, noDevice);
      return;
    }
    if (!e.hardware) tally.fallback('not-hardware', c[0]!, `${e.name} is a software stand-in for IAA`);
    tally.fallback('queue-busy', c[3]!, 'the IAA queue stayed busy after 3 retries');
    tally.fallback('device-error', c[4]!, 'an IAA job failed');
  };
}

export const qpl = defineMethod({
  name: 'qpl',
  flag: MULTIFD_FLAG_QPL,
  qemuCompatible: true,
  description: 'raw deflate per page, length-prefixed (QEMU multifd-qpl): IAA when present, software path otherwise',
  offload: true,
  options,
  exactPayload: false,
  hardware: HARDWARE,
  probe() {
    const hw = native.qplHardwareOpen();
    return {
      backend: 'qpl',
      report: libraryBackend(hw, qplState(hw), 'libqpl', 'qpl_init_job(qpl_path_hardware)', 'qpl_init_job(qpl_path_software)', () =>
        native.qplSoftwareOpen(),
      ),
    };
  },
  path({ params, requireHardware, receiving }) {
    const e = engine();
    if ('reason' in e) {
      if (requireHardware)
        throw new AccelError('ERR_QPL_UNAVAILABLE', `qpl: ${HARDWARE} is required (--require-hardware) but unavailable: ${e.reason}`);
      return `${software(params, receiving ?? false).label}: IAA ${e.reason}`;
    }
    const sw = software(params, receiving ?? false).label;
    if (!e.hardware) {
      if (requireHardware)
        throw new AccelError('ERR_QPL_UNAVAILABLE', `qpl: --require-hardware, but the engine is ${e.name}, a software stand-in`);
      return `${e.name} (software stand-in for IAA, not hardware), ${sw} for busy or failed pages`;
    }
    return `IAA hardware (libqpl ${e.version}) per page, ${sw} for busy (after 3 retries) or failed pages`;
  },
  // Every page raw at worst, plus its length.
  maxPayload: (normalPages, pageSize) => normalPages * (pageSize + 4),
  params: (user) => checkParams('qpl', options, user),
  sendSetup: ({ pageSize, params, tally }) => {
    const counts = new Float64Array(7);
    const sw = software(params, false);
    const count = counter(tally, sw);
    return {
      prepare(pages, normalPages, into) {
        const out = into ?? Buffer.allocUnsafeSlow(normalPages * (pageSize + 4));
        const n = native.qplCompressPages(pages, pageSize, out, counts, sw.code);
        count(counts);
        return [out.subarray(0, n)];
      },
      cleanup() {},
    };
  },
  recvSetup: ({ channel, pageSize, params, tally }) => {
    const counts = new Float64Array(7);
    const sw = software(params, true);
    const count = counter(tally, sw);
    return {
      recv(payload, normalPages, packetNum, into) {
        const input = payload.length === 1 ? payload[0]! : Buffer.concat(payload);
        const out = into ? into.subarray(0, normalPages * pageSize) : Buffer.allocUnsafeSlow(normalPages * pageSize); // every byte is written or the packet is refused
        try {
          native.qplDecompressPages(input, normalPages, pageSize, out, counts, sw.code);
        } catch (e) {
          if ((e as { code?: string }).code === 'ERR_PAYLOAD_SIZE') {
            throw new ProtocolError('ERR_PAYLOAD_SIZE', `qpl payload: ${(e as Error).message}`, { channel, packetNum });
          }
          throw decodeError('qpl', e, channel, packetNum);
        }
        count(counts);
        return [out];
      },
      cleanup() {},
    };
  },
});

declare module './registry.js' {
  interface MethodRegistry {
    qpl: typeof qpl;
  }
}

registerMethod(qpl);
