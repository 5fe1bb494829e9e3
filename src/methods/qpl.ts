/**
 * qpl (flag 0x08), in QEMU's multifd-qpl wire format: a big-endian u32 length
 * per normal page, then each page compressed on its own as raw DEFLATE, or the
 * raw page when its length equals the page size. Packets are self-contained.
 *
 * Per page, QEMU's policy (addon/qpl_codec.cc): Intel IAA through libqpl when
 * the addon was built with it and a hardware job initialises (a busy queue is
 * retried 3 times), else the software path, which emits the same format (4 KiB
 * history window, so IAA can decode it; output bounded to page size - 1, else
 * the page goes raw). Every page is counted under the path that handled it.
 */
import { AccelError, ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import { MULTIFD_FLAG_QPL } from '../wire/constants.js';
import type { PathTally } from '../accel/paths.js';
import type { CompressionMethod } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';

const HARDWARE = 'Intel IAA through QPL';
const SOFTWARE = 'software deflate (4 KiB window)';

/** The engine this process uses (probed once), or why there is none. */
function engine(): { name: string; hardware: boolean; version: string } | { reason: string } {
  const probe = native.qplHardwareOpen();
  const e = native.qplEngine();
  if (e) return { ...e, version: probe.version };
  return { reason: probe.reason };
}

/**
 * Counts one call's pages ([hardware, software, raw, busy, error, retries]) into the tally. The
 * engine is looked up once, at set-up: the addon uses the same one for every call of the run.
 */
function counter(tally: PathTally): (c: Float64Array) => void {
  const e = native.qplEngine();
  const noDevice = e ? '' : `no IAA engine (${native.qplHardwareOpen().reason})`;
  return (c) => {
    tally.add(e?.name ?? 'iaa', c[0]!, c[0]! > 0 ? 1 : 0);
    tally.add('software', c[1]!, c[1]! > 0 ? 1 : 0);
    tally.add('raw', c[2]!, c[2]! > 0 ? 1 : 0);
    if (!e) {
      tally.fallback('no-device', c[1]! + c[2]!, noDevice);
      return;
    }
    if (!e.hardware) tally.fallback('not-hardware', c[0]!, `${e.name} is a software stand-in for IAA`);
    tally.fallback('queue-busy', c[3]!, 'the IAA queue stayed busy after 3 retries');
    tally.fallback('device-error', c[4]!, 'an IAA job failed');
  };
}

export const qpl: CompressionMethod = {
  name: 'qpl',
  flag: MULTIFD_FLAG_QPL,
  qemuCompatible: true,
  description: 'raw deflate per page, length-prefixed (QEMU multifd-qpl): IAA when present, software path otherwise',
  offload: true,
  options: [],
  exactPayload: false,
  hardware: HARDWARE,
  path({ requireHardware }) {
    const e = engine();
    if ('reason' in e) {
      if (requireHardware) throw new AccelError('ERR_QPL_UNAVAILABLE', `qpl: ${HARDWARE} is required (--require-hardware) but unavailable: ${e.reason}`);
      return `${SOFTWARE}: ${e.reason}`;
    }
    if (!e.hardware) {
      if (requireHardware) throw new AccelError('ERR_QPL_UNAVAILABLE', `qpl: --require-hardware, but the engine is ${e.name}, a software stand-in`);
      return `${e.name} (software stand-in for IAA, not hardware), ${SOFTWARE} for busy or failed pages`;
    }
    return `IAA (libqpl ${e.version}) per page, ${SOFTWARE} for busy or failed pages`;
  },
  // Every page raw at worst, plus its length.
  maxPayload: (normalPages, pageSize) => normalPages * (pageSize + 4),
  params: (user) => checkParams('qpl', [], user),
  sendSetup: ({ pageSize, tally }) => {
    const counts = new Float64Array(6);
    const count = counter(tally);
    return {
      prepare(pages, normalPages) {
        const out = Buffer.allocUnsafeSlow(normalPages * (pageSize + 4));
        const n = native.qplCompressPages(pages, pageSize, out, counts);
        count(counts);
        return [out.subarray(0, n)];
      },
      cleanup() {},
    };
  },
  recvSetup: ({ channel, pageSize, tally }) => {
    const counts = new Float64Array(6);
    const count = counter(tally);
    return {
      recv(payload, normalPages, packetNum) {
        const input = payload.length === 1 ? payload[0]! : Buffer.concat(payload);
        const out = Buffer.allocUnsafeSlow(normalPages * pageSize); // every byte is written or the packet is refused
        try {
          native.qplDecompressPages(input, normalPages, pageSize, out, counts);
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
};

registerMethod(qpl);
