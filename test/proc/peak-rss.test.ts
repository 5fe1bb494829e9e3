/**
 * A process's peak RSS (src/proc/proc.ts peakRssBytes, the summaries' `peak rss` and the bench's column)
 * is its own: Linux's getrusage keeps, across exec, the high-water mark of the process that forked it, so
 * mfd started by a large parent (the bench) would report the parent's size.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { peakRssBytes } from '../../src/proc/proc.js';

const MiB = 2 ** 20;

t.test('at least the RSS the process has now', async (t) => {
  const held = Buffer.alloc(64 * MiB, 1);
  t.ok(peakRssBytes() >= process.memoryUsage().rss - 4 * MiB, `peak ${peakRssBytes()} >= rss ${process.memoryUsage().rss}`);
  t.ok(held.length > 0);
});

t.test("a child's peak is its own, not the larger parent's that spawned it", async (t) => {
  const held = Buffer.alloc(300 * MiB, 1); // this process: over 300 MiB resident
  const proc = fileURLToPath(new URL('../../src/proc/proc.ts', import.meta.url));
  const child = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      `const { peakRssBytes } = await import(${JSON.stringify(proc)}); console.log(JSON.stringify({ peak: peakRssBytes(), ru: process.resourceUsage().maxRSS * 1024 }))`,
    ],
    { encoding: 'utf8' },
  );
  t.equal(child.status, 0, child.stderr);
  const { peak, ru } = JSON.parse(child.stdout) as { peak: number; ru: number };
  t.ok(peak > 10 * MiB && peak < 200 * MiB, `the child's own peak: ${(peak / MiB).toFixed(0)} MiB`);
  t.comment(`getrusage's maxRSS in the child: ${(ru / MiB).toFixed(0)} MiB (the parent holds ${(held.length / MiB).toFixed(0)} MiB)`);
});
