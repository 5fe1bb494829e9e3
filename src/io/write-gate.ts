/**
 * Every background write to a file goes through its gate, so that after a
 * failure the file is closed only once no write is left on the thread pool:
 * a closed descriptor number is reused by the next open, and a write still
 * in flight would land in that other file. Used by the migration-file writer
 * and the receiver's outputs.
 */
import { IoError } from '../errors.js';

export class WriteGate {
  private isClosed = false;
  private readonly pending = new Set<Promise<unknown>>();

  /** `what` names the file in the error a write after close() gets. */
  constructor(private readonly what: string) {}

  /** close() was called: no new write starts. */
  get closed(): boolean {
    return this.isClosed;
  }

  run<T>(write: () => Promise<T>): Promise<T> {
    if (this.isClosed) return Promise.reject(new IoError('ERR_FILE_CLOSED', `${this.what}: write after the migration stopped`));
    const p = write();
    this.pending.add(p);
    const forget = (): void => void this.pending.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Resolves once the writes in flight have settled; new ones still start. */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /** No new writes; resolves once the ones in flight have settled. */
  async close(): Promise<void> {
    this.isClosed = true;
    await this.drain();
  }
}
