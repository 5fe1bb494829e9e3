/**
 * What a command gets from the CLI entry (cli/main.ts): where results and
 * status lines go, its logger and progress line, and the signal that stops
 * it. The commands see only this, never the entry itself.
 */
import type { Logger, LogLevel } from '../log.js';
import type { RunStats } from '../stats/stats.js';
import type { RunExtra } from './json.js';
import type { Progress } from './progress.js';

export interface CommandContext {
  out(text: string): void;
  logger(level: LogLevel): Logger;
  progress(label: string, enabled: boolean): Progress;
  /** The receiver's bound address, on stderr so scripts using port 0 can find it. */
  listening(address: string, port: number): void;
  /** A line for a person watching (progress of a long command), on stderr. */
  status(line: string): void;
  result(o: { json?: boolean }, stats: RunStats, extra?: RunExtra): void;
  signal: AbortSignal;
}
