/**
 * The compute pool: worker threads for methods that declare `offload`. Each
 * channel is pinned to worker `channel % size`, so its stream state stays in
 * one thread; channels spread over a pool sized to the cores. Page data and
 * payloads stay in buffers shared with the workers (SharedArrayBuffers the
 * caller recycles): a message carries offsets and counts, never a copy.
 */
import os from 'node:os';
import path from 'node:path';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { MfdError, ExitCode } from '../errors.js';
import type { FromWorker, ToWorker } from './messages.js';
import { reviveError } from './error-hop.js';
import { PACKAGE_ROOT } from '../version.js';

/**
 * The worker beside this module: dist/bundle/worker.js for the bundled CLI,
 * dist/compute/worker.js for the compiled library. From the sources (the
 * tests, under a TypeScript loader) the compiled worker, which `npm test`'s
 * pretest builds first: a worker under that loader would compile every
 * module again, about a second a worker.
 */
const WORKER = import.meta.url.endsWith('.ts')
  ? path.join(PACKAGE_ROOT, 'dist', 'compute', 'worker.js')
  : new URL('./worker.js', import.meta.url);

/**
 * What each worker's V8 heap may take. The young generation (V8 sizes it as
 * three semi-spaces) stays at 3 MiB, two 1 MiB semi-spaces, instead of growing
 * to the default 48 MiB: under the per-packet messages a worker's new space
 * grew from 4 to 8 MiB and stayed there, while what it keeps alive is a few
 * MiB (its old generation held 6-8 MiB). Measured on a 2 GiB zstd send at 255
 * channels, three pairs interleaved: no more CPU or wall time. The old
 * generation keeps V8's limit: a lower one would only turn a leak into a
 * failed worker.
 */
export const WORKER_RESOURCE_LIMITS: Readonly<ResourceLimits> = { maxYoungGenerationSizeMb: 3 };

export function defaultPoolSize(channels: number): number {
  return Math.max(1, Math.min(channels, os.availableParallelism()));
}

export class ComputePool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failed: Error | null = null;
  private closing = false;

  constructor(readonly size: number) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(WORKER, { execArgv: [], resourceLimits: { ...WORKER_RESOURCE_LIMITS } });
      w.on('message', (m: FromWorker) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (this.pending.size === 0) this.setRef(false);
        if (m.ok) p.resolve(m.value);
        else p.reject(reviveError(m.error));
      });
      w.on('error', (e) => this.failAll(new MfdError('ERR_WORKER', `compute worker ${i} failed: ${e.message}`, ExitCode.INTERNAL)));
      // A worker gone without an 'error' (process.exit() in it, an abort, terminated from outside) answers
      // nothing more: its calls fail, as later ones do, instead of waiting for ever.
      w.on('exit', (code) => {
        if (!this.closing && !this.failed)
          this.failAll(
            new MfdError('ERR_WORKER', `compute worker ${i} exited (code ${code}) with its calls unanswered`, ExitCode.INTERNAL),
          );
      });
      w.unref();
      this.workers.push(w);
    }
  }

  /** The limits each worker runs under, as its thread reports them (empty once it has stopped). */
  resourceLimits(): ResourceLimits[] {
    return this.workers.map((w) => w.resourceLimits ?? {});
  }

  /** Runs `msg` on the channel's worker. */
  call<T>(channel: number, msg: ToWorker): Promise<T> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      // Work in flight keeps the process alive (a file save has no socket that would); idle workers do not.
      if (this.pending.size === 0) this.setRef(true);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.workers[channel % this.size]!.postMessage({ id, msg });
    });
  }

  async close(): Promise<void> {
    // A worker busy in a native call (a packet at a slow level) stops only once that call returns,
    // and a terminating worker does not keep the event loop alive: hold it open until all have
    // exited, or the command ends with its close still pending.
    const hold = setInterval(() => {}, 60_000);
    this.closing = true;
    try {
      await Promise.all(this.workers.map((w) => w.terminate()));
    } finally {
      clearInterval(hold);
    }
    // Every worker has exited: a call still unanswered never will be, and nothing it did (a write to
    // an output, which waits in the output's gate for this call) goes on. It fails, so the gate opens.
    this.failAll(new MfdError('ERR_WORKER', 'the compute pool was closed before this call finished', ExitCode.INTERNAL));
  }

  private failAll(e: Error): void {
    this.failed = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    this.setRef(false);
  }

  private setRef(on: boolean): void {
    for (const w of this.workers) {
      if (on) w.ref();
      else w.unref();
    }
  }
}
