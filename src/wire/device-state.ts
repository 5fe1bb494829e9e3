/**
 * QEMU 10.0's device-state packet (MULTIFD_FLAG_DEVICE_STATE, 0x40: VFIO
 * device state over multifd): the common 12 bytes (magic, version, flags),
 * a 256-byte NUL-terminated idstr, a BE u32 instance_id and a BE u32
 * next_packet_size, then that many bytes of the device's opaque state. No
 * packet_num. See ../shared reference qemu-multifd-wire.md, "Device-state packet".
 */
import { ProtocolError } from '../errors.js';

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
