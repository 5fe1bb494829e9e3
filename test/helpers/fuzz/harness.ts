/**
 * The fuzz harness: what every decoder's fuzz target promises and how it is
 * run. Used by the bounded, fixed-seed properties in test/fuzz/ (CI) and by
 * bench/fuzz.mjs (long runs with random seeds). Test code, not part of the
 * mfd program: it lives under test/, src/ never imports it, fast-check is a
 * dev dependency, and neither tsconfig.json nor the package has it.
 *
 * The contract every target checks: a peer's input ends in success (and then
 * the decoded result keeps the invariants the caller relies on: counts within
 * bounds, offsets inside the ramblock, exact output lengths) or in a typed
 * MfdError with a stable ERR_ code; never a TypeError, RangeError, native
 * abort, internal error, hang or unbounded allocation.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import fc from 'fast-check';
import { ExitCode, MfdError } from '../../../src/errors.js';

/** The garbage collector, so an RSS bound is checked on live memory rather than on garbage not yet collected. */
const collect: () => void = (() => {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return () => {};
  }
})();

/** A broken contract: the fuzzer found a bug. */
export class ContractViolation extends Error {
  override name = 'ContractViolation';
}

export function violation(message: string): never {
  throw new ContractViolation(message);
}

/** Returns `e` as a typed MfdError, or throws ContractViolation when it is anything else. */
export function typed(e: unknown, where: string): MfdError {
  if (e instanceof ContractViolation) throw e;
  if (e instanceof MfdError && /^ERR_[A-Z0-9_]+$/.test(e.code) && e.exitCode !== ExitCode.INTERNAL) return e;
  const what =
    e instanceof Error
      ? `${e.name}${(e as { code?: unknown }).code ? ` [${String((e as { code?: unknown }).code)}]` : ''}: ${e.stack ?? e.message}`
      : String(e);
  return violation(`${where}: untyped outcome ${what}`);
}

/** Runs `fn`; returns "ok" or the typed error's code (a ContractViolation passes through). */
export function outcome(where: string, fn: () => void): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return typed(e, where).code;
  }
}

export async function outcomeAsync(where: string, fn: () => Promise<void>): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    return typed(e, where).code;
  }
}

export interface FuzzTarget<T = unknown> {
  /** The decoder under test, e.g. "packet-header". */
  readonly name: string;
  /** Number of valid inputs the generators start from (mutated, truncated, extended): the corpus. */
  readonly corpusSize: number;
  readonly arbitrary: fc.Arbitrary<T>;
  /** True when run() returns a promise. */
  readonly async: boolean;
  /**
   * Decodes one input and checks the contract; returns "ok" or the typed
   * error's code, throws ContractViolation when the contract breaks.
   */
  run(input: T): string | Promise<string>;
  /** Frees what the target holds (servers, files, streams). */
  close(): void | Promise<void>;
}

export interface TargetStats {
  executions: number;
  /** Outcomes by "ok" or error code: shows how deep the inputs get. */
  outcomes: Map<string, number>;
  rssBefore: number;
  /** Largest RSS seen after an execution, in bytes. */
  rssPeak: number;
}

/** Allocation bound checked after each execution (RSS growth over the start of the run). */
export const RSS_GROWTH_LIMIT = 512 * 1024 * 1024;

/** Counts one execution; false when RSS is over the bound (the caller collects garbage and looks again). */
function record(stats: TargetStats, result: string): boolean {
  stats.executions++;
  stats.outcomes.set(result, (stats.outcomes.get(result) ?? 0) + 1);
  const rss = process.memoryUsage.rss();
  if (rss - stats.rssBefore > RSS_GROWTH_LIMIT) return false;
  if (rss > stats.rssPeak) stats.rssPeak = rss;
  return true;
}

function overBound(stats: TargetStats, name: string): never {
  const grew = Math.round((process.memoryUsage.rss() - stats.rssBefore) / 1048576);
  return violation(`${name}: RSS grew by ${grew} MiB after garbage collection, expected at most ${RSS_GROWTH_LIMIT / 1048576} MiB`);
}

const within = (stats: TargetStats): boolean => process.memoryUsage.rss() - stats.rssBefore <= RSS_GROWTH_LIMIT;

/**
 * Garbage counts in RSS until it is collected, and native contexts (zstd's,
 * for one) are freed by finalizers that run after the collection: judge only
 * what stays alive after both.
 */
async function collectFully(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    collect();
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function newStats(): TargetStats {
  const rss = process.memoryUsage.rss();
  return { executions: 0, outcomes: new Map(), rssBefore: rss, rssPeak: rss };
}

/** The target as a fast-check property that counts executions and outcomes into `stats`. */
export function toProperty<T>(target: FuzzTarget<T>, stats: TargetStats): fc.IRawProperty<[T]> {
  if (target.async) {
    return fc.asyncProperty(target.arbitrary, async (input) => {
      const result = await target.run(input);
      // fast-check chains runs on promises alone: give the event loop a turn now and then, so
      // native finalizers (codec contexts) run as they do in the program instead of piling up.
      if (stats.executions % 16 === 0) await new Promise((r) => setImmediate(r));
      if (record(stats, result)) return;
      await collectFully();
      if (!within(stats)) overBound(stats, target.name);
    });
  }
  return fc.property(target.arbitrary, (input) => {
    if (record(stats, target.run(input) as string)) return;
    collect();
    if (!within(stats)) overBound(stats, target.name);
  });
}

/** Fixed seed unless MFD_FUZZ_SEED says otherwise: CI runs are reproducible. */
export const DEFAULT_SEED = 0x6d6664;

/**
 * fast-check parameters for a bounded run: `defaultRuns` runs with the fixed
 * seed; MFD_FUZZ_RUNS=N runs N instead, MFD_FUZZ_SECONDS=S runs for S seconds
 * (as many runs as fit), MFD_FUZZ_SEED=N changes the seed (fast-check prints
 * seed and path of a failure, so `MFD_FUZZ_SEED=... ` replays it).
 */
export function fuzzParameters<Ts>(defaultRuns: number, env: NodeJS.ProcessEnv = process.env): fc.Parameters<Ts> {
  const seed = env.MFD_FUZZ_SEED !== undefined && env.MFD_FUZZ_SEED !== '' ? Number(env.MFD_FUZZ_SEED) | 0 : DEFAULT_SEED;
  const seconds = Number(env.MFD_FUZZ_SECONDS ?? 0);
  const runs = Number(env.MFD_FUZZ_RUNS ?? 0);
  if (seconds > 0) {
    return {
      seed,
      numRuns: Number.MAX_SAFE_INTEGER,
      endOnFailure: false,
      plugins: [fc.interruptAfterTimeLimit(seconds * 1000) as fc.Plugin<Ts>],
    };
  }
  return { seed, numRuns: runs > 0 ? Math.floor(runs) : defaultRuns };
}

/** Runs `target` as a property (fc.assert: a failure throws with seed, path and counterexample), then closes it. */
export async function assertTarget<T>(target: FuzzTarget<T>, defaultRuns: number): Promise<TargetStats> {
  const stats = newStats();
  try {
    await fc.assert(toProperty(target, stats), fuzzParameters<[T]>(defaultRuns));
  } finally {
    await target.close();
  }
  return stats;
}

/** "ok 120, ERR_PACKET_SIZE 31, ..." most frequent first. */
export function formatOutcomes(stats: TargetStats): string {
  return [...stats.outcomes]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}
