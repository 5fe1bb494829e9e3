/**
 * `file:PATH[,offset=N]`, after QEMU's file: URI: the migration starts at
 * byte N and every offset inside it is relative to N; the bytes before N are
 * never written. Opening for a save truncates the file to N (as QEMU does),
 * so nothing of an earlier save past N survives, and, with --direct-io,
 * opens it with O_DIRECT and says so plainly when the file system refuses.
 */
import fs from 'node:fs';
import { IoError, UsageError } from '../errors.js';
import { parseSize } from '../image/generate.js';
import { FILE_ALIGN } from './format.js';

export interface FileTarget {
  path: string;
  /** Byte of the file where the migration starts. */
  offset: number;
}

/** An open migration file: descriptor, path and where the migration starts. */
export interface OpenFile extends FileTarget {
  fd: number;
  /** Opened with O_DIRECT. */
  direct: boolean;
}

export const FILE_PREFIX = 'file:';

/** True when `spec` names a file (`file:...`) rather than HOST:PORT. */
export function isFileUri(spec: string): boolean {
  return spec.startsWith(FILE_PREFIX);
}

/** Parses `file:PATH[,offset=N]` (N with K, M, G suffixes, as QEMU's qemu_strtosz); `flag` names the option in errors. */
export function parseFileUri(spec: string, flag: string): FileTarget {
  if (!isFileUri(spec)) throw new UsageError(`Expected file:PATH[,offset=N] for ${flag} but received "${spec}"`);
  let rest = spec.slice(FILE_PREFIX.length);
  let offset = 0;
  const at = rest.indexOf(',offset=');
  if (at >= 0) {
    const value = rest.slice(at + ',offset='.length);
    rest = rest.slice(0, at);
    try {
      offset = parseSize(value);
    } catch {
      throw new UsageError(`file URI has bad offset "${value}" in ${flag} ${spec}: expected bytes, with an optional K, M or G suffix`);
    }
    if (!Number.isSafeInteger(offset) || offset < 0) throw new UsageError(`file URI has bad offset "${value}" in ${flag} ${spec}`);
  }
  if (rest === '') throw new UsageError(`${flag} ${spec} names no file`);
  return { path: rest, offset };
}

function ioError(what: string, e: unknown): IoError {
  const err = e as NodeJS.ErrnoException;
  return new IoError(`ERR_${err.code ?? 'IO'}`, `${what}: ${err.message}`, e);
}

/**
 * Opens (creating it, mode 0600: it holds guest memory) and truncates to N
 * the file a save writes. With `direct`, O_DIRECT: N must be a multiple of
 * 4096, and a file system that refuses O_DIRECT is named in the error.
 */
export function openForSave(t: FileTarget, direct: boolean): OpenFile {
  if (direct && t.offset % FILE_ALIGN !== 0) {
    throw new UsageError(
      `file:${t.path},offset=${t.offset}: with --direct-io the offset must be a multiple of ${FILE_ALIGN} (O_DIRECT writes need aligned file positions)`,
    );
  }
  const st = fs.statSync(t.path, { throwIfNoEntry: false });
  if (st && !st.isFile()) throw new IoError('ERR_NOT_A_FILE', `migration file "${t.path}" exists and is not a regular file`);
  let fd: number;
  try {
    fd = fs.openSync(t.path, fs.constants.O_WRONLY | fs.constants.O_CREAT | (direct ? fs.constants.O_DIRECT : 0), 0o600);
  } catch (e) {
    if (direct && (e as NodeJS.ErrnoException).code === 'EINVAL') throw directRefused(t.path, 'open');
    throw ioError(`cannot open migration file "${t.path}" for writing`, e);
  }
  try {
    fs.ftruncateSync(fd, t.offset);
  } catch (e) {
    fs.closeSync(fd);
    throw ioError(`cannot truncate migration file "${t.path}" to its offset ${t.offset}`, e);
  }
  return { ...t, fd, direct };
}

export function directRefused(file: string, op: string, at?: number): IoError {
  return new IoError(
    'ERR_DIRECT_IO_UNSUPPORTED',
    `--direct-io: the file system of "${file}" refuses O_DIRECT (${op}${at !== undefined ? ` at byte ${at}` : ''}: EINVAL); save without --direct-io, or to another file system`,
  );
}

/** Opens a migration file for reading, and its size. */
export function openForRestore(t: FileTarget): OpenFile & { size: number } {
  let fd: number;
  try {
    fd = fs.openSync(t.path, 'r');
  } catch (e) {
    throw ioError(`cannot open migration file "${t.path}"`, e);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new IoError('ERR_NOT_A_FILE', `migration file "${t.path}" is not a regular file`);
  }
  return { ...t, fd, direct: false, size: st.size };
}
