/**
 * Files in a directory that others may write to (an output directory, which
 * a receiver running as root writes), made and opened without following a
 * link: a symbolic or hard link planted at one of the names mfd writes must
 * never make it write a file elsewhere.
 *
 * A file is created fresh: whatever is at its name (a stale file of an
 * earlier run, or a planted link) is unlinked first, which removes the link,
 * not what it points to; then the name is created with O_CREAT | O_EXCL |
 * O_NOFOLLOW, so a link planted between the two makes the create fail
 * (EEXIST) and is never followed. An existing file is opened with O_NOFOLLOW.
 */
import fs from 'node:fs';
import { IoError } from '../errors.js';

const { O_CREAT, O_EXCL, O_NOFOLLOW, O_WRONLY } = fs.constants;

/** Flags of a file opened through no link (add the access mode). */
export const NO_FOLLOW = O_NOFOLLOW;

function unlinkAny(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** Creates `file` fresh (see above); `access` is O_WRONLY or O_RDWR. Returns the descriptor. */
export function createFreshSync(file: string, access = O_WRONLY, mode = 0o644): number {
  unlinkAny(file);
  return fs.openSync(file, access | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
}

/** createFreshSync for a caller that writes through a FileHandle. */
export async function createFresh(file: string, access = O_WRONLY, mode = 0o644): Promise<fs.promises.FileHandle> {
  await fs.promises.unlink(file).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  return fs.promises.open(file, access | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
}

/** Writes `text` to a fresh `file`. */
export function writeFreshSync(file: string, text: string): void {
  const fd = createFreshSync(file);
  try {
    fs.writeFileSync(fd, text);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `text` to a fresh `file`, then renames it to `final` (rename replaces a link at `final`, never follows it). */
export function replaceFileSync(file: string, final: string, text: string): void {
  writeFreshSync(file, text);
  fs.renameSync(file, final);
}

/**
 * After renaming the file open as `fd` to `final`: `final` must be that file.
 * Someone who replaced the temporary name meanwhile (with a link, say) would
 * otherwise have put their own file under the final name: it is removed and
 * the rename refused.
 */
export function checkRenamed(fd: number, final: string, what: string): void {
  const ours = fs.fstatSync(fd);
  const there = fs.lstatSync(final, { throwIfNoEntry: false });
  if (there && there.dev === ours.dev && there.ino === ours.ino) return;
  fs.rmSync(final, { force: true });
  throw new IoError(
    'ERR_OUTPUT_REPLACED',
    `${what}: its temporary file was replaced by another file (${there?.isSymbolicLink() ? 'a symbolic link' : 'not the one written'}) before it took its final name "${final}"; that name was removed`,
  );
}
