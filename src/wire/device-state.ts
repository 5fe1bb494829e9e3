/**
 * QEMU 10.0's device-state packet (MULTIFD_FLAG_DEVICE_STATE, 0x40: VFIO
 * device state over multifd): the common 12 bytes (magic, version, flags),
 * a 256-byte NUL-terminated idstr, a BE u32 instance_id and a BE u32
 * next_packet_size, then that many bytes of the device's opaque state. No
 * packet_num. See ../shared reference qemu-multifd-wire.md, "Device-state packet".
 */
import { ProtocolError } from '../errors.js';
import { MULTIFD_FLAG_COMPRESSION_MASK, MULTIFD_FLAG_DEVICE_STATE, MULTIFD_FLAG_SYNC, hex } from './constants.js';
import { checkFlagBits, checkPacketCommon } from './packet.js';

/** Common header (12) + idstr (256) + instance_id (4) + next_packet_size (4). */
export const DEVICE_STATE_HEADER_SIZE = 276;
const IDSTR_FIELD = 256;

export interface DeviceStateHeader {
  magic: number;
  version: number;
  flags: number;
  /** The idstr up to its first NUL (all 256 bytes when there is none). */
  idstr: Uint8Array;
  idstrTerminated: boolean;
  instanceId: number;
  /** Length of the opaque state that follows. */
  nextPacketSize: number;
}

/** Decodes a device-state header without judging it; fewer than 276 bytes is a ProtocolError. */
export function decodeDeviceStateHeader(buf: Uint8Array): DeviceStateHeader {
  if (buf.length < DEVICE_STATE_HEADER_SIZE) {
    throw new ProtocolError(
      'ERR_PACKET_TRUNCATED',
      `device-state packet header of ${buf.length} bytes received, expected ${DEVICE_STATE_HEADER_SIZE}`,
    );
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, DEVICE_STATE_HEADER_SIZE);
  const field = buf.subarray(12, 12 + IDSTR_FIELD);
  const nul = field.indexOf(0);
  return {
    magic: dv.getUint32(0),
    version: dv.getUint32(4),
    flags: dv.getUint32(8),
    idstr: field.subarray(0, nul === -1 ? IDSTR_FIELD : nul),
    idstrTerminated: nul !== -1,
    instanceId: dv.getUint32(268),
    nextPacketSize: dv.getUint32(272),
  };
}

/**
 * The checks of a device-state header, as QEMU 10 makes them (an idstr
 * ending in NUL, no SYNC flag, a state of at least one byte) and the ones
 * it misses (flag bits no QEMU version defines, compression bits: a packet
 * kind no QEMU version defines, whose state cannot be read). Throws a
 * ProtocolError naming the channel, received vs expected.
 */
export function checkDeviceStateHeader(d: DeviceStateHeader, channel: number): void {
  const place = { channel };
  checkPacketCommon(d, channel);
  checkFlagBits(d.flags, hex(MULTIFD_FLAG_DEVICE_STATE), place);
  const kind = d.flags & MULTIFD_FLAG_COMPRESSION_MASK;
  if (kind) {
    throw new ProtocolError(
      'ERR_PACKET_FLAGS',
      `device-state packet with compression bits ${hex(kind)} (flags ${hex(d.flags)}): no QEMU version defines that packet kind; its state cannot be read`,
      place,
    );
  }
  if (d.flags & MULTIFD_FLAG_SYNC)
    throw new ProtocolError(
      'ERR_PACKET_FLAGS',
      `device-state packet with the SYNC flag (flags ${hex(d.flags)}), which QEMU refuses`,
      place,
    );
  if (!d.idstrTerminated)
    throw new ProtocolError('ERR_PACKET_IDSTR', `device-state packet idstr is not NUL-terminated within ${IDSTR_FIELD} bytes`, place);
  if (d.nextPacketSize === 0)
    throw new ProtocolError(
      'ERR_PACKET_SIZE',
      'empty device-state packet (next_packet_size received 0, expected at least 1), which QEMU refuses',
      place,
    );
}
