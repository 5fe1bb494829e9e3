/**
 * The receiving side's ramblock targets and final checks, shared by the
 * network receiver and a migration file's restore: which output each
 * ramblock goes to, and, once every packet is in, packet counts, page
 * coverage and digests, before any output takes its final name.
 */
import fs from 'node:fs';
import path from 'node:path';
import { IoError, ProtocolError, UsageError, VerifyError } from '../errors.js';
import { BlockDigest } from '../image/digest.js';
import { ramblockFileName } from '../image/ramblock.js';
import { NAME_MAX, Output, checkInPlace, sidecarPath } from './output.js';
import { journalPathFor } from './journal.js';
import { reservePathFor } from './reserve.js';
import { PageBitmap, PageBudget } from './page-bitmap.js';
import type { TargetBlock } from './data-channel.js';

export interface TargetOptions {
  /** Directory for ramblocks without an explicit mapping. */
  outputDir?: string;
  /** Explicit ramblock name -> output path. */
  outputMap?: Map<string, string>;
  inPlace: boolean;
  /** A resume: open the outputs a failed migration left instead of creating them. */
  existing?: boolean;
}

/**
 * Where ramblock `name` goes, as given: its --output NAME=PATH, or
 * DIR/<its name as a file name> (ramblockFileName: `/rom@etc/acpi/tables`
 * goes to DIR/%2From@etc%2Facpi%2Ftables).
 */
function givenPath(name: string, o: TargetOptions, where: string): string {
  const mapped = o.outputMap?.get(name);
  if (mapped !== undefined) return mapped;
  const file = ramblockFileName(name);
  if (!o.outputDir) throw new UsageError(`no output for ram block "${name}": give --output DIR or --output ${file}=PATH`);
  if (Buffer.byteLength(file) > NAME_MAX) {
    throw new ProtocolError(
      'ERR_HELLO_RAMBLOCK',
      `${where}: ram block "${name}" makes a file name of ${Buffer.byteLength(file)} bytes in ${o.outputDir}, expected at most ${NAME_MAX}; map it with --output NAME=PATH (NAME written as that file name)`,
    );
  }
  return path.join(o.outputDir, file);
}

/** `dir` with its links resolved; `what` says whose directory it is in an error. */
function realDir(dir: string, what: string): string {
  try {
    return fs.realpathSync(dir);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new IoError(`ERR_${err.code ?? 'OUTPUT'}`, `${what}: its directory "${dir}": ${err.message}`, e);
  }
}

/** `file` with its directory's links resolved (the file itself may not exist yet: a link there is never followed). */
function realPath(file: string, name: string): string {
  return path.join(realDir(path.dirname(path.resolve(file)), `output "${file}" for ram block "${name}"`), path.basename(file));
}

/**
 * Every ramblock's output, by its real path, checked before any file is
 * touched: --output names only ramblocks that are sent; no two ramblocks
 * share a file or one another's side files (through a linked directory
 * either); a ramblock of the output directory stays in it; and an output
 * written in place is not a link (the user names its target instead).
 */
export function resolveTargets(ramblocks: { name: string }[], o: TargetOptions, where: string): string[] {
  const map = o.outputMap ?? new Map<string, string>();
  for (const name of map.keys()) {
    if (!ramblocks.some((b) => b.name === name)) {
      throw new UsageError(
        `--output names ram block "${name}", but the sender sends ${ramblocks.map((b) => `"${b.name}"`).join(', ') || 'none'}`,
      );
    }
  }
  const dir = o.outputDir === undefined ? null : realDir(o.outputDir, 'the output directory');
  const targets = ramblocks.map((b) => {
    const given = givenPath(b.name, o, where);
    const real = realPath(given, b.name);
    if (dir !== null && !map.has(b.name) && path.dirname(real) !== dir) {
      throw new ProtocolError(
        'ERR_HELLO_RAMBLOCK',
        `${where}: ram block "${b.name}" would be written to "${real}", outside the output directory "${dir}"`,
      );
    }
    if (o.inPlace) checkInPlaceTarget(b.name, given, real);
    return { name: b.name, given, path: real };
  });
  return checkDistinctTargets(targets, where);
}

/** --in-place writes through no link: a link at the target is refused, naming its target for --output NAME=PATH; so is a file with other names. */
function checkInPlaceTarget(name: string, given: string, real: string): void {
  const st = fs.lstatSync(real, { throwIfNoEntry: false });
  if (st?.isFile()) checkInPlace(st, given, name);
  if (!st?.isSymbolicLink()) return;
  let to: string;
  try {
    to = fs.realpathSync(real);
  } catch {
    to = `${fs.readlinkSync(real)}, which does not exist`;
  }
  throw new UsageError(
    `--in-place: output "${given}" for ram block "${name}" is a symbolic link to "${to}"; mfd writes through no link: give the file itself (--output ${ramblockFileName(name)}=PATH)`,
    'ERR_OUTPUT_LINK',
  );
}

/**
 * Creates an output (temporary name, or in place) for every ramblock.
 * `where` names the source of the table in errors ("hello", "migration file header").
 * Outputs made before a failure are in `outputs` for the caller to abort.
 * Their page bitmaps are charged to `budget` (the receiver's, shared with its journals).
 */
export async function openTargets(
  ramblocks: { name: string; size: number }[],
  pageSize: number,
  o: TargetOptions,
  where: string,
  blocks: Map<string, TargetBlock>,
  outputs: Output[],
  budget = new PageBudget(),
): Promise<void> {
  const finals = resolveTargets(ramblocks, o, where);
  for (const [i, b] of ramblocks.entries()) {
    const output = await Output.create(b.name, b.size, finals[i]!, o.inPlace, o.existing ?? false);
    outputs.push(output);
    blocks.set(b.name, targetBlock(output, b.size, pageSize, budget));
  }
}

/** A ramblock's target: its output, and the pages received and their digest so far. */
export function targetBlock(output: Output, size: number, pageSize: number, budget = new PageBudget()): TargetBlock {
  // The declared size is the peer's word: the bitmap grows with the pages that arrive.
  return { output, size, seen: new PageBitmap(Math.ceil(size / pageSize), budget), digest: new BlockDigest() };
}

/** Delta written in place (src/delta/receiver.ts): the pages its references copy from pages overwritten meanwhile, kept beside the output while it is written. */
export function stashPathFor(finalPath: string): string {
  return sidecarPath(finalPath, '.', '.mfd-stash');
}

/** The files the receiver keeps beside an output while it is written: temporary file, in-place marker, journal, its replacement and reserve, delta's stash. */
function sidecarsOf(finalPath: string): string[] {
  const journal = journalPathFor(finalPath);
  return [
    Output.tempPathFor(finalPath),
    sidecarPath(finalPath, '', '.mfd-partial'),
    journal,
    `${journal}.tmp`,
    reservePathFor(finalPath),
    stashPathFor(finalPath),
  ];
}

/**
 * Refuses two ramblocks written to one file, or a ramblock written to a file
 * that another's temporary file or journal uses (a block named
 * ".a.mfd-journal" beside a block "a" would be deleted with a's journal).
 * Paths are real paths: `--output link --output a=real/b` is one file twice.
 * Returns the paths, in order.
 */
function checkDistinctTargets(targets: { name: string; given: string; path: string }[], where: string): string[] {
  const owner = new Map<string, { name: string; given: string }>();
  for (const t of targets) {
    const other = owner.get(t.path);
    if (other !== undefined) {
      const as = other.given === t.given ? `"${t.given}"` : `"${other.given}" and "${t.given}", both "${t.path}"`;
      throw new UsageError(`${where}: ram blocks "${other.name}" and "${t.name}" would both be written to ${as}`);
    }
    owner.set(t.path, t);
  }
  for (const t of targets) {
    for (const side of sidecarsOf(t.path)) {
      const other = owner.get(side);
      if (other !== undefined) {
        throw new ProtocolError(
          'ERR_HELLO_RAMBLOCK',
          `${where}: ram block "${other.name}" would be written to "${side}", which mfd uses beside ram block "${t.name}"'s output; map it elsewhere with --output NAME=PATH`,
        );
      }
    }
  }
  return targets.map((t) => t.path);
}

/** Every channel got the packets the sender counted, the last one a SYNC. */
export function verifyChannels(channels: { counters: { packets: number }; lastWasSync: boolean }[], expected: number[]): void {
  channels.forEach((ch, id) => {
    const got = ch.counters.packets;
    if (got !== expected[id]) {
      throw new VerifyError('ERR_PACKET_COUNT', `received ${got} packets, expected ${expected[id]}`, { channel: id });
    }
    if (got > 0 && !ch.lastWasSync) throw new VerifyError('ERR_NO_SYNC', 'last packet was not a SYNC packet', { channel: id });
  });
}

/** Every page of every block arrived exactly once, and each block's digest is the sender's. */
export function verifyBlocks(
  ramblocks: { name: string; size: number }[],
  blocks: Map<string, TargetBlock>,
  pageSize: number,
  digests: Record<string, string>,
): void {
  for (const b of ramblocks) {
    const t = blocks.get(b.name)!;
    const pages = Math.ceil(b.size / pageSize);
    if (t.seen.count !== pages) {
      const first = t.seen.firstMissing();
      throw new VerifyError(
        'ERR_PAGES_MISSING',
        `ram block "${b.name}": received ${t.seen.count} of ${pages} pages (first missing at offset ${first * pageSize})`,
      );
    }
    const want = digests[b.name];
    if (t.digest.hex() !== want) {
      throw new VerifyError(
        'ERR_DIGEST',
        `ram block "${b.name}": digest of received pages ${t.digest.hex()}, expected ${want ?? '(none sent)'}`,
      );
    }
  }
}
