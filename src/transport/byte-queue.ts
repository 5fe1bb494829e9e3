/**
 * Collects socket chunks and hands out exact-length frames. A frame that lies
 * inside one chunk is returned as a view (no copy; Node gives each 'data'
 * event a fresh buffer); one that spans chunks is copied into a buffer from
 * `alloc`, so a receiver can use pooled, bounded buffers.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Returns n bytes, or null when fewer are queued. */
  take(n: number, alloc: (n: number) => Buffer = Buffer.allocUnsafe): Buffer | null {
    if (this.length < n) return null;
    this.length -= n;
    const first = this.chunks[0];
    if (n === 0 || first === undefined) return Buffer.alloc(0);
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.advance(n);
      return view;
    }
    const out = alloc(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(n - filled, c.length - this.head);
      c.copy(out, filled, this.head, this.head + k);
      filled += k;
      this.advance(k);
    }
    return out.length === n ? out : out.subarray(0, n);
  }

  private advance(k: number): void {
    this.head += k;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
