/**
 * Constants and encoders of QEMU's main migration channel (the "QEVM" stream,
 * migration/savevm.c and migration/ram.c), as far as mfd reads and writes it:
 * header, configuration section, the RAM section's records. See docs/qemu-peer.md.
 */
export const QEMU_VM_FILE_MAGIC = 0x5145564d; // "QEVM"
export const QEMU_VM_FILE_VERSION = 3;

/** Section types (the byte before each section). */
export const QEMU_VM_EOF = 0x00;
export const QEMU_VM_SECTION_START = 0x01;
export const QEMU_VM_SECTION_PART = 0x02;
export const QEMU_VM_SECTION_END = 0x03;
export const QEMU_VM_SECTION_FULL = 0x04;
export const QEMU_VM_SUBSECTION = 0x05;
export const QEMU_VM_VMDESCRIPTION = 0x06;
export const QEMU_VM_CONFIGURATION = 0x07;
export const QEMU_VM_COMMAND = 0x08;
export const QEMU_VM_SECTION_FOOTER = 0x7e;

/** RAM record flags: the low bits of each record's be64 (offset | flags). */
export const RAM_SAVE_FLAG_ZERO = 0x02;
export const RAM_SAVE_FLAG_MEM_SIZE = 0x04;
export const RAM_SAVE_FLAG_PAGE = 0x08;
export const RAM_SAVE_FLAG_EOS = 0x10;
export const RAM_SAVE_FLAG_CONTINUE = 0x20;
export const RAM_SAVE_FLAG_XBZRLE = 0x40;
export const RAM_SAVE_FLAG_HOOK = 0x80;
export const RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100;
export const RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200;
/** The flag bits of a record (QEMU masks with ~TARGET_PAGE_MASK; 4 KiB target pages). */
export const RAM_FLAGS_MASK = 0xfff;

/** The RAM section's idstr and the version QEMU 7.2..10.x save it with. */
export const RAM_IDSTR = 'ram';

/** QEMU_VM_COMMAND's be16 cmd: the one mfd accepts (QEMU 10.0+; see main-channel.ts). */
export const MIG_CMD_SWITCHOVER_START = 11;

/**
 * Commands (QEMU_VM_COMMAND's be16 cmd, migration/savevm.c) by name, with why mfd refuses each:
 * all but SWITCHOVER_START need an answer or a feature mfd does not have.
 */
export const MIG_CMDS: Record<number, { name: string; why?: string }> = {
  1: {
    name: 'OPEN_RETURN_PATH',
    why: 'the source opens a return path (capability return-path, which postcopy-ram and switchover-ack need) and waits for answers on it',
  },
  2: { name: 'PING', why: 'a return-path ping that waits for a PONG' },
  3: { name: 'POSTCOPY_ADVISE', why: 'postcopy (capability postcopy-ram): the destination would have to serve page faults' },
  4: { name: 'POSTCOPY_LISTEN', why: 'postcopy: the destination would have to serve page faults' },
  5: { name: 'POSTCOPY_RUN', why: 'postcopy: the destination would have to run the guest' },
  6: { name: 'POSTCOPY_RAM_DISCARD', why: 'postcopy: pages to discard before the destination runs' },
  7: { name: 'POSTCOPY_RESUME', why: 'postcopy recovery' },
  8: { name: 'PACKAGED', why: 'postcopy: device state packaged for a destination that runs the guest' },
  9: { name: 'RECV_BITMAP', why: 'postcopy recovery: the destination would have to send its received-page bitmap' },
  10: { name: 'ENABLE_COLO', why: 'COLO fault tolerance (capability x-colo)' },
  [MIG_CMD_SWITCHOVER_START]: { name: 'SWITCHOVER_START' },
};

/** Sync points between the main channel and the multifd channels. */
export type SyncMode =
  /** QEMU <= 8.0 (and older machine types): every RAM section ends with a multifd sync. */
  | 'section'
  /** QEMU 8.1+: a sync per pass over the dirty bitmap, marked by RAM_SAVE_FLAG_MULTIFD_FLUSH. */
  | 'round';

/** Growable big-endian byte builder for main-channel records. */
export class Writer {
  private buf = Buffer.allocUnsafe(4096);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(b, 0, 0, this.length);
    this.buf = b;
  }

  u8(v: number): this {
    this.room(1);
    this.buf[this.length++] = v;
    return this;
  }

  u16(v: number): this {
    this.room(2);
    this.buf.writeUInt16BE(v & 0xffff, this.length);
    this.length += 2;
    return this;
  }

  u32(v: number): this {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.length);
    this.length += 4;
    return this;
  }

  /** A be64 below 2^53. */
  u64(v: number): this {
    this.room(8);
    this.buf.writeUInt32BE(Math.floor(v / 2 ** 32), this.length);
    this.buf.writeUInt32BE(v >>> 0, this.length + 4);
    this.length += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
    return this;
  }

  /** u8 length + bytes (QEMU's idstr / block name encoding). */
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 255) throw new RangeError(`name longer than 255 bytes: ${s.slice(0, 40)}...`);
    return this.u8(b.length).bytes(b);
  }

  /** Takes what was written so far and starts empty. */
  take(): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.length));
    this.length = 0;
    return out;
  }
}
