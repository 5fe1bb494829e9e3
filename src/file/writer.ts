/**
 * Sequential writers for the stream layout. The real one is a ring of large
 * buffers, aligned to 4 KiB: the event loop fills one (copying and
 * checksumming in one native pass) while the others are written by the libuv
 * pool (one positional write per buffer, at a tracked offset), so the disk
 * and the CPU work at the same time. Without O_DIRECT each written buffer's
 * writeback is started at once (sync_file_range), so the disk is busy during
 * the save rather than only at the final fdatasync. A buffer is reused only
 * once its write has completed. Any failed or short write fails the save at once.
 *
 * The per-packet writer is the plain baseline the benchmark compares with:
 * one synchronous write per record, no buffering.
 */
import fs from 'node:fs';
import { IoError, type MfdError, NativeIoError, nativeIoFailure } from '../errors.js';
import { native } from '../native/load.js';
import { alignedBuffer, pwritePieces } from '../native/file-io.js';
import { WriteGate } from '../io/write-gate.js';
import { FILE_ALIGN } from './format.js';
import { directRefused, type OpenFile } from './target.js';

export const DEFAULT_BUFFER_SIZE = 4 << 20;
/** Buffered: one write in flight, so four buffers leave the filler room while it runs. */
export const DEFAULT_BUFFER_COUNT = 4;
/** O_DIRECT: every write is a device request; seven in flight keep the disk's queue full (measured here). */
export const DEFAULT_DIRECT_BUFFER_COUNT = 8;
export const MIN_BUFFER_SIZE = 1 << 20;

export interface ByteWriter {
  /** Relative position of the next byte appended. */
  readonly position: number;
  /**
   * Appends the pieces in order, then, with `checksum`, their CRC-32C as a
   * big-endian u32; nothing else lands between them. The pieces may be
   * reused once the promise settles.
   */
  append(pieces: Uint8Array[], checksum: boolean): Promise<void>;
  /** Pads with zeros to a multiple of 4096, writes everything out and returns the end (relative). */
  finish(): Promise<number>;
  /** Bytes handed to write calls so far. */
  readonly written: number;
}

export interface RingStats {
  bufferSize: number;
  buffers: number;
  /** Buffer writes issued. */
  writes: number;
  /** Bytes in them. */
  bytes: number;
  /** Times the filler found the next buffer still being written and waited for it. */
  waits: number;
}

/** Turns a failed positional write into an IoError naming the file, the byte and the counts. */
export function writeError(file: OpenFile, e: unknown): MfdError {
  if (e instanceof NativeIoError) {
    if (e.code === 'EINVAL' && file.direct) return directRefused(file.path, 'write', e.at!);
    return nativeIoFailure(e, { subject: `migration file "${file.path}"` });
  }
  const err = e as NodeJS.ErrnoException;
  if (err.code) return new IoError(`ERR_${err.code}`, `writing migration file "${file.path}": ${err.message}`, e);
  throw e;
}

export class BufferRing implements ByteWriter {
  private readonly buffers: Uint8Array[] = [];
  /** The write in flight from each buffer, if any. */
  private readonly inFlight: (Promise<void> | null)[] = [];
  private current = 0;
  private fill = 0;
  /** Relative file position of the current buffer's first byte. */
  private bufferStart: number;
  private failure: MfdError | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /**
   * Buffered, one write at a time: the kernel serialises buffered writes to a file on its inode lock
   * anyway, and concurrent writers would only spin there and hold libuv threads the page analysis
   * needs. With O_DIRECT the writes go out together, so the device has several requests queued.
   */
  private lastWrite: Promise<unknown> = Promise.resolve();
  private readonly sequential: boolean;
  readonly stats: RingStats;

  /**
   * `start` is the relative position of the first byte (a multiple of 4096
   * for O_DIRECT); `onError` hears of a failed write as soon as it happens.
   */
  constructor(
    private readonly file: OpenFile,
    start: number,
    bufferSize = DEFAULT_BUFFER_SIZE,
    count = DEFAULT_BUFFER_COUNT,
    private readonly gate: WriteGate,
    private readonly onError: (e: MfdError) => void = () => {},
  ) {
    if (bufferSize < MIN_BUFFER_SIZE || bufferSize % FILE_ALIGN !== 0)
      throw new RangeError(`ring buffers must be multiples of ${FILE_ALIGN} of at least ${MIN_BUFFER_SIZE} bytes`);
    if (count < 2) throw new RangeError('a ring needs at least two buffers');
    if (file.direct && (start + file.offset) % FILE_ALIGN !== 0)
      throw new RangeError('O_DIRECT ring must start at an aligned file position');
    for (let i = 0; i < count; i++) {
      this.buffers.push(alignedBuffer(bufferSize));
      this.inFlight.push(null);
    }
    this.bufferStart = start;
    this.sequential = !file.direct;
    this.stats = { bufferSize, buffers: count, writes: 0, bytes: 0, waits: 0 };
  }

  get position(): number {
    return this.bufferStart + this.fill;
  }

  get written(): number {
    return this.stats.bytes;
  }

  /** Appends are serialised: a record never interleaves with another, even while waiting for a buffer. */
  append(pieces: Uint8Array[], checksum: boolean): Promise<void> {
    const next = this.queue.then(() => this.appendNow(pieces, checksum));
    this.queue = next.catch(() => {});
    return next;
  }

  private async appendNow(pieces: Uint8Array[], checksum: boolean): Promise<void> {
    let crc = 0;
    for (const piece of pieces) crc = await this.copy(piece, crc);
    if (checksum) {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, crc);
      await this.copy(b, 0);
    }
  }

  /** Copies one piece into the ring (rotating buffers as they fill), continuing `crc` over it. */
  private async copy(piece: Uint8Array, crc: number): Promise<number> {
    if (this.failure) throw this.failure;
    const size = this.stats.bufferSize;
    let at = 0;
    while (at < piece.length) {
      const n = Math.min(piece.length - at, size - this.fill);
      crc = native.copyCrc32c(this.buffers[this.current]!.subarray(this.fill), piece.subarray(at, at + n), crc);
      this.fill += n;
      at += n;
      if (this.fill === size) await this.rotate();
    }
    return crc;
  }

  /** Writes the full current buffer in the background and moves to the next, waiting if it is still being written. */
  private async rotate(): Promise<void> {
    this.submit(this.stats.bufferSize);
    this.bufferStart += this.stats.bufferSize;
    this.fill = 0;
    this.current = (this.current + 1) % this.buffers.length;
    const busy = this.inFlight[this.current];
    if (busy) {
      this.stats.waits++;
      await busy;
      if (this.failure) throw this.failure;
    }
  }

  private submit(length: number): void {
    const i = this.current;
    const pos = this.file.offset + this.bufferStart;
    this.stats.writes++;
    this.stats.bytes += length;
    const buf = this.buffers[i]!.subarray(0, length);
    // Buffered: the disk starts on each buffer at once instead of at the final fdatasync.
    const write = (): Promise<void> => this.gate.run(() => pwritePieces(this.file.fd, [buf], [pos], !this.file.direct));
    const started = this.sequential ? this.lastWrite.then(write) : write();
    this.lastWrite = started.catch(() => {});
    const w = started.then(
      () => {
        this.inFlight[i] = null;
      },
      (e: unknown) => {
        this.inFlight[i] = null;
        const err = writeError(this.file, e);
        if (!this.failure) {
          this.failure = err;
          this.onError(err);
        }
      },
    );
    this.inFlight[i] = w;
  }

  async finish(): Promise<number> {
    await this.queue;
    if (this.failure) throw this.failure;
    const padded = Math.ceil(this.fill / FILE_ALIGN) * FILE_ALIGN;
    if (padded > 0) {
      // The buffer holds an earlier round's bytes past `fill`: zero the padding.
      this.buffers[this.current]!.fill(0, this.fill, padded);
      this.submit(padded);
    }
    const end = this.bufferStart + padded;
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
    return end;
  }
}

/** The baseline: each record goes out as one synchronous positional write, no buffering, no overlap. */
export class PerPacketWriter implements ByteWriter {
  written = 0;
  constructor(
    private readonly file: OpenFile,
    private pos: number,
  ) {}

  get position(): number {
    return this.pos;
  }

  append(pieces: Uint8Array[], checksum: boolean): Promise<void> {
    if (checksum) {
      let crc = 0;
      for (const p of pieces) crc = native.crc32c(p, crc);
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, crc);
      pieces = [...pieces, b];
    }
    const length = pieces.reduce((a, p) => a + p.length, 0);
    try {
      const n = fs.writevSync(this.file.fd, pieces, this.file.offset + this.pos);
      if (n !== length)
        throw new NativeIoError('ESHORTWRITE', { on: 'file', op: 'write', at: this.file.offset + this.pos, asked: length, moved: n });
    } catch (e) {
      return Promise.reject(writeError(this.file, e));
    }
    this.pos += length;
    this.written += length;
    return Promise.resolve();
  }

  async finish(): Promise<number> {
    const end = Math.ceil(this.pos / FILE_ALIGN) * FILE_ALIGN;
    if (end > this.pos) await this.append([new Uint8Array(end - this.pos)], false);
    return end;
  }
}
