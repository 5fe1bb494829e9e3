/**
 * qatzip (flag 0x20), in QEMU's multifd-qatzip wire format: the packet's
 * normal pages as one buffer, compressed to gzip members. QEMU runs it on
 * Intel QAT through QATzip: when the addon was built with QATzip and a
 * hardware session comes up, one qzCompress per packet runs on QAT. Otherwise
 * (and only if --qatzip-sw-fallback is on, the default) the software path
 * emits what QAT hardware does: one member per 64 KiB of input, each carrying
 * QATzip's 24-byte 'QZ' extended header (src_sz, dest_sz), so a QATzip receiver
 * on real hardware decodes it. The members are made in the addon
 * (addon/qz_members.cc), by ISA-L's igzip where the zlib method would use it.
 * With --qatzip-sw-engine qatzip (a build with QATzip), the software path is
 * QATzip's own instead, as QEMU runs it without a device: a session with
 * sw_backup = 1, one qzCompress per packet (one gzip member with the QZ
 * header, zlib inside, 32 KiB window).
 * Packets are self-contained. The receiver decodes any number of members,
 * plain gzip included (by ISA-L where it is available, else Node's gunzip,
 * whichever engine compressed), and checks the total size.
 */
import zlib from 'node:zlib';
import { AccelError, ProtocolError } from '../errors.js';
import { native } from '../native/load.js';
import type { PathTally } from '../offload/paths.js';
import { MULTIFD_FLAG_QATZIP } from '../wire/constants.js';
import { defineMethod, type MethodOption, type ParamsOf } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { qatzipState, STATE_TEXT } from '../offload/state.js';
import { libraryBackend } from '../offload/probe.js';
import { decodeError } from './decode-error.js';
import { isalDeflateName, isalLevel } from './zlib.js';

/** Input per member: QATzip's hardware buffer size (hw_buff_sz). */
export const QZ_CHUNK = 64 * 1024;

const HARDWARE = 'Intel QAT through QATzip';
const options = [
  {
    type: 'int',
    flag: 'qatzip-level',
    qemu: 'multifd-qatzip-level',
    key: 'level',
    min: 1,
    max: 9,
    default: 1,
    description: "qatzip level (QEMU's multifd-qatzip-level)",
  },
  {
    flag: 'qatzip-sw-fallback',
    key: 'swFallback',
    type: 'bool',
    default: true,
    description: 'without a QAT hardware session, compress in software (same wire format); off: fail instead',
  },
  {
    flag: 'qatzip-sw-engine',
    key: 'swEngine',
    type: 'choice',
    choices: ['mfd', 'qatzip'],
    default: 'mfd',
    description:
      "the software path: mfd's QZ members per 64 KiB, or QATzip's own (sw_backup, QEMU's without a device; needs a build with QATzip)",
  },
] as const satisfies readonly MethodOption[];

/** The parameters its options make. */
type Params = ParamsOf<typeof options>;

/**
 * This thread's QAT session, or why there is none; throws when there is none
 * and neither the software fallback nor a software-only run is allowed.
 */
function session(params: Params, requireHardware: boolean): { ok: boolean; reason: string; fake: boolean } {
  const probe = native.qatzipHardwareOpen(params.level);
  const fake = probe.fake === true;
  if (fake && requireHardware)
    throw new AccelError('ERR_QATZIP_UNAVAILABLE', 'qatzip: --require-hardware, but the session is fake-qat, a software stand-in');
  const state = fake ? 'fake-qat' : STATE_TEXT[qatzipState(probe)];
  const s = { ok: probe.ok, fake, reason: probe.version ? `${state} (QATzip ${probe.version}): ${probe.reason}` : probe.reason };
  if (s.ok) return s;
  if (requireHardware)
    throw new AccelError('ERR_QATZIP_UNAVAILABLE', `qatzip: ${HARDWARE} is required (--require-hardware) but unavailable: ${s.reason}`);
  if (params.swFallback === false)
    throw new AccelError('ERR_QATZIP_UNAVAILABLE', `qatzip: no QAT hardware session (${s.reason}) and --qatzip-sw-fallback is off`);
  return s;
}

/** A packet on the session: QAT, or the test's stand-in, which is never counted as hardware. */
function countSession(tally: PathTally, fake: boolean, pages: number): void {
  tally.add(fake ? 'fake-qat' : 'qat', pages);
  if (fake) tally.fallback('not-hardware', pages, 'fake-qat is a software stand-in for QAT');
}

function countSoftware(tally: PathTally, path: string, pages: number, reason: string): void {
  tally.add(path, pages);
  tally.fallback('no-device', pages, `no QAT session (${reason})`);
}

interface SoftwareEngine {
  /** QATzip's software session (sw_backup) rather than mfd's members. */
  qatzip: boolean;
  /** The tally's path name: "software" (mfd's) or "qatzip-software". */
  path: string;
  isalLevel: number;
  name: string;
}

/**
 * The software path's compressor: QATzip's own when the parameters ask for it (refused when this
 * build lacks it), else mfd's members for `level`: ISA-L's igzip where it stays within 5% of zlib's
 * bytes at that level (the zlib method's rule), else zlib. Receivers always decode with mfd's
 * inflate (faster than QATzip's software path in bench/engines.mjs), whatever the sender chose.
 */
function softwareEngine(params: Params, receiving: boolean): SoftwareEngine {
  const level = params.level;
  const mapped = isalLevel(level);
  const mfd: SoftwareEngine =
    mapped !== null
      ? { qatzip: false, path: 'software', isalLevel: mapped, name: isalDeflateName(level, mapped) }
      : { qatzip: false, path: 'software', isalLevel: 0, name: `zlib ${native.zlibVersion} (level ${level})` };
  if (receiving)
    return { ...mfd, name: native.qzInflate ? `isa-l igzip ${native.isalVersion} inflate` : `zlib ${native.zlibVersion} gunzip` };
  if (params.swEngine !== 'qatzip') return mfd;
  const s = native.qatzipSoftwareOpen(level);
  if (s.ok)
    return {
      qatzip: true,
      path: 'qatzip-software',
      isalLevel: 0,
      name: `QATzip ${s.version} software session (sw_backup, level ${level}, one member per packet)`,
    };
  throw new AccelError(
    'ERR_QATZIP_UNAVAILABLE',
    `qatzip: --qatzip-sw-engine qatzip, but QATzip's software session is unavailable: ${s.reason}`,
  );
}

/** Bytes a payload of `bytes` input may take: a stored member's worst case is 42 bytes over its input. */
function payloadBound(bytes: number): number {
  return bytes + 1024 + Math.ceil(bytes / QZ_CHUNK) * 64;
}

export const qatzip = defineMethod({
  name: 'qatzip',
  flag: MULTIFD_FLAG_QATZIP,
  qemuCompatible: true,
  description: 'gzip members with QATzip headers, one per 64 KiB (QEMU multifd-qatzip): QAT when present, software path otherwise',
  offload: true,
  options,
  exactPayload: false,
  hardware: HARDWARE,
  probe() {
    const hw = native.qatzipHardwareOpen(1);
    return {
      backend: 'qatzip',
      report: libraryBackend(hw, qatzipState(hw), 'QATzip', 'QATzip hardware session', 'QATzip session with sw_backup', () =>
        native.qatzipSoftwareOpen(1),
      ),
    };
  },
  path({ params, requireHardware, receiving }) {
    // A receiver always has its software path (QEMU's sw_backup = 1), whatever the sender's --qatzip-sw-fallback.
    const s = session(receiving ? { ...params, swFallback: true } : params, requireHardware);
    const version = native.qatzipHardwareOpen(params.level).version;
    if (s.ok)
      return s.fake
        ? `fake-qat (QATzip ${version} software session standing in for QAT, not hardware) per packet`
        : `QAT hardware (QATzip ${version}) per packet`;
    const e = softwareEngine(params, receiving ?? false);
    const what = receiving ? 'software gzip members,' : e.qatzip ? 'software' : 'software gzip members with QZ headers,';
    return `${what} ${e.name}: QAT ${s.reason}`;
  },
  // QEMU's qatzip receiver refuses more than 1 MiB; stored deflate of 512 KiB plus headers stays far below.
  maxPayload: (normalPages, pageSize) => Math.min(1 << 20, payloadBound(normalPages * pageSize)),
  params: (user) => checkParams('qatzip', options, user),
  sendSetup: ({ channel, params, tally }) => {
    const s = session(params, tally.requireHardware);
    const engine = softwareEngine(params, false);
    return {
      prepare(pages, normalPages, into) {
        const all = pages.length === 1 ? pages[0]! : Buffer.concat(pages);
        const out = into ?? Buffer.allocUnsafeSlow(payloadBound(all.length));
        // QATzip's failure (its status in the message) is mfd's ERR_QATZIP, naming the channel.
        const qz = (software: boolean): number => {
          try {
            return native.qatzipCompress(all, out, software);
          } catch (e) {
            throw new AccelError('ERR_QATZIP', `qatzip: ${(e as Error).message}`, { channel });
          }
        };
        if (s.ok) {
          const n = qz(false);
          countSession(tally, s.fake, normalPages);
          return [out.subarray(0, n)];
        }
        countSoftware(tally, engine.path, normalPages, s.reason);
        if (engine.qatzip) return [out.subarray(0, qz(true))];
        return [out.subarray(0, native.qzMembers(all, params.level, engine.isalLevel, out))];
      },
      cleanup() {},
    };
  },
  recvSetup: ({ channel, pageSize, params, tally }) => {
    // A QATzip receiver always has its software path (QEMU's sw_backup = 1): the sender's
    // --qatzip-sw-fallback does not bind the receiver.
    const s = session({ ...params, swFallback: true }, tally.requireHardware);
    const engine = softwareEngine(params, true);
    return {
      recv(payload, normalPages, packetNum, into) {
        const want = normalPages * pageSize;
        const input = payload.length === 1 ? payload[0]! : Buffer.concat(payload);
        const room = (): Uint8Array => (into ? into.subarray(0, want) : Buffer.allocUnsafeSlow(want));
        let out: Uint8Array;
        try {
          if (s.ok) {
            out = room();
            const n = native.qatzipDecompress(input, out);
            if (n !== want)
              throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${n}, size expected ${want}`, { channel, packetNum });
            countSession(tally, s.fake, normalPages);
            return [out];
          }
          if (native.qzInflate) {
            // ISA-L reads every member, each checked; it stops at the packet's pages.
            out = room();
            out = out.subarray(0, native.qzInflate(input, out));
          } else {
            // gunzip reads every member; the bound stops a payload that inflates past the packet's pages.
            out = zlib.gunzipSync(input, { maxOutputLength: want });
          }
        } catch (e) {
          if (e instanceof ProtocolError) throw e;
          if (['ERR_BUFFER_TOO_LARGE', 'ERR_PAYLOAD_SIZE'].includes((e as { code?: string }).code ?? '')) {
            throw new ProtocolError('ERR_PAYLOAD_SIZE', `qatzip payload decodes to more than ${want} bytes`, { channel, packetNum });
          }
          throw decodeError('qatzip', e, channel, packetNum);
        }
        if (out.length !== want)
          throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${out.length}, size expected ${want}`, { channel, packetNum });
        countSoftware(tally, engine.path, normalPages, s.reason);
        return [out];
      },
      cleanup() {},
    };
  },
});

declare module './registry.js' {
  interface MethodRegistry {
    qatzip: typeof qatzip;
  }
}

registerMethod(qatzip);
