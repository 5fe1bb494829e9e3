/**
 * The receiving side's ramblock targets and final checks, shared by the
 * network receiver and a migration file's restore: which output each
 * ramblock goes to, and, once every packet is in, packet counts, page
 * coverage and digests, before any output takes its final name.
 */
import path from 'node:path';
import { ProtocolError, UsageError, VerifyError } from '../errors.js';
import { BlockDigest } from '../digest.js';
import { isSafeFileName } from '../image/ramblock.js';
import { Output, sidecarPath } from './output.js';
import { journalPathFor } from './journal.js';
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

/** Where ramblock `name` goes: its --output NAME=PATH, or DIR/NAME. */
export function targetPath(name: string, o: TargetOptions, where: string): string {
  const mapped = o.outputMap?.get(name);
  if (mapped !== undefined) return mapped;
  if (!o.outputDir) throw new UsageError(`no output for ram block "${name}": give --output DIR or --output ${name}=PATH`);
  if (!isSafeFileName(name)) {
    throw new ProtocolError('ERR_HELLO_RAMBLOCK', `${where}: ram block name "${name}" is not usable as a file name in ${o.outputDir}; map it with --output NAME=PATH`);
  }
  return path.join(o.outputDir, name);
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
  const map = o.outputMap ?? new Map<string, string>();
  for (const name of map.keys()) {
    if (!ramblocks.some((b) => b.name === name)) {
      throw new UsageError(`--output names ram block "${name}", but the sender sends ${ramblocks.map((b) => `"${b.name}"`).join(', ') || 'none'}`);
    }
  }
  const finals = checkDistinctTargets(ramblocks.map((b) => ({ name: b.name, path: targetPath(b.name, o, where) })), where);
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

/** The files the receiver keeps beside an output while it is written: temporary file, in-place marker, journal and their replacements. */
function sidecarsOf(finalPath: string): string[] {
  const journal = journalPathFor(finalPath);
  return [Output.tempPathFor(finalPath), sidecarPath(finalPath, '', '.mfd-partial'), journal, `${journal}.tmp`];
}

/**
 * Refuses two ramblocks written to one file, or a ramblock written to a file
 * that another's temporary file or journal uses (a block named
 * ".a.mfd-journal" beside a block "a" would be deleted with a's journal).
 * Returns the paths, in order.
 */
function checkDistinctTargets(targets: { name: string; path: string }[], where: string): string[] {
  const owner = new Map<string, string>();
  for (const t of targets) {
    const p = path.resolve(t.path);
    const other = owner.get(p);
    if (other !== undefined) throw new UsageError(`${where}: ram blocks "${other}" and "${t.name}" would both be written to "${t.path}"`);
    owner.set(p, t.name);
  }
  for (const t of targets) {
    for (const side of sidecarsOf(path.resolve(t.path))) {
      const other = owner.get(side);
      if (other !== undefined) {
        throw new ProtocolError('ERR_HELLO_RAMBLOCK', `${where}: ram block "${other}" would be written to "${side}", which mfd uses beside ram block "${t.name}"'s output; map it elsewhere with --output NAME=PATH`);
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
export function verifyBlocks(ramblocks: { name: string; size: number }[], blocks: Map<string, TargetBlock>, pageSize: number, digests: Record<string, string>): void {
  for (const b of ramblocks) {
    const t = blocks.get(b.name)!;
    const pages = Math.ceil(b.size / pageSize);
    if (t.seen.count !== pages) {
      const first = t.seen.firstMissing();
      throw new VerifyError('ERR_PAGES_MISSING', `ram block "${b.name}": received ${t.seen.count} of ${pages} pages (first missing at offset ${first * pageSize})`);
    }
    const want = digests[b.name];
    if (t.digest.hex() !== want) {
      throw new VerifyError('ERR_DIGEST', `ram block "${b.name}": digest of received pages ${t.digest.hex()}, expected ${want ?? '(none sent)'}`);
    }
  }
}
