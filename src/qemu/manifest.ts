/**
 * DIR/manifest.json of a migration received from QEMU (`mfd recv --qemu`), read
 * back by `mfd send --qemu`: what was seen on the wire and what is needed to
 * replay it (configuration section bytes, RAM section id, block list, uuid,
 * sync mode), with a SHA-256 of every file.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { IoError, ProtocolError } from '../errors.js';
import type { SyncMode } from './format.js';

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
  /** The uuid of the multifd init packets (the source's -uuid; zeros without one). */
  uuid: string;
  pageSize: number;
  multifd: boolean;
  channels: number;
  /** multifd-compression seen on the packets (null: no multifd). */
  method: string | null;
  ramblocks: { name: string; size: number; file: string; sha256: string }[];
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
  const tmp = `${file}.mfd-partial`;
  fs.writeFileSync(tmp, JSON.stringify(m, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

/** Reads and checks DIR/manifest.json and the files it lists (sizes; digests with `verify`). */
export async function readManifest(dir: string, verify: boolean): Promise<QemuManifest> {
  const file = path.join(dir, MANIFEST_FILE);
  let m: QemuManifest;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8')) as QemuManifest;
  } catch (e) {
    throw new IoError('ERR_QEMU_MANIFEST', `cannot read ${file}: ${(e as Error).message} (a directory written by mfd recv --qemu has one)`, e);
  }
  if (m.format !== MANIFEST_FORMAT || m.version !== 1) throw new ProtocolError('ERR_QEMU_MANIFEST', `${file}: format "${m.format}" version ${m.version}, expected "${MANIFEST_FORMAT}" version 1`);
  const files = [...m.ramblocks.map((b) => ({ what: `ramblock "${b.name}"`, file: b.file, size: b.size, sha256: b.sha256 })), { what: 'device state', ...m.deviceState }];
  for (const f of files) {
    const p = path.join(dir, path.basename(f.file));
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st) throw new IoError('ERR_ENOENT', `${f.what}: ${p} is missing`);
    if (st.size !== f.size) throw new ProtocolError('ERR_QEMU_MANIFEST', `${f.what}: ${p} has ${st.size} bytes, the manifest says ${f.size}`);
    if (verify) {
      const got = await fileSha256(p);
      if (got !== f.sha256) throw new ProtocolError('ERR_QEMU_MANIFEST', `${f.what}: ${p} has SHA-256 ${got}, the manifest says ${f.sha256}`);
    }
  }
  return m;
}
