/** MultiFDInit_t: the 64-byte packet that opens every multifd channel. */
import { ProtocolError } from '../errors.js';
import { INIT_PACKET_SIZE, MULTIFD_MAGIC, MULTIFD_VERSION, hex } from './constants.js';

export interface InitPacket {
  magic: number;
  version: number;
  /** 16 raw bytes. */
  uuid: Uint8Array;
  id: number;
}

export function encodeInitPacket(uuid: Uint8Array, id: number, out: Uint8Array = new Uint8Array(INIT_PACKET_SIZE)): Uint8Array {
  if (uuid.length !== 16) throw new RangeError(`uuid must be 16 bytes, got ${uuid.length}`);
  if (!Number.isInteger(id) || id < 0 || id > 255) throw new RangeError(`channel id must be 0..255, got ${id}`);
  out.fill(0, 0, INIT_PACKET_SIZE);
  const dv = new DataView(out.buffer, out.byteOffset, INIT_PACKET_SIZE);
  dv.setUint32(0, MULTIFD_MAGIC);
  dv.setUint32(4, MULTIFD_VERSION);
  out.set(uuid, 8);
  out[24] = id;
  return out;
}

/** Decodes the fields without judging them (inspect shows what was sent); fewer than 64 bytes is a ProtocolError. */
export function decodeInitPacket(buf: Uint8Array): InitPacket {
  if (buf.length < INIT_PACKET_SIZE)
    throw new ProtocolError('ERR_INIT_TRUNCATED', `init packet of ${buf.length} bytes received, expected ${INIT_PACKET_SIZE}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, INIT_PACKET_SIZE);
  return { magic: dv.getUint32(0), version: dv.getUint32(4), uuid: buf.slice(8, 24), id: buf[24]! };
}

export function uuidToString(u: Uint8Array): string {
  const h = Buffer.from(u).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function uuidFromString(s: string): Uint8Array {
  const h = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) throw new RangeError(`not a uuid: ${s}`);
  return new Uint8Array(Buffer.from(h, 'hex'));
}

/**
 * The receiver's checks, in QEMU's order (magic, version, uuid, id) but with
 * the id bound QEMU gets wrong: an id equal to the channel count is refused.
 * `where` names the connection (QEMU numbers channels by arrival).
 */
export function checkInitPacket(p: InitPacket, expect: { uuid: Uint8Array; channels: number }, where: string): void {
  if (p.magic !== MULTIFD_MAGIC) {
    throw new ProtocolError('ERR_INIT_MAGIC', `${where}: received packet magic ${hex(p.magic)}, expected ${hex(MULTIFD_MAGIC)}`);
  }
  if (p.version !== MULTIFD_VERSION) {
    throw new ProtocolError('ERR_INIT_VERSION', `${where}: received packet version ${p.version}, expected ${MULTIFD_VERSION}`);
  }
  if (Buffer.compare(Buffer.from(p.uuid), Buffer.from(expect.uuid)) !== 0) {
    throw new ProtocolError(
      'ERR_INIT_UUID',
      `${where}: received uuid '${uuidToString(p.uuid)}', expected uuid '${uuidToString(expect.uuid)}' for channel ${p.id}`,
    );
  }
  if (p.id >= expect.channels) {
    throw new ProtocolError(
      'ERR_INIT_CHANNEL_ID',
      `${where}: received channel id ${p.id}, expected less than ${expect.channels} (the channel count)`,
    );
  }
}
