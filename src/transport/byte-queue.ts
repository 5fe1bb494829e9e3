/**
 * Collects socket chunks and hands out exact-length frames: as one buffer
 * (a view when the frame lies inside one chunk, else a copy) or as views of
 * the chunks it spans (no copy; Node gives each 'data' event a fresh buffer,
 * so views stay valid).
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
    const first = this.chunks[0];
    if (n === 0 || first === undefined) return Buffer.alloc(0);
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.length -= n;
      this.advance(n);
      return view;
    }
    const out = alloc(n);
    this.takeInto(out, 0, n);
    return out.length === n ? out : out.subarray(0, n);
  }

  /** Copies up to n queued bytes into out at `at`; returns how many. */
  takeInto(out: Uint8Array, at: number, n: number): number {
    const k = Math.min(n, this.length);
    let filled = 0;
    while (filled < k) {
      const c = this.chunks[0]!;
      const m = Math.min(k - filled, c.length - this.head);
      c.copy(out, at + filled, this.head, this.head + m);
      filled += m;
      this.advance(m);
    }
    this.length -= k;
    return k;
  }

  /** The first queued byte, without taking it (null when none is queued). */
  peekUInt8(): number | null {
    return this.length < 1 ? null : this.chunks[0]![this.head]!;
  }

  /** The 4 queued bytes from `offset` on as a big-endian u32, without taking them (null when fewer are queued). */
  peekUInt32BE(offset = 0): number | null {
    if (this.length < offset + 4) return null;
    let v = 0;
    let c = 0;
    let at = this.head + offset;
    while (at >= this.chunks[c]!.length) at -= this.chunks[c++]!.length;
    for (let k = 0; k < 4; k++) {
      while (at === this.chunks[c]!.length) {
        c++;
        at = 0;
      }
      v = v * 256 + this.chunks[c]![at++]!;
    }
    return v;
  }

  /** Returns n bytes as views of the queued chunks (no copy), or null when fewer are queued. */
  takeViews(n: number): Buffer[] | null {
    if (this.length < n) return null;
    this.length -= n;
    const out: Buffer[] = [];
    while (n > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(n, c.length - this.head);
      out.push(c.subarray(this.head, this.head + k));
      n -= k;
      this.advance(k);
    }
    return out;
  }

  private advance(k: number): void {
    this.head += k;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
