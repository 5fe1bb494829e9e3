/**
 * qatzip (flag 0x20), in QEMU's multifd-qatzip wire format: the packet's
 * normal pages as one buffer, compressed to gzip members. QEMU runs it on
 * Intel QAT through QATzip; this build has no libqatzip, so the software path
 * emits what QAT hardware does: one member per 64 KiB of input, each carrying
 * QATzip's 24-byte 'QZ' extended header (src_sz, dest_sz), so a QATzip receiver
 * on real hardware decodes it. Packets are self-contained. The receiver decodes
 * any number of members, plain gzip included, and checks the total size.
 */
import zlib from 'node:zlib';
import { ProtocolError } from '../errors.js';
import { MULTIFD_FLAG_QATZIP } from '../wire/constants.js';
import type { CompressionMethod } from './method.js';
import { checkParams, registerMethod } from './registry.js';
import { decodeError } from './decode-error.js';

/** Input per member: QATzip's hardware buffer size (hw_buff_sz). */
export const QZ_CHUNK = 64 * 1024;
const QZ_HEADER = 24;
const GZIP_TRAILER = 8;

const options = [{ flag: 'qatzip-level', key: 'level', min: 1, max: 9, default: 1, description: "qatzip level (QEMU's multifd-qatzip-level)" }];

/** One QZ-extended gzip member for `chunk`. */
export function qzMember(chunk: Uint8Array, level: number): Buffer {
  const body = zlib.deflateRawSync(chunk, { level });
  const m = Buffer.allocUnsafeSlow(QZ_HEADER + body.length + GZIP_TRAILER);
  m.set([0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 0xff], 0); // ID, CM deflate, FLG FEXTRA, MTIME 0, XFL 0, OS 255
  m.writeUInt16LE(12, 10); // XLEN
  m.set([0x51, 0x5a], 12); // 'Q' 'Z'
  m.writeUInt16LE(8, 14); // LEN
  m.writeUInt32LE(chunk.length, 16); // src_sz
  m.writeUInt32LE(body.length, 20); // dest_sz
  body.copy(m, QZ_HEADER);
  m.writeUInt32LE(zlib.crc32(chunk) >>> 0, QZ_HEADER + body.length);
  m.writeUInt32LE(chunk.length, QZ_HEADER + body.length + 4);
  return m;
}

export const qatzip: CompressionMethod = {
  name: 'qatzip',
  flag: MULTIFD_FLAG_QATZIP,
  qemuCompatible: true,
  description: 'gzip members with QATzip headers, one per 64 KiB (QEMU multifd-qatzip); software path, no QAT in this build',
  offload: true,
  options,
  exactPayload: false,
  path: () => 'software gzip with QZ headers: this build has no libqatzip, so QAT hardware is never used',
  // QEMU's qatzip receiver refuses more than 1 MiB; stored deflate of 512 KiB plus headers stays far below.
  maxPayload: (normalPages, pageSize) => Math.min(1 << 20, normalPages * pageSize + 1024 + Math.ceil((normalPages * pageSize) / QZ_CHUNK) * 64),
  params: (user) => checkParams('qatzip', options, user),
  sendSetup: ({ params }) => ({
    prepare(pages) {
      const all = pages.length === 1 ? pages[0]! : Buffer.concat(pages);
      const members: Buffer[] = [];
      for (let at = 0; at < all.length; at += QZ_CHUNK) members.push(qzMember(all.subarray(at, at + QZ_CHUNK), params.level as number));
      return members;
    },
    cleanup() {},
  }),
  recvSetup: ({ channel, pageSize }) => ({
    recv(payload, normalPages, packetNum) {
      const want = normalPages * pageSize;
      let out: Buffer;
      try {
        // gunzip reads every member; the bound stops a payload that inflates past the packet's pages.
        out = zlib.gunzipSync(payload.length === 1 ? payload[0]! : Buffer.concat(payload), { maxOutputLength: want });
      } catch (e) {
        if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
          throw new ProtocolError('ERR_PAYLOAD_SIZE', `qatzip payload decodes to more than ${want} bytes`, { channel, packetNum });
        }
        throw decodeError('qatzip', e, channel, packetNum);
      }
      if (out.length !== want) throw new ProtocolError('ERR_PAYLOAD_SIZE', `packet size received ${out.length}, size expected ${want}`, { channel, packetNum });
      return [out];
    },
    cleanup() {},
  }),
};

registerMethod(qatzip);
