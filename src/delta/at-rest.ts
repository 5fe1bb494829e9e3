/**
 * Delta transfer at rest: a migration file (docs/file-format.md, version 2)
 * that refers to base files instead of holding their pages.
 *
 * Saving (`mfd send --to file:PATH --base NAME=PATH`): no receiver offers
 * fingerprints, so the sender reads the bases itself: each base is
 * fingerprinted with the same code as a receiver's (XXH3-128, addon), its
 * pages' CRC-32C taken in the same call, and digested whole (SHA-256) in the
 * same read. The plan is the network's (planDelta), so the file holds the
 * same reference packets a channel would carry; with the bases' CRCs at hand
 * a fingerprint collision is caught before anything is written and that page
 * goes as data. The header records each base: name, path, size, SHA-256.
 *
 * Restoring (`mfd recv --from file:PATH --base NAME=PATH | --base-dir DIR`):
 * the operator names where each base is; the recorded path is never opened
 * (the file is untrusted input and a restore often runs as root). Each base
 * is opened read-only without following a link, and its size and SHA-256
 * are checked against the header before any page is read from it; a
 * mismatch is refused, naming the base, received vs expected. The references
 * are then applied by the network receiver's code (DeltaReceiver), whose
 * copied pages go into the end-to-end digest, so a base changed after the
 * check still fails verification, never the image.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { IoError, UsageError, VerifyError } from '../errors.js';
import { packetHeaderSize } from '../wire/constants.js';
import type { Logger } from '../log.js';
import type { SendPipeline } from '../sender/pipeline.js';
import type { SaveExtension } from '../file/save.js';
import type { RestoreExtension } from '../file/restore.js';
import { runPages } from '../image/resume.js';
import { badBaseName, type DeltaManifest } from '../file/format.js';
import {
  ENTRY_SIZE,
  FINGERPRINT_BATCH,
  fingerprintFile,
  readFully,
  releaseBuffers,
  requireDelta,
  sortEntries,
  tableMemory,
} from './fingerprint.js';
import { MAX_BASE_PAGES, MAX_BASES } from '../control/delta.js';
import { deltaCounts, fingerprintImages, joinEntries, planDelta, type DeltaPlan } from './sender.js';
import { DeltaReceiver, type DeltaBase } from './receiver.js';

export interface FileDeltaOptions {
  /** `--base NAME=PATH`: the bases, in the order the references number them (none: copies within the migration only). */
  bases: { name: string; path: string }[];
  /** Test hook: sees (and may change) the bases' fingerprint entries before they are matched. */
  onFingerprints?: (entries: Buffer) => void;
}

export interface FileDelta {
  manifest: DeltaManifest;
  plan: DeltaPlan;
}

/** Delta files for the save (its SaveExtension, wired in by src/migrate/): references to `opts`' bases and to earlier pages. */
export function deltaSave(opts: FileDeltaOptions): SaveExtension {
  return {
    async plan(p, log) {
      const { manifest, plan } = await planFileDelta(p, opts, log);
      return {
        manifest,
        referencedPages: (b) => runPages(plan.held.get(b) ?? []),
        stats(stats, p) {
          stats.delta = deltaCounts(plan, stats.normalPages, stats.zeroPages, p.pageSize, p.headerSize);
        },
      };
    },
  };
}

/**
 * Delta files for the restore (its RestoreExtension, wired in by src/migrate/
 * for every file): a version 2 file's bases are found where `given` says,
 * verified, and its reference packets applied by DeltaReceiver; `--base` or
 * `--base-dir` for a file without bases is refused.
 */
export function deltaRestore(given: FileBasesOptions): RestoreExtension {
  return {
    async open(h, file, blocks, log) {
      if (!h.delta) {
        if (given.bases.length || given.dirs.length)
          throw new UsageError(`--base and --base-dir are for a delta migration file: "${file}" refers to no base`);
        return null;
      }
      const bases = await openFileBases(h.delta, given, h.pageSize, log);
      return DeltaReceiver.forFile(bases, h, blocks, packetHeaderSize(h.pageSize));
    },
  };
}

function ioError(e: unknown, what: string): IoError {
  return new IoError(`ERR_${(e as NodeJS.ErrnoException).code ?? 'IO'}`, `${what}: ${(e as Error).message}`, e);
}

/** Checks the names a save is given: file names, each once, at most MAX_BASES. */
function checkNames(bases: { name: string }[]): void {
  if (bases.length > MAX_BASES) throw new UsageError(`--base given ${bases.length} times, expected at most ${MAX_BASES} bases`);
  const seen = new Set<string>();
  for (const b of bases) {
    const bad = badBaseName(b.name);
    if (bad) throw new UsageError(`--base: ${bad} (name it with --base NAME=PATH)`);
    if (seen.has(b.name)) throw new UsageError(`--base names base "${b.name}" twice`);
    seen.add(b.name);
  }
}

/**
 * Fingerprints and digests the bases, plans the references against them
 * (and copies within the migration) and hands the reference packets to the
 * pipeline; returns what the header records and the plan (for the counts).
 */
export async function planFileDelta(p: SendPipeline, opts: FileDeltaOptions, log: Logger): Promise<FileDelta> {
  requireDelta('mfd send --to file: --delta');
  checkNames(opts.bases);
  const ps = p.pageSize;
  // The images are fingerprinted while the bases are.
  const prints = fingerprintImages(p.blocks, ps);
  prints.catch(() => {}); // awaited below
  const opened: { name: string; path: string; fd: number; size: number; pages: number }[] = [];
  try {
    for (const b of opts.bases) {
      let fd: number;
      try {
        fd = fs.openSync(b.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      } catch (e) {
        throw ioError(e, `base "${b.name}" (${b.path})`);
      }
      const st = fs.fstatSync(fd);
      opened.push({ name: b.name, path: b.path, fd, size: st.size, pages: Math.ceil(st.size / ps) });
      if (!st.isFile()) throw new IoError('ERR_DELTA_BASE', `base "${b.name}" (${b.path}) is not a regular file`);
    }
    const total = opened.reduce((a, b) => a + b.pages, 0);
    if (total > MAX_BASE_PAGES) throw new UsageError(`--base: the bases hold ${total} pages, expected at most ${MAX_BASE_PAGES}`);
    const chunks: Buffer[] = [];
    let count = 0;
    const baseCrcs = new Uint32Array(tableMemory(total * 4));
    const manifest: DeltaManifest = { bases: [] };
    let first = 0;
    for (const b of opened) {
      const sha = createHash('sha256');
      await fingerprintFile(
        b.fd,
        b.size,
        ps,
        first,
        `base "${b.name}" (${b.path})`,
        (entries, n) => {
          chunks.push(Buffer.from(entries.subarray(0, n * ENTRY_SIZE)));
          count += n;
        },
        baseCrcs.subarray(first, first + b.pages),
        (bytes) => sha.update(bytes),
      );
      manifest.bases.push({ name: b.name, path: path.resolve(b.path), size: b.size, sha256: sha.digest('hex') });
      first += b.pages;
    }
    const table = joinEntries(chunks, count);
    chunks.length = 0;
    opts.onFingerprints?.(table);
    await sortEntries(table, count);
    const offer = { bases: opened.map((b) => ({ name: b.name, pages: b.pages })), fingerprints: count };
    const imagePrints = await prints;
    const plan = await planDelta(p.blocks, ps, imagePrints, table, count, offer, baseCrcs);
    releaseBuffers(table, baseCrcs, imagePrints.entries, imagePrints.nonzero, ...imagePrints.crcs);
    p.sendFirst(plan.packets, (b) => plan.held.get(b) ?? []);
    log.info(
      {
        bases: manifest.bases.map((b) => ({ name: b.name, size: b.size, sha256: b.sha256 })),
        basePages: plan.basePages,
        migrationPages: plan.migrationPages,
        collisions: plan.collisions,
      },
      'delta file planned',
    );
    if (plan.collisions > 0)
      log.warn({ pages: plan.collisions }, 'fingerprint collisions caught by CRC-32C before writing: those pages go as data');
    return { manifest, plan };
  } finally {
    for (const b of opened) fs.closeSync(b.fd);
  }
}

/** `--base NAME=PATH` and `--base-dir DIR` of a restore: where the operator says each base is. */
export interface FileBasesOptions {
  bases: { name: string; path: string }[];
  dirs: string[];
  /** Test hook: runs once every base is verified, before any page is copied. */
  afterVerify?: () => void;
}

/** Reads the whole file and returns its SHA-256 (hex); two reads in flight. */
async function sha256Of(fd: number, size: number, what: string): Promise<string> {
  const sha = createHash('sha256');
  const step = FINGERPRINT_BATCH * 4096;
  const bufs = [Buffer.allocUnsafe(step), Buffer.allocUnsafe(step)];
  const read = async (at: number, buf: Buffer): Promise<number> => {
    const want = Math.min(step, size - at);
    let got: number;
    try {
      got = await readFully(fd, buf, want, at);
    } catch (e) {
      throw ioError(e, `reading ${what}`);
    }
    if (got < want)
      throw new IoError(
        'ERR_DELTA_BASE_SHORT',
        `reading ${what}: ${got} bytes at offset ${at}, expected ${want} (it shrank while being read)`,
      );
    return want;
  };
  let next: Promise<number> | null = size > 0 ? read(0, bufs[0]!) : null;
  for (let at = 0, k = 0; at < size; at += step, k ^= 1) {
    const n = await next!;
    next = at + step < size ? read(at + step, bufs[k ^ 1]!) : null;
    next?.catch(() => {}); // awaited on the next turn
    sha.update(bufs[k]!.subarray(0, n));
  }
  return sha.digest('hex');
}

/**
 * Opens the bases `manifest` names, from `--base NAME=PATH` or else the
 * first `--base-dir` holding a file of that name, read-only and without
 * following a link; checks each one's size and SHA-256 against the header
 * before any page is read from it. Returns them in the references' order.
 */
export async function openFileBases(manifest: DeltaManifest, given: FileBasesOptions, pageSize: number, log: Logger): Promise<DeltaBase[]> {
  requireDelta('mfd recv --from a delta migration file');
  const names = new Set(manifest.bases.map((b) => b.name));
  for (const b of given.bases)
    if (!names.has(b.name))
      throw new UsageError(
        `--base ${b.name}=...: the migration file names no base "${b.name}" (its bases: ${manifest.bases.map((x) => `"${x.name}"`).join(', ') || 'none'})`,
      );
  const bases: DeltaBase[] = [];
  try {
    for (const want of manifest.bases) {
      const named = given.bases.find((b) => b.name === want.name);
      const candidates = named ? [named.path] : given.dirs.map((d) => path.join(d, want.name));
      let fd = -1;
      let file = '';
      for (const c of candidates) {
        try {
          // A link is not followed: a root restore reads only files its operator named, never one a link redirects to.
          fd = fs.openSync(c, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
          file = c;
          break;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ELOOP')
            throw new IoError('ERR_DELTA_BASE', `base "${want.name}" (${c}) is a symbolic link: not followed; name the file itself`, e);
          if (named || code !== 'ENOENT') throw ioError(e, `base "${want.name}" (${c})`);
        }
      }
      if (fd < 0)
        throw new UsageError(
          `base "${want.name}" (saved from ${want.path}, ${want.size} bytes) is not given: --base ${want.name}=PATH, or --base-dir DIR holding a file "${want.name}"${given.dirs.length > 0 ? ` (not in ${given.dirs.join(', ')})` : ''}`,
          'ERR_DELTA_BASE_MISSING',
        );
      const what = `base "${want.name}" (${file})`;
      const st = fs.fstatSync(fd);
      bases.push({ name: want.name, path: file, fd, size: st.size, pages: Math.ceil(st.size / pageSize) });
      if (!st.isFile()) throw new IoError('ERR_DELTA_BASE', `${what} is not a regular file`);
      if (st.size !== want.size)
        throw new VerifyError(
          'ERR_DELTA_BASE_SIZE',
          `${what}: size received ${st.size} bytes, expected ${want.size}: not the file the migration file was saved against`,
        );
      const sha256 = await sha256Of(fd, st.size, what);
      if (sha256 !== want.sha256)
        throw new VerifyError(
          'ERR_DELTA_BASE_DIGEST',
          `${what}: SHA-256 received ${sha256}, expected ${want.sha256}: not the file the migration file was saved against`,
        );
    }
    given.afterVerify?.();
  } catch (e) {
    for (const b of bases) fs.closeSync(b.fd);
    throw e;
  }
  log.info({ bases: bases.map((b) => ({ name: b.name, path: b.path, size: b.size })) }, 'delta: bases verified');
  return bases;
}
