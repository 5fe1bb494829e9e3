/**
 * The receiver's progress journal, one per output, beside it
 * (`.NAME.mfd-journal`, next to the temporary `.NAME.mfd-partial`): which
 * migration the output belongs to (ramblock name, size, page size, the
 * sender's identity of the image) and which pages are durably in the output.
 * Every interval the pages written since the last checkpoint are flushed
 * (fdatasync of the output) and only then is the journal rewritten
 * (temporary file, fsync, rename, fsync of the directory), so a journal never
 * claims a page that is not on disk. `mfd send --resume` continues from it;
 * it goes once the output has verified and taken its final name. A journal
 * holds at most the longest MAX_HAVE_NUMBERS / 2 runs (all a resume can
 * use): scattered pages never make it larger than that, nor its rewrite dearer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { IoError, ResumeError } from '../errors.js';
import { limitRuns, runPages } from '../image/resume.js';
import { RESERVE_BYTES, type Reserve } from './reserve.js';
import { PageBitmap, type PageBudget } from './page-bitmap.js';
import { linkMessage, sidecarPath, type Output } from './output.js';
import { NO_FOLLOW, createFresh } from '../io/no-follow.js';
import { MAX_HAVE_NUMBERS, badRun } from '../control/protocol.js';
import { syncDirectory } from '../io/sync-directory.js';

export const JOURNAL_FORMAT = 'mfd-journal';
export const JOURNAL_VERSION = 1;
/** Default time between checkpoints. */
export const JOURNAL_INTERVAL_MS = 1000;

/** What a journal file holds (JSON). */
export interface JournalFile {
  format: typeof JOURNAL_FORMAT;
  version: number;
  /** The migration that wrote the pages first. */
  uuid: string;
  ramblock: { name: string; size: number; source: string | null };
  pageSize: number;
  /** The file holding the pages (the temporary output, or the target in place). */
  output: string;
  /** Pages durably written, as runs [start, count, ...]. */
  pages: number[];
}

export function journalPathFor(finalPath: string): string {
  return sidecarPath(finalPath, '.', '.mfd-journal');
}

/**
 * Removes an earlier attempt's journal (a migration starting over). A name
 * too long for the file system cannot have a journal: the output's own
 * creation reports it.
 */
export function discardJournal(file: string): void {
  try {
    fs.rmSync(file, { force: true });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENAMETOOLONG') return;
    throw new IoError(`ERR_${err.code ?? 'JOURNAL'}`, `cannot remove the earlier progress journal "${file}": ${err.message}`, e);
  }
}

/** Reads a journal; null when there is none. A journal that cannot be read or parsed is refused. */
export async function loadJournal(file: string): Promise<JournalFile | null> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, { encoding: 'utf8', flag: fs.constants.O_RDONLY | NO_FOLLOW });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new IoError(
      `ERR_${(e as NodeJS.ErrnoException).code ?? 'READ'}`,
      `cannot read progress journal "${file}": ${linkMessage(e as NodeJS.ErrnoException)}`,
      e,
    );
  }
  let j: Partial<JournalFile>;
  try {
    j = JSON.parse(text) as Partial<JournalFile>;
  } catch {
    throw new ResumeError('ERR_RESUME_JOURNAL', `progress journal "${file}" is not valid JSON`);
  }
  const runsOk = Array.isArray(j.pages) && j.pages.length % 2 === 0 && j.pages.every((n) => Number.isSafeInteger(n) && n >= 0);
  if (j.format !== JOURNAL_FORMAT || j.version !== JOURNAL_VERSION || !j.ramblock || typeof j.pageSize !== 'number' || !runsOk) {
    throw new ResumeError('ERR_RESUME_JOURNAL', `progress journal "${file}" is not an ${JOURNAL_FORMAT} version ${JOURNAL_VERSION} file`);
  }
  return j as JournalFile;
}

/**
 * Refuses to resume ramblock `b` from journal `j` when they differ: names
 * what differs, received (the hello) vs expected (the journal).
 */
export function checkJournal(
  j: JournalFile,
  file: string,
  b: { name: string; size: number; source?: string },
  pageSize: number,
  output: string,
): void {
  const diffs: string[] = [];
  // The pages are in the file the journal names: another one (--in-place switched) holds other bytes.
  if (path.resolve(j.output) !== path.resolve(output))
    diffs.push(`output file received "${output}", expected "${j.output}" (--in-place as in the failed migration?)`);
  if (j.ramblock.name !== b.name) diffs.push(`ram block name received "${b.name}", expected "${j.ramblock.name}"`);
  if (j.ramblock.size !== b.size) diffs.push(`size received ${b.size}, expected ${j.ramblock.size}`);
  if (j.pageSize !== pageSize) diffs.push(`page size received ${pageSize}, expected ${j.pageSize}`);
  if ((b.source ?? null) !== j.ramblock.source)
    diffs.push(`source image received "${b.source ?? '(none)'}", expected "${j.ramblock.source ?? '(none)'}"`);
  const pages = Math.ceil(j.ramblock.size / j.pageSize);
  const bad = badRun(j.pages, pages);
  if (bad >= 0) {
    throw new ResumeError(
      'ERR_RESUME_JOURNAL',
      `progress journal "${file}": run ${bad} (pages ${j.pages[2 * bad]}+${j.pages[2 * bad + 1]}) is out of order or past the block's ${pages} pages`,
    );
  }
  if (diffs.length > 0) {
    throw new ResumeError(
      'ERR_RESUME_MISMATCH',
      `cannot resume ram block "${b.name}" from the progress journal "${file}": ${diffs.join('; ')}`,
    );
  }
}

/** One output's journal: the pages written so far, and the last checkpoint. */
export class BlockJournal {
  readonly written: PageBitmap;
  /** Pages written since the last checkpoint began. */
  private dirty = true;
  /** Pages in the last journal written. */
  durablePages = 0;

  constructor(
    readonly file: string,
    readonly output: Output,
    private readonly uuid: string,
    private readonly ramblock: { name: string; size: number; source?: string },
    private readonly pageSize: number,
    budget?: PageBudget,
  ) {
    this.written = new PageBitmap(Math.ceil(ramblock.size / pageSize), budget);
  }

  /** Marks pages (byte offsets in the block) written to the output. */
  note(offsets: ArrayLike<number>, count: number): void {
    for (let i = 0; i < count; i++) this.written.set(offsets[i]! / this.pageSize);
    if (count > 0) this.dirty = true;
  }

  /** Marks page runs already held (a resume), without counting them as new. */
  hold(runs: number[]): void {
    this.written.setRuns(runs);
  }

  /** Room for the last checkpoint on a full disk (reserve.ts). */
  reserve: Reserve | null = null;

  /**
   * Flushes the output, then records the pages written before the flush. The
   * `last` one after a failure is written into the reserve: the longest runs
   * that fit in it.
   */
  async checkpoint(last = false): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    // No more than a resume can use (ready.have's bound): the longest runs; the rest is sent again.
    let runs = limitRuns(this.written.runs(), MAX_HAVE_NUMBERS);
    const reserve = last && this.reserve?.isOpen ? this.reserve : null;
    const where = `checkpoint of ram block "${this.ramblock.name}"`;
    if (this.output.isOpen && runs.length > 0) await this.output.use((fd) => io(where, (cb) => fs.fdatasync(fd, cb)));
    const body: JournalFile = {
      format: JOURNAL_FORMAT,
      version: JOURNAL_VERSION,
      uuid: this.uuid,
      ramblock: { name: this.ramblock.name, size: this.ramblock.size, source: this.ramblock.source ?? null },
      pageSize: this.pageSize,
      output: this.output.writePath,
      pages: runs,
    };
    if (reserve) {
      // A page number has at most 16 digits and a comma.
      const room = Math.max(0, RESERVE_BYTES - Buffer.byteLength(JSON.stringify({ ...body, pages: [] })) - 2);
      body.pages = runs = limitRuns(runs, 2 * Math.floor(room / 34));
    }
    const tmp = `${this.file}.tmp`;
    try {
      if (reserve) await reserve.writeAs(JSON.stringify(body) + '\n', this.file);
      else await this.replace(tmp, body, runs.length > 0);
    } catch (e) {
      this.dirty = true;
      await fs.promises.rm(tmp, { force: true });
      const err = e as NodeJS.ErrnoException;
      throw new IoError(`ERR_${err.code ?? 'JOURNAL'}`, `${where}: writing progress journal "${this.file}": ${err.message}`, e);
    }
    this.durablePages = runPages(runs);
  }

  /** Writes the journal as `tmp` and renames it over the last one; flushed when it holds pages. */
  private async replace(tmp: string, body: JournalFile, durable: boolean): Promise<void> {
    const h = await createFresh(tmp);
    try {
      await h.writeFile(JSON.stringify(body) + '\n');
      // A journal of no pages need not survive a crash: without it, a resume is refused and a full migration runs.
      if (durable) await h.datasync();
    } finally {
      await h.close();
    }
    await fs.promises.rename(tmp, this.file);
    if (durable) await syncDirectory(this.file);
  }

  /** Removes the journal; never throws (a stale journal left behind only makes a later resume refuse). */
  remove(): void {
    this.reserve?.release();
    for (const f of [this.file, `${this.file}.tmp`]) {
      try {
        fs.rmSync(f, { force: true });
      } catch {
        /* see above */
      }
    }
  }
}

function io(where: string, f: (cb: (e: NodeJS.ErrnoException | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) =>
    f((e) => (e ? reject(new IoError(`ERR_${e.code ?? 'SYNC'}`, `${where}: flushing the output: ${e.message}`, e)) : resolve())),
  );
}

/**
 * Every output's journal, checkpointed together every `intervalMs`, one
 * checkpoint at a time. A checkpoint that fails is reported through `fail`.
 */
export class Journals {
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  private readonly byOutput: Map<Output, BlockJournal>;

  constructor(
    readonly blocks: BlockJournal[],
    private readonly intervalMs: number,
    private readonly fail: (e: unknown) => void,
  ) {
    this.byOutput = new Map(blocks.map((b) => [b.output, b]));
  }

  start(): void {
    this.timer = setInterval(() => void this.checkpoint().catch((e) => this.fail(e)), this.intervalMs);
    this.timer.unref();
  }

  /** One checkpoint of every journal, after the one in progress (`last`: see BlockJournal.checkpoint). */
  checkpoint(last = false): Promise<void> {
    const next = this.chain.then(async () => {
      for (const b of this.blocks) await b.checkpoint(last);
    });
    this.chain = next.catch(() => {});
    return next;
  }

  /** Stops checkpointing; resolves after the one in progress. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.chain;
  }

  /** After a failure: a last checkpoint, into the reserves; the pages durable in all. */
  async flush(): Promise<number> {
    await this.stop();
    await this.checkpoint(true);
    return this.blocks.reduce((a, b) => a + b.durablePages, 0);
  }

  /** Pages of `output` written (see BlockJournal.note). */
  note(output: Output, offsets: ArrayLike<number>, count: number): void {
    this.byOutput.get(output)?.note(offsets, count);
  }

  remove(): void {
    for (const b of this.blocks) b.remove();
  }
}
