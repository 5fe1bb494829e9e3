/**
 * The migration file's own structures (docs/file-format.md): the header with
 * the ramblock table and parameters, the stream layout's record framing, and
 * the trailer with packet counts and per-ramblock digests. All integers are
 * big-endian; header, records and trailer each carry a CRC-32C. Offsets are
 * relative to the migration's start (byte N of `file:PATH,offset=N`).
 *
 * A file is untrusted input: every decoder here checks what it reads and
 * throws an error naming the byte offset and received vs expected values.
 */
import { ProtocolError, VerifyError } from '../errors.js';
import { native } from '../native/load.js';
import { MAX_CHANNELS, MAX_RAMBLOCKS } from '../control/protocol.js';
import { MULTIFD_PACKET_SIZE, PAGE_SIZES, RAMBLOCK_NAME_MAX, hex } from '../wire/constants.js';
import { MAX_BASE_PAGES, MAX_BASES } from '../control/delta.js';
import { uuidFromString, uuidToString } from '../wire/init-packet.js';

export const FILE_MAGIC = 0x4d464446; // 'MFDF'
/** A file without delta references: the first version, byte for byte. */
export const FILE_VERSION = 1;
/** A file with delta references (src/delta/at-rest.ts): the parameters name the bases; the trailer counts referenced pages. */
export const FILE_VERSION_DELTA = 2;
export const RECORD_MAGIC = 0x4d464452; // 'MFDR'
export const TRAILER_MAGIC = 0x4d464454; // 'MFDT'
export const END_MAGIC = 0x4d464445; // 'MFDE'

/** Alignment of the data start, the trailer and every O_DIRECT write. */
export const FILE_ALIGN = 4096;
/** Alignment of a mapped-ram region (absolute file offset), as QEMU's MAPPED_RAM_FILE_OFFSET_ALIGNMENT. */
export const REGION_ALIGN = 1 << 20;

/** Fixed part of the header, before the parameters. */
export const HEADER_FIXED_SIZE = 64;
/** Largest header accepted (4096 ramblocks with 255-byte names fit). */
export const HEADER_MAX = 2 << 20;
/** Stream record: magic, channel, 3 zero bytes, packet length; the packet; CRC-32C. */
export const RECORD_HEADER_SIZE = 12;
export const RECORD_CRC_SIZE = 4;
/** The last 16 bytes of the file: end magic, trailer length, zero, CRC-32C of the trailer. */
export const TAIL_SIZE = 16;
/** Trailer body before the per-channel counts. */
const TRAILER_FIXED_SIZE = 40;
/** Per ramblock: digest, normal and zero pages; version 2 adds the referenced pages. */
const trailerBlockEntry = (version: number): number => (version === FILE_VERSION_DELTA ? 32 : 24);
/** Largest trailer accepted (255 channels and 4096 ramblocks need about 100 KiB). */
export const TRAILER_MAX = 1 << 20;

export type Layout = 'stream' | 'mapped-ram';
const LAYOUT_CODES: Record<Layout, number> = { stream: 1, 'mapped-ram': 2 };

export interface FileRamblock {
  name: string;
  size: number;
  /** mapped-ram: where the block's bitmap of present pages starts (0 in the stream layout). */
  bitmapOffset: number;
  /** mapped-ram: where the block's pages start; page i at regionOffset + i x pageSize (0 in the stream layout). */
  regionOffset: number;
}

/** A base a delta file refers to (version 2): what the restore must be given, and how it is recognised. */
export interface FileBase {
  /** How references and the restore's --base NAME=PATH name it: 1..255 bytes of UTF-8, a file name (no '/', NUL, not . or ..). */
  name: string;
  /** Where the save read it (shown, never opened by a restore). */
  path: string;
  size: number;
  /** SHA-256 of the whole file, 64 hex digits. */
  sha256: string;
}

/** The parameters' `delta` (version 2): the bases, in the order reference packets number them. */
export interface DeltaManifest {
  bases: FileBase[];
}

export interface FileParameters {
  /** The method's name (QEMU's multifd-compression value). */
  compression: string;
  methodParams: Record<string, number | string | boolean>;
  zeroPageDetection: string;
  /** Digest algorithm of the trailer's digests (src/digest.ts). */
  digest: string;
  /** Version 2 only: the file holds delta reference packets against these bases. */
  delta?: DeltaManifest;
}

/** Most bytes of a base's recorded path. */
export const BASE_PATH_MAX = 4096;

export interface FileHeader extends FileParameters {
  /** FILE_VERSION, or FILE_VERSION_DELTA when `delta` is there. */
  version: number;
  layout: Layout;
  pageSize: number;
  packetSize: number;
  channels: number;
  /** The flags' compression bits on every packet with pages. */
  methodFlag: number;
  uuid: string;
  /** stream: the first record; mapped-ram: the first bitmap. A multiple of 4096. */
  dataOffset: number;
  ramblocks: FileRamblock[];
}

export interface FileTrailer {
  uuid: string;
  /** stream: the end of the last record; mapped-ram: the end of the last region. */
  dataEnd: number;
  /** stream: records (SYNC included) per channel; mapped-ram: packets of pages per channel. */
  packets: number[];
  /** referencedPages: version 2 only (pages restored from references); normal + zero + referenced = the block's pages. */
  blocks: { digest: string; normalPages: number; zeroPages: number; referencedPages?: number }[];
}

export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Bytes of a block's bitmap of present pages: one bit per page, in 64-bit words (QEMU's BITS_TO_LONGS). */
export const bitmapBytes = (size: number, pageSize: number): number => Math.ceil(Math.ceil(size / pageSize) / 64) * 8;

function fileError(code: string, message: string): ProtocolError {
  return new ProtocolError(code, `migration file: ${message}`);
}

/** A file that ends before its trailer: the save did not finish. */
export function incomplete(why: string): VerifyError {
  return new VerifyError('ERR_FILE_INCOMPLETE', `incomplete migration file: ${why}`);
}

function writeU64(dv: DataView, at: number, v: number): void {
  dv.setUint32(at, Math.floor(v / 2 ** 32));
  dv.setUint32(at + 4, v >>> 0);
}

function readU64(dv: DataView, at: number): number {
  const hi = dv.getUint32(at);
  return hi >= 0x200000 ? Infinity : hi * 2 ** 32 + dv.getUint32(at + 4);
}

/** Encodes the whole header (its exact length; the caller pads to dataOffset). */
export function encodeHeader(h: FileHeader): Uint8Array {
  const params = Buffer.from(
    JSON.stringify({
      compression: h.compression,
      methodParams: h.methodParams,
      zeroPageDetection: h.zeroPageDetection,
      digest: h.digest,
      ...(h.delta ? { delta: h.delta } : {}),
    } satisfies FileParameters),
    'utf8',
  );
  const names = h.ramblocks.map((b) => Buffer.from(b.name, 'utf8'));
  const length = headerLength(
    params.length,
    names.map((n) => n.length),
  );
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, FILE_MAGIC);
  dv.setUint32(4, h.delta ? FILE_VERSION_DELTA : FILE_VERSION);
  dv.setUint32(8, length);
  dv.setUint32(12, LAYOUT_CODES[h.layout]);
  dv.setUint32(16, h.pageSize);
  dv.setUint32(20, h.packetSize);
  dv.setUint32(24, h.channels);
  dv.setUint32(28, h.methodFlag);
  out.set(uuidFromString(h.uuid), 32);
  writeU64(dv, 48, h.dataOffset);
  dv.setUint32(56, h.ramblocks.length);
  dv.setUint32(60, params.length);
  out.set(params, HEADER_FIXED_SIZE);
  let at = HEADER_FIXED_SIZE + params.length;
  h.ramblocks.forEach((b, i) => {
    const name = names[i]!;
    out[at] = name.length;
    out.set(name, at + 1);
    at += 1 + name.length;
    writeU64(dv, at, b.size);
    writeU64(dv, at + 8, b.bitmapOffset);
    writeU64(dv, at + 16, b.regionOffset);
    at += 24;
  });
  dv.setUint32(at, native.crc32c(out.subarray(0, at)));
  return out;
}

/** Header length for these parameters and name lengths (the offsets in the table do not change it). */
export function headerLength(paramsLength: number, nameLengths: number[]): number {
  return HEADER_FIXED_SIZE + paramsLength + nameLengths.reduce((a, n) => a + 1 + n + 24, 0) + 4;
}

/** The header's length field, once its first 64 bytes are known to be a header (magic and version checked). */
export function peekHeader(fixed: Uint8Array, base: number): number {
  const dv = new DataView(fixed.buffer, fixed.byteOffset, HEADER_FIXED_SIZE);
  const magic = dv.getUint32(0);
  if (magic !== FILE_MAGIC) {
    throw fileError(
      'ERR_FILE_MAGIC',
      `not an mfd migration file: bytes ${base}..${base + 3} are ${hex(magic)}, expected ${hex(FILE_MAGIC)} ('MFDF')`,
    );
  }
  const version = dv.getUint32(4);
  if (version !== FILE_VERSION && version !== FILE_VERSION_DELTA)
    throw fileError('ERR_FILE_VERSION', `header at byte ${base}: version ${version}, expected ${FILE_VERSION} or ${FILE_VERSION_DELTA}`);
  const length = dv.getUint32(8);
  if (length < HEADER_FIXED_SIZE + 4 || length > HEADER_MAX) {
    throw fileError('ERR_FILE_HEADER', `header at byte ${base}: length ${length}, expected ${HEADER_FIXED_SIZE + 4}..${HEADER_MAX}`);
  }
  return length;
}

/**
 * Decodes and checks a whole header (`buf` holds exactly its length bytes,
 * from byte `base` of the file): checksum first, then every field.
 */
export function decodeHeader(buf: Uint8Array, base: number): FileHeader {
  const length = peekHeader(buf, base);
  if (buf.length !== length) throw fileError('ERR_FILE_HEADER', `header at byte ${base}: ${buf.length} bytes read, expected ${length}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, length);
  const stored = dv.getUint32(length - 4);
  const computed = native.crc32c(buf.subarray(0, length - 4));
  if (stored !== computed) {
    throw fileError(
      'ERR_FILE_HEADER_CRC',
      `header checksum (byte ${base + length - 4}) received ${hex(stored)}, computed ${hex(computed)} over bytes ${base}..${base + length - 5}: the header is corrupt`,
    );
  }
  const at = (rel: number): string => `header field at byte ${base + rel}`;
  const code = dv.getUint32(12);
  const layout = (Object.keys(LAYOUT_CODES) as Layout[]).find((k) => LAYOUT_CODES[k] === code);
  if (!layout) throw fileError('ERR_FILE_HEADER', `${at(12)}: layout ${code}, expected 1 (stream) or 2 (mapped-ram)`);
  const pageSize = dv.getUint32(16);
  if (!(PAGE_SIZES as readonly number[]).includes(pageSize))
    throw fileError('ERR_FILE_HEADER', `${at(16)}: page size ${pageSize}, expected one of ${PAGE_SIZES.join(', ')}`);
  const packetSize = dv.getUint32(20);
  if (packetSize !== MULTIFD_PACKET_SIZE)
    throw fileError('ERR_FILE_HEADER', `${at(20)}: packet size ${packetSize}, expected ${MULTIFD_PACKET_SIZE}`);
  const channels = dv.getUint32(24);
  if (channels < 1 || channels > MAX_CHANNELS)
    throw fileError('ERR_FILE_HEADER', `${at(24)}: ${channels} channels, expected 1..${MAX_CHANNELS}`);
  const methodFlag = dv.getUint32(28);
  const uuid = uuidToString(buf.subarray(32, 48));
  const dataOffset = readU64(dv, 48);
  const count = dv.getUint32(56);
  if (count > MAX_RAMBLOCKS) throw fileError('ERR_FILE_HEADER', `${at(56)}: ${count} ramblocks, expected at most ${MAX_RAMBLOCKS}`);
  const paramsLength = dv.getUint32(60);
  if (paramsLength > length - HEADER_FIXED_SIZE - 4)
    throw fileError(
      'ERR_FILE_HEADER',
      `${at(60)}: parameters of ${paramsLength} bytes, but the header has ${length - HEADER_FIXED_SIZE - 4} after its fixed part`,
    );
  const version = dv.getUint32(4);
  const params = decodeParameters(
    buf.subarray(HEADER_FIXED_SIZE, HEADER_FIXED_SIZE + paramsLength),
    base + HEADER_FIXED_SIZE,
    version,
    pageSize,
  );
  const ramblocks: FileRamblock[] = [];
  const seen = new Set<string>();
  let p = HEADER_FIXED_SIZE + paramsLength;
  for (let i = 0; i < count; i++) {
    const n = p < length - 4 ? buf[p]! : 0;
    if (p + 1 + n + 24 > length - 4)
      throw fileError('ERR_FILE_HEADER', `ramblock ${i} at byte ${base + p}: runs past the end of the header (byte ${base + length - 4})`);
    if (n === 0) throw fileError('ERR_FILE_HEADER', `ramblock ${i} at byte ${base + p}: empty name`);
    const nameBytes = buf.subarray(p + 1, p + 1 + n);
    const name = Buffer.from(nameBytes).toString('utf8');
    if (nameBytes.includes(0) || Buffer.byteLength(name, 'utf8') !== n || n > RAMBLOCK_NAME_MAX) {
      throw fileError(
        'ERR_FILE_HEADER',
        `ramblock ${i} at byte ${base + p}: name is not 1..${RAMBLOCK_NAME_MAX} bytes of UTF-8 without NUL`,
      );
    }
    if (seen.has(name)) throw fileError('ERR_FILE_HEADER', `ramblock ${i} at byte ${base + p}: name "${name}" appears twice`);
    seen.add(name);
    p += 1 + n;
    const size = readU64(dv, p);
    const bitmapOffset = readU64(dv, p + 8);
    const regionOffset = readU64(dv, p + 16);
    if (!Number.isSafeInteger(size) || !Number.isSafeInteger(bitmapOffset) || !Number.isSafeInteger(regionOffset)) {
      throw fileError('ERR_FILE_HEADER', `ramblock "${name}" at byte ${base + p}: size or offsets at or above 2^53`);
    }
    ramblocks.push({ name, size, bitmapOffset, regionOffset });
    p += 24;
  }
  if (p !== length - 4)
    throw fileError(
      'ERR_FILE_HEADER',
      `header at byte ${base}: ramblock table ends at byte ${base + p}, expected ${base + length - 4} (the checksum)`,
    );
  if (!Number.isSafeInteger(dataOffset) || dataOffset % FILE_ALIGN !== 0 || dataOffset < alignUp(length, FILE_ALIGN)) {
    throw fileError(
      'ERR_FILE_HEADER',
      `${at(48)}: data offset ${dataOffset}, expected a multiple of ${FILE_ALIGN} from ${alignUp(length, FILE_ALIGN)} on (after the header)`,
    );
  }
  if (params.delta && layout !== 'stream')
    throw fileError(
      'ERR_FILE_HEADER',
      `${at(12)}: a version ${version} (delta) file in the ${layout} layout; delta files are stream files`,
    );
  return { version, layout, pageSize, packetSize, channels, methodFlag, uuid, dataOffset, ramblocks, ...params };
}

function decodeParameters(bytes: Uint8Array, at: number, version: number, pageSize: number): FileParameters {
  const bad = (why: string): never => {
    throw fileError('ERR_FILE_HEADER', `parameters at byte ${at}: ${why}`);
  };
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    bad(`${bytes.length} bytes are not valid JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('not a JSON object');
  const o = v as Record<string, unknown>;
  const str = (k: string): string =>
    typeof o[k] === 'string' && (o[k] as string).length <= 64
      ? (o[k] as string)
      : bad(`${k} received ${JSON.stringify(o[k])?.slice(0, 40)}, expected a string`);
  const mp = o.methodParams;
  if (typeof mp !== 'object' || mp === null || Array.isArray(mp)) return bad('methodParams is not an object');
  const methodParams: Record<string, number | string | boolean> = {};
  for (const [k, p] of Object.entries(mp)) {
    if (typeof p !== 'number' && typeof p !== 'string' && typeof p !== 'boolean') bad(`methodParams.${k} has an unsupported type`);
    methodParams[k] = p as number | string | boolean;
  }
  const params: FileParameters = {
    compression: str('compression'),
    methodParams,
    zeroPageDetection: str('zeroPageDetection'),
    digest: str('digest'),
  };
  if (version === FILE_VERSION_DELTA) {
    if (o.delta === undefined) bad(`no delta (the bases), which a version ${FILE_VERSION_DELTA} file has`);
    params.delta = decodeManifest(o.delta, pageSize, bad);
  } else if (o.delta !== undefined) bad(`delta in a version ${version} file (delta files are version ${FILE_VERSION_DELTA})`);
  return params;
}

/** Why a base name cannot be one, or null: a file name of 1..255 bytes of UTF-8 (so --base-dir can find it). */
export function badBaseName(name: string): string | null {
  const n = Buffer.byteLength(name, 'utf8');
  if (n < 1 || n > 255 || name.includes('\0') || name.includes('/') || name === '.' || name === '..')
    return `base name "${name.slice(0, 64)}" is not a file name of 1..255 bytes (no "/" or NUL, not . or ..)`;
  return null;
}

/** The parameters' `delta`: every base named once, with a size, a path and a SHA-256; their pages within what references index. */
function decodeManifest(v: unknown, pageSize: number, bad: (why: string) => never): DeltaManifest {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('delta is not an object');
  const list = (v as Record<string, unknown>).bases;
  if (!Array.isArray(list) || list.length > MAX_BASES) return bad(`delta.bases is not a list of at most ${MAX_BASES} bases`);
  const seen = new Set<string>();
  let pages = 0;
  const bases = list.map((b: unknown, i: number): FileBase => {
    const where = `delta.bases[${i}]`;
    if (typeof b !== 'object' || b === null || Array.isArray(b)) return bad(`${where} is not an object`);
    const { name, path, size, sha256 } = b as Record<string, unknown>;
    if (typeof name !== 'string') return bad(`${where}.name is not a string`);
    const why = badBaseName(name);
    if (why) bad(`${where}: ${why}`);
    if (seen.has(name)) bad(`${where}: base "${name}" appears twice`);
    seen.add(name);
    if (typeof path !== 'string' || Buffer.byteLength(path, 'utf8') > BASE_PATH_MAX)
      bad(`${where}.path is not a string of at most ${BASE_PATH_MAX} bytes`);
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)
      bad(`${where}.size received ${JSON.stringify(size)?.slice(0, 40)}, expected a byte count`);
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256))
      bad(`${where}.sha256 received ${JSON.stringify(sha256)?.slice(0, 80)}, expected 64 lowercase hex digits`);
    pages += Math.ceil((size as number) / pageSize);
    if (pages > MAX_BASE_PAGES) bad(`delta.bases hold more than ${MAX_BASE_PAGES} pages (what references index)`);
    return { name, path: path as string, size: size as number, sha256: sha256 as string };
  });
  return { bases };
}

/** Encodes the trailer block: body, zero padding and the 16-byte tail; a multiple of 4096 bytes. */
export function encodeTrailer(t: FileTrailer, version: number = FILE_VERSION): Uint8Array {
  const entry = trailerBlockEntry(version);
  const body = TRAILER_FIXED_SIZE + 8 * t.packets.length + entry * t.blocks.length;
  const length = alignUp(body + TAIL_SIZE, FILE_ALIGN);
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, TRAILER_MAGIC);
  dv.setUint32(4, version);
  out.set(uuidFromString(t.uuid), 8);
  writeU64(dv, 24, t.dataEnd);
  dv.setUint32(32, t.packets.length);
  dv.setUint32(36, t.blocks.length);
  let at = TRAILER_FIXED_SIZE;
  for (const n of t.packets) {
    writeU64(dv, at, n);
    at += 8;
  }
  for (const b of t.blocks) {
    out.set(Buffer.from(b.digest, 'hex'), at);
    writeU64(dv, at + 8, b.normalPages);
    writeU64(dv, at + 16, b.zeroPages);
    if (entry > 24) writeU64(dv, at + 24, b.referencedPages ?? 0);
    at += entry;
  }
  dv.setUint32(length - 16, END_MAGIC);
  dv.setUint32(length - 12, length);
  dv.setUint32(length - 4, native.crc32c(out.subarray(0, length - 4)));
  return out;
}

/**
 * The trailer's length from the file's last 16 bytes (`fileEnd` is the byte
 * after them); a file without the end magic did not finish saving.
 */
export function decodeTail(tail: Uint8Array, fileEnd: number, room: number): number {
  const dv = new DataView(tail.buffer, tail.byteOffset, TAIL_SIZE);
  const magic = dv.getUint32(0);
  if (magic !== END_MAGIC) {
    throw incomplete(
      `no trailer at its end (bytes ${fileEnd - TAIL_SIZE}..${fileEnd - TAIL_SIZE + 3} are ${hex(magic)}, expected ${hex(END_MAGIC)} 'MFDE'): the save did not finish, or the file was cut short`,
    );
  }
  const length = dv.getUint32(4);
  if (length < FILE_ALIGN || length % FILE_ALIGN !== 0 || length > Math.min(TRAILER_MAX, room)) {
    throw fileError(
      'ERR_FILE_TRAILER',
      `trailer length (byte ${fileEnd - 12}) ${length}, expected a multiple of ${FILE_ALIGN} up to ${Math.min(TRAILER_MAX, room)}`,
    );
  }
  return length;
}

/** Decodes and checks the trailer block read from byte `base` (checksum first), against the header. */
export function decodeTrailer(buf: Uint8Array, base: number, header: FileHeader): FileTrailer {
  const length = buf.length;
  const dv = new DataView(buf.buffer, buf.byteOffset, length);
  const stored = dv.getUint32(length - 4);
  const computed = native.crc32c(buf.subarray(0, length - 4));
  if (stored !== computed) {
    throw fileError(
      'ERR_FILE_TRAILER_CRC',
      `trailer checksum (byte ${base + length - 4}) received ${hex(stored)}, computed ${hex(computed)} over bytes ${base}..${base + length - 5}: the trailer is corrupt`,
    );
  }
  const bad = (rel: number, why: string): never => {
    throw fileError('ERR_FILE_TRAILER', `trailer field at byte ${base + rel}: ${why}`);
  };
  if (dv.getUint32(0) !== TRAILER_MAGIC) bad(0, `magic ${hex(dv.getUint32(0))}, expected ${hex(TRAILER_MAGIC)} ('MFDT')`);
  if (dv.getUint32(4) !== header.version) bad(4, `version ${dv.getUint32(4)}, expected ${header.version} (the header's)`);
  const entry = trailerBlockEntry(header.version);
  const uuid = uuidToString(buf.subarray(8, 24));
  if (uuid !== header.uuid) bad(8, `uuid ${uuid}, expected the header's ${header.uuid} (a trailer from another save)`);
  const dataEnd = readU64(dv, 24);
  const channels = dv.getUint32(32);
  if (channels !== header.channels) bad(32, `${channels} channels, expected ${header.channels} (the header's)`);
  const count = dv.getUint32(36);
  if (count !== header.ramblocks.length) bad(36, `${count} ramblocks, expected ${header.ramblocks.length} (the header's)`);
  if (TRAILER_FIXED_SIZE + 8 * channels + entry * count + TAIL_SIZE > length) bad(32, `counts do not fit in its ${length} bytes`);
  let at = TRAILER_FIXED_SIZE;
  const packets: number[] = [];
  for (let i = 0; i < channels; i++, at += 8) {
    const n = readU64(dv, at);
    if (!Number.isSafeInteger(n)) bad(at, `packet count of channel ${i} at or above 2^53`);
    packets.push(n);
  }
  const blocks: FileTrailer['blocks'] = [];
  for (let i = 0; i < count; i++, at += entry) {
    const pages = Math.ceil(header.ramblocks[i]!.size / header.pageSize);
    const normalPages = readU64(dv, at + 8);
    const zeroPages = readU64(dv, at + 16);
    const referencedPages = entry > 24 ? readU64(dv, at + 24) : 0;
    if (normalPages + zeroPages + referencedPages !== pages)
      bad(
        at + 8,
        `ram block "${header.ramblocks[i]!.name}": ${normalPages} normal + ${zeroPages} zero${entry > 24 ? ` + ${referencedPages} referenced` : ''} pages, expected ${pages} in all`,
      );
    const digest = Buffer.from(buf.subarray(at, at + 8)).toString('hex');
    blocks.push(entry > 24 ? { digest, normalPages, zeroPages, referencedPages } : { digest, normalPages, zeroPages });
  }
  return { uuid, dataEnd, packets, blocks };
}

/** The 12 bytes before a stream record's packet: magic, channel, zero, packet length. */
export function encodeRecordHeader(out: Uint8Array, channel: number, packetLength: number): Uint8Array {
  const dv = new DataView(out.buffer, out.byteOffset, RECORD_HEADER_SIZE);
  dv.setUint32(0, RECORD_MAGIC);
  dv.setUint32(4, channel << 24);
  dv.setUint32(8, packetLength);
  return out;
}

export interface RecordHeader {
  channel: number;
  packetLength: number;
}

/** Checks a record's first 12 bytes (at relative byte `at`, absolute `abs`). */
export function decodeRecordHeader(b: Uint8Array, abs: number, channels: number, maxPacket: number): RecordHeader {
  const dv = new DataView(b.buffer, b.byteOffset, RECORD_HEADER_SIZE);
  const magic = dv.getUint32(0);
  if (magic !== RECORD_MAGIC)
    throw fileError('ERR_FILE_RECORD', `record at byte ${abs}: magic ${hex(magic)}, expected ${hex(RECORD_MAGIC)} ('MFDR')`);
  const channel = b[4]!;
  if (channel >= channels)
    throw fileError(
      'ERR_FILE_RECORD',
      `record at byte ${abs}: channel ${channel}, expected less than ${channels} (the header's channel count)`,
    );
  if (b[5] !== 0 || b[6] !== 0 || b[7] !== 0)
    throw fileError('ERR_FILE_RECORD', `record at byte ${abs}: reserved bytes ${abs + 5}..${abs + 7} are not zero`);
  const packetLength = dv.getUint32(8);
  if (packetLength > maxPacket)
    throw fileError('ERR_FILE_RECORD', `record at byte ${abs}: packet of ${packetLength} bytes, expected at most ${maxPacket}`);
  return { channel, packetLength };
}

export function recordCrcError(abs: number, channel: number, stored: number, computed: number, length: number): ProtocolError {
  return fileError(
    'ERR_FILE_RECORD_CRC',
    `record at byte ${abs} (channel ${channel}, ${length} bytes): checksum received ${hex(stored)}, computed ${hex(computed)}: the record is corrupt`,
  );
}

export { fileError };
