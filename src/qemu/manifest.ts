/**
 * DIR/manifest.json of a migration received from QEMU (`mfd recv --qemu`), read
 * back by `mfd send --qemu`: what was seen on the wire and what is needed to
 * replay it (configuration section bytes, RAM section id, block list, uuid,
 * sync mode), with a digest of every file: crc32c-pages-v1 (src/digest.ts) of each
 * ramblock, computed as the pages are written (the replay checks it as it sends
 * them), and SHA-256 of the device state. A manifest of an earlier mfd has a
 * SHA-256 of every ramblock instead, checked before the replay sends anything.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { IoError, ProtocolError } from '../errors.js';
import type { SyncMode } from './format.js';
import { replaceFileSync } from '../io/no-follow.js';
import { DIGEST_ALGORITHM } from '../control/protocol.js';

export const MANIFEST_FILE = 'manifest.json';
export const DEVICE_STATE_FILE = 'device-state';
export const MANIFEST_FORMAT = 'mfd-qemu-migration';

export interface QemuManifest {
  format: typeof MANIFEST_FORMAT;
  version: 1;
  qemu: {
    /** QEMU does not put its version on the wire. */
    version: string | null;
    versionNote: string;
    machineType: string | null;
    fileVersion: number;
  };
  /** The configuration section as received (type byte included), hex. */
  configuration: string;
  ramSection: { sectionId: number; instance: number; version: number };
  syncMode: SyncMode;
  /** The source sent MIG_CMD_SWITCHOVER_START (QEMU 10.0+; absent in manifests of older mfd: false). */
  switchoverStart?: boolean;
  /** The capabilities the configuration section listed (QEMU 9.0+; absent in manifests of older mfd: none). */
  capabilities?: string[];
  /** Read from a QEMU migration file (recv --qemu --from file:), not a network migration. */
  file?: { path: string; offset: number; mappedRam: boolean };
  /** The uuid of the multifd init packets (the source's -uuid; zeros without one). */
  uuid: string;
  pageSize: number;
  multifd: boolean;
  channels: number;
  /** multifd-compression seen on the packets (null: no multifd). */
  method: string | null;
  /** digest: crc32c-pages-v1 of the file, hex (DIGEST_ALGORITHM); sha256 instead in manifests of earlier mfd. */
  ramblocks: { name: string; size: number; file: string; digest?: string; sha256?: string }[];
  /** vmDescription: the stream ended with QEMU's VM description (JSON), as it does by default. */
  deviceState: { file: string; size: number; sha256: string; vmDescription?: boolean };
  counts: Record<string, number>;
}

export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export function writeManifest(file: string, m: QemuManifest): void {
  replaceFileSync(`${file}.mfd-partial`, file, JSON.stringify(m, null, 2) + '\n');
}

/**
 * Reads and checks DIR/manifest.json and the files it lists: sizes; with `verify`, the SHA-256s
 * (the device state's; a ramblock's in a manifest of an earlier mfd). A ramblock's crc32c-pages-v1
 * digest is the reader's to check as it reads the pages (checkDigest).
 */
export async function readManifest(dir: string, verify: boolean): Promise<QemuManifest> {
  const file = path.join(dir, MANIFEST_FILE);
  let m: QemuManifest;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8')) as QemuManifest;
  } catch (e) {
    throw new IoError(
      'ERR_QEMU_MANIFEST',
      `cannot read ${file}: ${(e as Error).message} (a directory written by mfd recv --qemu has one)`,
      e,
    );
  }
  if (m.format !== MANIFEST_FORMAT || m.version !== 1)
    throw new ProtocolError(
      'ERR_QEMU_MANIFEST',
      `${file}: format "${m.format}" version ${m.version}, expected "${MANIFEST_FORMAT}" version 1`,
    );
  const files: { what: string; file: string; size: number; sha256?: string; digest?: string }[] = [
    ...m.ramblocks.map((b) => ({ what: `ramblock "${b.name}"`, file: b.file, size: b.size, sha256: b.sha256, digest: b.digest })),
    { what: 'device state', ...m.deviceState },
  ];
  for (const f of files) {
    const p = path.join(dir, path.basename(f.file));
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st) throw new IoError('ERR_ENOENT', `${f.what}: ${p} is missing`);
    if (st.size !== f.size)
      throw new ProtocolError('ERR_QEMU_MANIFEST', `${f.what}: ${p} has ${st.size} bytes, the manifest says ${f.size}`);
    if (f.sha256 === undefined && f.digest === undefined)
      throw new ProtocolError('ERR_QEMU_MANIFEST', `${file}: ${f.what} has neither a digest nor a sha256`);
    if (verify && f.sha256 !== undefined) {
      const got = await fileSha256(p);
      if (got !== f.sha256)
        throw new ProtocolError('ERR_QEMU_MANIFEST', `${f.what}: ${p} has SHA-256 ${got}, the manifest says ${f.sha256}`);
    }
  }
  return m;
}

/** Refuses ramblock `b` of the manifest read from `dir` when the pages read from its file have another crc32c-pages-v1 digest than the manifest's. */
export function checkDigest(dir: string, b: QemuManifest['ramblocks'][number], got: string): void {
  if (b.digest !== undefined && got !== b.digest)
    throw new ProtocolError(
      'ERR_QEMU_MANIFEST',
      `ramblock "${b.name}": ${path.join(dir, path.basename(b.file))} has digest ${got} (${DIGEST_ALGORITHM}), the manifest says ${b.digest}`,
    );
}

/** What a QEMU destination expects of the main channel, and where that choice came from. */
export interface ReplayShape {
  /** section: a multifd sync at every RAM section's end (QEMU's multifd-flush-after-each-section on); round: one per pass, marked by MULTIFD_FLUSH. */
  syncMode: SyncMode;
  /** Send MIG_CMD_SWITCHOVER_START before the RAM END section (QEMU's send-switchover-start). */
  switchoverStart: boolean;
  /**
   * Where zero pages go (QEMU's zero-page-detection): multifd = in the multifd packets' zero_pages
   * (QEMU 9.0+ receivers read it), legacy = ZERO records on the main channel (what a receiver of
   * 8.2 or older, or of an 8.2 or older machine type, needs: it ignores zero_pages).
   */
  zeroPageDetection: 'multifd' | 'legacy';
  /** Why, for the log and the stall hint. */
  why: string;
}

/** "pc-q35-7.2" -> [7, 2]; null for an unversioned machine type ("none", "microvm"). */
export function machineVersion(machine: string | null): [number, number] | null {
  const m = /-(\d+)\.(\d+)$/.exec(machine ?? '');
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/**
 * The shape a replay of `m` gives the stream. Neither choice can be read off the wire (the
 * destination answers nothing), so: the flags when given; else, for a versioned machine type, what
 * QEMU's compat properties give that type (the destination must run the same one: QEMU refuses
 * another): multifd-flush-after-each-section is on for 8.0 and older types (hw_compat_8_0),
 * send-switchover-start off for 9.2 and older (hw_compat_9_2); else (an unversioned type such as
 * -M none, whose shape depends on the destination's QEMU version) what the source did.
 */
export function replayShape(
  m: QemuManifest,
  flushAfterEachSection?: boolean,
  switchoverStart?: boolean,
  zeroPageDetection?: 'multifd' | 'legacy',
): ReplayShape {
  const v = machineVersion(m.qemu.machineType);
  const atLeast = (major: number, minor: number): boolean => v !== null && (v[0] > major || (v[0] === major && v[1] >= minor));
  const from = v ? `machine type ${m.qemu.machineType}` : `the source (machine type ${m.qemu.machineType ?? '?'} has no version)`;
  const syncMode: SyncMode =
    flushAfterEachSection !== undefined
      ? flushAfterEachSection
        ? 'section'
        : 'round'
      : v
        ? atLeast(8, 1)
          ? 'round'
          : 'section'
        : m.syncMode;
  const switchover = switchoverStart ?? (v ? atLeast(10, 0) : (m.switchoverStart ?? false));
  // hw_compat_8_2 forces legacy on 8.2 and older machine types. An unversioned one: as the source
  // did, but legacy for a destination older than 10.0 (no switchover-start), which may be one that
  // ignores zero_pages; legacy's ZERO records every version reads.
  const zpd =
    zeroPageDetection ??
    (v ? (atLeast(9, 0) ? 'multifd' : 'legacy') : (m.counts?.multifdZeroPages ?? 0) > 0 && switchover ? 'multifd' : 'legacy');
  const why = [
    `multifd-flush-after-each-section ${syncMode === 'section' ? 'on' : 'off'} (${flushAfterEachSection !== undefined ? 'flag' : from})`,
    `send-switchover-start ${switchover ? 'on' : 'off'} (${switchoverStart !== undefined ? 'flag' : from})`,
    `zero-page-detection ${zpd} (${zeroPageDetection !== undefined ? 'flag' : from})`,
  ].join(', ');
  return { syncMode, switchoverStart: switchover, zeroPageDetection: zpd, why };
}
