/**
 * QEMU multifd wire constants (migration/multifd.h). All multi-byte integers
 * on the wire are big-endian; see docs/wire-format.md.
 */
export const MULTIFD_MAGIC = 0x11223344;
export const MULTIFD_VERSION = 1;
/** Payload capacity of one RAM packet: 512 KiB in every QEMU version. */
export const MULTIFD_PACKET_SIZE = 512 * 1024;
/** MultiFDInit_t: magic, version, uuid[16], id, unused. */
export const INIT_PACKET_SIZE = 64;
/** Fixed part of MultiFDPacket_t before offset[]. */
export const PACKET_HEADER_FIXED_SIZE = 320;
export const RAMBLOCK_NAME_FIELD = 256;
/** Longest ramblock name: the 256-byte field keeps a terminating NUL. */
export const RAMBLOCK_NAME_MAX = 255;

export const MULTIFD_FLAG_SYNC = 0x01;
/** Compression field, bits 1-5 (QEMU 9.2+). */
export const MULTIFD_FLAG_COMPRESSION_MASK = 0x3e;
export const MULTIFD_FLAG_NOCOMP = 0x00;
export const MULTIFD_FLAG_ZLIB = 0x02;
export const MULTIFD_FLAG_ZSTD = 0x04;
export const MULTIFD_FLAG_QPL = 0x08;
export const MULTIFD_FLAG_UADK = 0x10;
export const MULTIFD_FLAG_QATZIP = 0x20;
/**
 * mfd's lz4 extension: every compression bit set, a value no QEMU method has
 * (each QEMU method is one bit), so a QEMU receiver refuses it as a flag mismatch.
 */
export const MFD_FLAG_LZ4 = 0x3e;
/** QEMU 10.0+ device-state packets; mfd neither sends nor accepts them (inspect lists them). */
export const MULTIFD_FLAG_DEVICE_STATE = 0x40;
/** Every flag bit some QEMU version defines: SYNC, the compression field, DEVICE_STATE. */
export const MULTIFD_DEFINED_FLAGS = MULTIFD_FLAG_SYNC | MULTIFD_FLAG_COMPRESSION_MASK | MULTIFD_FLAG_DEVICE_STATE;

export const PAGE_SIZES = [4096, 16384, 65536] as const;
export type PageSize = (typeof PAGE_SIZES)[number];
export const DEFAULT_PAGE_SIZE: PageSize = 4096;

/** Pages per packet: 128 for 4 KiB pages, 32 for 16 KiB, 8 for 64 KiB. */
export function pageCount(pageSize: number): number {
  return MULTIFD_PACKET_SIZE / pageSize;
}

/** On-wire RAM packet header length: 320 + 8 x pages per packet (1344 for 4 KiB pages). */
export function packetHeaderSize(pageSize: number): number {
  return PACKET_HEADER_FIXED_SIZE + 8 * pageCount(pageSize);
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
