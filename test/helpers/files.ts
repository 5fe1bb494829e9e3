/** Saving and restoring migration files in-process, for the tests under test/file/. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { saveToFile, type SaveOptions } from '../../src/file/save.js';
import { restoreFromFile, type RestoreOptions } from '../../src/file/restore.js';
import { silentLogger } from '../../src/log.js';
import { alignedBuffer, pwritePieces } from '../../src/native/file-io.js';
import type { BlockSpec } from '../../src/image/ramblock.js';
import { deltaRestore, deltaSave, type FileBasesOptions, type FileDeltaOptions } from '../../src/delta/at-rest.js';

export const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');
export const mfd = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });

/** Saves `images` to `file`; `delta` makes a delta file (wired in as migrate() does). */
export function save(
  images: BlockSpec[],
  file: string,
  { delta, ...o }: Partial<SaveOptions> & { delta?: FileDeltaOptions } = {},
): ReturnType<typeof saveToFile> {
  return saveToFile({
    target: { path: file, offset: 0 },
    images,
    channels: 3,
    pageSize: 4096,
    compression: 'none',
    methodParams: {},
    zeroPageDetection: 'multifd',
    logger: silentLogger,
    ...o,
    ...(delta ? { extension: deltaSave(delta) } : {}),
  });
}

/** Restores `file` into `outputDir`; a delta file's bases are where `bases` says (wired in as migrateIncoming() does). */
export function restore(
  file: string,
  outputDir: string,
  { bases, ...o }: Partial<RestoreOptions> & { bases?: FileBasesOptions } = {},
): ReturnType<typeof restoreFromFile> {
  const extension = deltaRestore(bases ?? { bases: [], dirs: [] });
  return restoreFromFile({ source: { path: file, offset: 0 }, outputDir, logger: silentLogger, extension, ...o });
}

/** Flips one bit of the byte at `at`. */
export function flip(file: string, at: number): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0]! ^= 0x10;
  fs.writeSync(fd, b, 0, 1, at);
  fs.closeSync(fd);
}

/** Whether O_DIRECT works in `dir`: a real open and an aligned write, or the reason it does not. */
export async function directIoProbe(dir: string): Promise<true | string> {
  const file = path.join(dir, '.direct-probe');
  let fd = -1;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_DIRECT, 0o600);
    await pwritePieces(fd, [alignedBuffer(4096)], [0]);
    return true;
  } catch (e) {
    return `the file system of ${dir} refuses O_DIRECT (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}
