/** A one-line progress display on stderr (bytes, rate, ETA), only when stdout and stderr are terminals. */
import { formatBytes } from '../stats.js';

export interface Progress {
  update(done: number, total: number): void;
  clear(): void;
}

const SILENT: Progress = { update() {}, clear() {} };

export function createProgress(label: string, enabled: boolean): Progress {
  if (!enabled || !process.stdout.isTTY || !process.stderr.isTTY) return SILENT;
  const start = Date.now();
  let last = start; // no rate from the first packet alone
  let shown = false;
  return {
    update(done, total) {
      const now = Date.now();
      if (now - last < 200 && done < total) return;
      last = now;
      const sec = (now - start) / 1000;
      const rate = sec > 0 ? done / sec : 0;
      const eta = rate > 0 ? (total - done) / rate : 0;
      const pct = total > 0 ? ((100 * done) / total).toFixed(1) : '100.0';
      process.stderr.write(`\r${label}: ${formatBytes(done)} / ${formatBytes(total)} (${pct}%), ${formatBytes(rate)}/s, ETA ${eta.toFixed(1)} s\x1b[K`);
      shown = true;
    },
    clear() {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}
