#!/usr/bin/env node
// npm run fuzz [-- --seconds 300 --only method-zstd,inspect --batch 1000 --seed 42]
//
// Long fuzz runs of every decoder (the targets of test/fuzz, in test/helpers/fuzz/, loaded from
// their TypeScript sources through the loader the tests run under; the compute worker the methods
// use is dist/'s: npm run fuzz builds it first): each decoder runs for --seconds, in batches of
// --batch runs, each batch with a fresh random seed (or --seed, then --seed + 1, ...). A failure is shrunk, printed with
// its seed and path (replay it in a test with MFD_FUZZ_SEED and fast-check's `path`), and the run
// goes on with the next seed. Prints, per decoder: corpus size (the valid inputs mutated from),
// executions, executions per second, failures, peak RSS growth and the most frequent outcomes.
// Results: a table on stdout, failures in full and a JSON line per decoder in bench/results/fuzz.jsonl.
// Exit 1 when anything failed.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { register } from 'tsx/esm/api';

// The harness is test code, never compiled into dist/: the TypeScript loader the tests run under
// (tsx's, without a type check: tsc checks it in npm test) loads it, as it loads the tests.
register();
const { formatOutcomes, newStats, toProperty } = await import('../test/helpers/fuzz/harness.ts');
const { fuzzTargets } = await import('../test/helpers/fuzz/targets.ts');

const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    only: { type: 'string' },
    batch: { type: 'string', default: '1000' },
    seed: { type: 'string' },
  },
});
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const seconds = Number(opt.seconds);
const batch = Number(opt.batch);
if (!(seconds > 0) || !(batch > 0)) {
  console.error('--seconds and --batch must be positive numbers');
  process.exit(2);
}
const only = opt.only ? new Set(opt.only.split(',')) : null;
const entries = fuzzTargets().filter((e) => !only || only.has(e.name));
if (entries.length === 0) {
  console.error(
    `no decoder named ${opt.only}; decoders: ${fuzzTargets()
      .map((e) => e.name)
      .join(', ')}`,
  );
  process.exit(2);
}
let nextSeed = opt.seed !== undefined ? Number(opt.seed) | 0 : null;
const seed = () => (nextSeed !== null ? nextSeed++ : (Math.random() * 0x7fffffff) | 0);

const rows = [];
const allFailures = [];
console.error(`fuzzing ${entries.length} decoder(s), ${seconds} s each`);
for (const e of entries) {
  const target = await e.create();
  const stats = newStats();
  const property = toProperty(target, stats);
  const failures = [];
  const seeds = [];
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  try {
    // A batch cut by the deadline before its first run reports "failed" without a counterexample: not a finding.
    while (deadline - performance.now() > 50) {
      const s = seed();
      seeds.push(s);
      const r = await fc.check(property, {
        seed: s,
        numRuns: batch,
        plugins: [fc.interruptAfterTimeLimit(Math.max(1, deadline - performance.now()))],
      });
      if (r.failed && !(r.interrupted && r.counterexample === null)) {
        const error = r.errorInstance instanceof Error ? r.errorInstance.message : String(r.errorInstance);
        const f = {
          decoder: e.name,
          seed: s,
          path: r.counterexamplePath,
          error: error.split('\n')[0],
          counterexample: fc.stringify(r.counterexample).slice(0, 2000),
        };
        failures.push(f);
        console.error(
          `\n${e.name}: FAILURE with seed ${s}, path "${r.counterexamplePath}":\n  ${f.error}\n  counterexample: ${f.counterexample.slice(0, 400)}`,
        );
      }
    }
  } finally {
    await target.close();
  }
  const elapsed = (performance.now() - t0) / 1000;
  const row = {
    decoder: e.name,
    corpus: target.corpusSize,
    executions: stats.executions,
    execPerSecond: Math.round(stats.executions / elapsed),
    failures: failures.length,
    seconds: Math.round(elapsed),
    seeds: seeds.length,
    peakRssGrowthMiB: Math.round((stats.rssPeak - stats.rssBefore) / 1048576),
    outcomes: Object.fromEntries(stats.outcomes),
  };
  rows.push(row);
  allFailures.push(...failures);
  console.error(
    `${e.name}: ${row.executions} executions, ${row.execPerSecond}/s, ${row.failures} failure(s): ${formatOutcomes(stats).slice(0, 160)}`,
  );
}

const pad = (s, n) => String(s).padStart(n);
console.log('');
console.log('| decoder | corpus | executions | exec/s | failures | seeds | peak RSS growth MiB | most frequent outcomes |');
console.log('|---|---:|---:|---:|---:|---:|---:|---|');
for (const r of rows) {
  const top = Object.entries(r.outcomes)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  console.log(
    `| ${r.decoder} | ${pad(r.corpus, 3)} | ${pad(r.executions, 9)} | ${pad(r.execPerSecond, 6)} | ${r.failures} | ${r.seeds} | ${r.peakRssGrowthMiB} | ${top} |`,
  );
}
for (const f of allFailures) console.log(`\nFAILURE ${f.decoder} seed ${f.seed} path "${f.path}": ${f.error}\n  ${f.counterexample}`);

fs.mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
const at = new Date().toISOString();
for (const r of rows)
  fs.appendFileSync(
    path.join(root, 'bench', 'results', 'fuzz.jsonl'),
    JSON.stringify({ at, ...r, failures: allFailures.filter((f) => f.decoder === r.decoder) }) + '\n',
  );
process.exit(allFailures.length > 0 ? 1 : 0);
