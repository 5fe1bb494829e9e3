/**
 * Views of the sizes asked for, cut from one SharedArrayBuffer of `bytes`
 * bytes (each rounded up to `align`) at the lowest free offset that fits, and
 * given back by release(). acquire() waits while none fits; waiters are
 * served in the order they asked, a large one before smaller ones behind it,
 * so none waits for ever while the pool is busy. What is out never passes
 * `bytes`, whatever sizes are asked for, and the buffer's pages become
 * resident only where views were taken (lowest first), so memory follows
 * what is really in flight. Shared, so a view reaches a worker thread
 * without a copy: the receiver's native readers read payloads into it
 * (receiver/data-channel.ts), one pool for all of a receiver's channels.
 */
export class BytePool {
  private sab: SharedArrayBuffer | null = null;
  /** Free extents [start, end), sorted by start, none touching the next. */
  private readonly free: { start: number; end: number }[];
  private readonly waiters: { size: number; resolve: (view: Uint8Array) => void }[] = [];
  private out = 0;
  /** The most bytes out at once (rounded sizes). */
  peak = 0;

  constructor(
    readonly bytes: number,
    private readonly align = 4096,
  ) {
    if (bytes % align !== 0) throw new RangeError(`BytePool: ${bytes} bytes is not a multiple of ${align}`);
    this.free = [{ start: 0, end: bytes }];
  }

  /** Bytes out now (rounded sizes). */
  get inUse(): number {
    return this.out;
  }

  /** Requests waiting for room. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** A view of `size` bytes now, or null: none fits, or others wait before it. */
  tryAcquire(size: number): Uint8Array | null {
    this.checkSize(size);
    return this.waiters.length > 0 ? null : this.take(size);
  }

  /** A view of `size` bytes (1 to `bytes`), once it fits and the requests before it are served. */
  acquire(size: number): Promise<Uint8Array> {
    const view = this.tryAcquire(size);
    return view ? Promise.resolve(view) : new Promise((resolve) => this.waiters.push({ size, resolve }));
  }

  /** Gives back a view acquire() handed out; the longest waiters get room first. */
  release(view: Uint8Array): void {
    const start = view.byteOffset;
    const end = start + this.rounded(view.byteLength);
    const f = this.free;
    // The first free extent after the view.
    let lo = 0;
    let hi = f.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (f[mid]!.start < start) lo = mid + 1;
      else hi = mid;
    }
    const prev = f[lo - 1];
    const next = f[lo];
    if (view.buffer !== this.sab || end > this.bytes || (prev && prev.end > start) || (next && next.start < end))
      throw new Error(`BytePool: the view at ${start} (${view.byteLength} bytes) is not out of this pool`);
    this.out -= end - start;
    if (prev && prev.end === start && next && next.start === end) {
      prev.end = next.end;
      f.splice(lo, 1);
    } else if (prev && prev.end === start) prev.end = end;
    else if (next && next.start === end) next.start = start;
    else f.splice(lo, 0, { start, end });
    for (let w = this.waiters[0]; w; w = this.waiters[0]) {
      const v = this.take(w.size);
      if (!v) break;
      this.waiters.shift();
      w.resolve(v);
    }
  }

  private checkSize(size: number): void {
    if (!Number.isInteger(size) || size < 1 || size > this.bytes)
      throw new RangeError(`BytePool: ${size} bytes asked of a pool of ${this.bytes}`);
  }

  private rounded(size: number): number {
    return Math.ceil(size / this.align) * this.align;
  }

  /** First fit, lowest offset first. */
  private take(size: number): Uint8Array | null {
    const n = this.rounded(size);
    const f = this.free;
    for (let i = 0; i < f.length; i++) {
      const e = f[i]!;
      if (e.end - e.start < n) continue;
      const start = e.start;
      if (e.end - start === n) f.splice(i, 1);
      else e.start += n;
      this.out += n;
      this.peak = Math.max(this.peak, this.out);
      this.sab ??= new SharedArrayBuffer(this.bytes);
      return new Uint8Array(this.sab, start, size);
    }
    return null;
  }
}
