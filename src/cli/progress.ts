/**
 * A progress display on stderr (bytes, rate, ETA). On a terminal one line
 * redrawn in place; elsewhere (forced with --progress) a plain line a second.
 * Whether it shows at all is the caller's (settleCommonOptions).
 */
import { formatBytes } from '../stats/stats.js';

export interface Progress {
  update(done: number, total: number): void;
  clear(): void;
}

const SILENT: Progress = { update() {}, clear() {} };

export function createProgress(label: string, enabled: boolean, terminal = process.stderr.isTTY === true): Progress {
  if (!enabled) return SILENT;
  const start = Date.now();
  let last = start; // no rate from the first packet alone
  let shown = false;
  const every = terminal ? 200 : 1000;
  return {
    update(done, total) {
      const now = Date.now();
      if (now - last < every && done < total) return;
      last = now;
      const sec = (now - start) / 1000;
      const rate = sec > 0 ? done / sec : 0;
      const eta = rate > 0 ? (total - done) / rate : 0;
      const pct = total > 0 ? ((100 * done) / total).toFixed(1) : '100.0';
      const line = `${label}: ${formatBytes(done)} / ${formatBytes(total)} (${pct}%), ${formatBytes(rate)}/s, ETA ${eta.toFixed(1)} s`;
      process.stderr.write(terminal ? `\r${line}\x1b[K` : `${line}\n`);
      shown = true;
    },
    clear() {
      if (shown && terminal) process.stderr.write('\r\x1b[K');
    },
  };
}
