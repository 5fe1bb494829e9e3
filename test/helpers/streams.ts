/** Reads a dumped multifd channel (init packet, then packets) with the wire codec alone. */
import fs from 'node:fs';
import { decodeInitPacket } from '../../src/wire/init-packet.js';
import { decodePacketHeader, type PacketHeader } from '../../src/wire/packet.js';
import { INIT_PACKET_SIZE, packetHeaderSize, pageCount } from '../../src/wire/constants.js';

export interface DumpedPacket {
  header: PacketHeader;
  payload: Buffer;
}

export function readChannelDump(file: string, pageSize = 4096): { id: number; packets: DumpedPacket[] } {
  const b = fs.readFileSync(file);
  const init = decodeInitPacket(b.subarray(0, INIT_PACKET_SIZE));
  const hs = packetHeaderSize(pageSize);
  const packets: DumpedPacket[] = [];
  for (let at = INIT_PACKET_SIZE; at < b.length;) {
    const header = decodePacketHeader(b.subarray(at, at + hs), pageCount(pageSize));
    at += hs;
    packets.push({ header, payload: b.subarray(at, at + header.nextPacketSize) });
    at += header.nextPacketSize;
  }
  return { id: init.id, packets };
}

/** LZ4 block decoder written from the format description, independent of liblz4. */
export function lz4BlockDecode(src: Uint8Array, size: number): Buffer {
  const out = Buffer.alloc(size);
  let i = 0;
  let o = 0;
  while (i < src.length) {
    const token = src[i++]!;
    let lit = token >> 4;
    if (lit === 15) for (let b = 255; b === 255; lit += b) b = src[i++]!;
    out.set(src.subarray(i, i + lit), o);
    i += lit;
    o += lit;
    if (i >= src.length) break;
    const offset = src[i]! | (src[i + 1]! << 8);
    i += 2;
    let len = token & 15;
    if (len === 15) for (let b = 255; b === 255; len += b) b = src[i++]!;
    len += 4;
    for (let k = 0; k < len; k++, o++) out[o] = out[o - offset]!;
  }
  if (o !== size) throw new Error(`lz4 block decoded to ${o} bytes, expected ${size}`);
  return out;
}
