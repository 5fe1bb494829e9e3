/**
 * At most `max` items, made by `make` when first needed and handed out again
 * once released; acquire() waits while all of them are out. It bounds memory
 * (packet buffers, read buffers) whatever the amount of work: the sender's
 * packet slabs, the receiver's per-channel read buffers, a mapped-ram
 * restore's chunk buffers.
 */
export class BoundedPool<T> {
  private readonly free: T[] = [];
  private readonly waiters: ((item: T) => void)[] = [];
  private made = 0;

  constructor(
    private readonly max: number,
    private readonly make: () => T,
  ) {}

  /** A free item now (made if fewer than `max` exist), or null. */
  tryAcquire(): T | null {
    const item = this.free.pop();
    if (item !== undefined) return item;
    if (this.made >= this.max) return null;
    this.made++;
    return this.make();
  }

  acquire(): Promise<T> {
    const item = this.tryAcquire();
    return item !== null ? Promise.resolve(item) : new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Gives `item` to the longest waiter, or keeps it for the next acquire. */
  release(item: T): void {
    const w = this.waiters.shift();
    if (w) w(item);
    else this.free.push(item);
  }
}
