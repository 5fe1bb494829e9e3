/**
 * pino logger on stderr; stdout is reserved for results (`--json`). On a
 * terminal the lines are plain text (pino-pretty); anywhere else (a file, a
 * pipe, a log collector) one JSON object per line.
 */
import { createRequire } from 'node:module';
import type * as Pino from 'pino';
import { printable } from './text.js';

/** What mfd logs through: pino's level methods (a pino logger is one). */
export type Logger = Pick<Pino.Logger, 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'>;

const require = createRequire(import.meta.url);

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The levels from most to least verbose: -v moves one step left of the chosen level, -q one step right. */
const BY_VERBOSITY: LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** `level` made `verbose` steps more verbose and `quiet` steps quieter, within trace..silent. */
export function shiftLevel(level: LogLevel, verbose: number, quiet: number): LogLevel {
  const i = BY_VERBOSITY.indexOf(level) - verbose + quiet;
  return BY_VERBOSITY[Math.min(BY_VERBOSITY.length - 1, Math.max(0, i))]!;
}

/** Text lines for a person at a terminal: time, level, message (pino-pretty, loaded only then). */
function prettyStderr(): Pino.DestinationStream {
  const pretty = require('pino-pretty') as typeof import('pino-pretty');
  return pretty({
    destination: 2,
    sync: true,
    colorize: !process.env.NO_COLOR,
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname,name',
  });
}

/**
 * A logger at `level` whose pino logger (`make`) is made with the first line that passes the level:
 * a run that writes none (a send, at the default level) never loads pino, some 30 ms of start-up.
 */
function lazyLogger(level: LogLevel, make: () => Pino.Logger): Logger {
  let real: Pino.Logger | null = null;
  const threshold = BY_VERBOSITY.indexOf(level);
  const method = (m: Exclude<LogLevel, 'silent'>): Pino.LogFn => {
    if (BY_VERBOSITY.indexOf(m) < threshold) return () => {};
    return ((...args: Parameters<Pino.LogFn>) => (real ??= make())[m](...args)) as Pino.LogFn;
  };
  return {
    fatal: method('fatal'),
    error: method('error'),
    warn: method('warn'),
    info: method('info'),
    debug: method('debug'),
    trace: method('trace'),
  };
}

export function createLogger(level: LogLevel = 'info', name = 'mfd', text = process.stderr.isTTY === true): Logger {
  return lazyLogger(level, () => {
    const { pino } = require('pino') as typeof Pino;
    // Messages may carry a peer's text (ramblock names, its error message): escaped (text.ts).
    const hooks = {
      logMethod(this: Pino.Logger, args: Parameters<Pino.LogFn>, method: (...a: unknown[]) => void) {
        method.apply(
          this,
          args.map((a) => (typeof a === 'string' ? printable(a) : a)),
        );
      },
    };
    const dest = text ? prettyStderr() : pino.destination({ fd: 2, sync: true });
    return pino({ name, level, base: { pid: process.pid }, hooks }, dest);
  });
}

/** A logger that drops everything (library use and tests). */
export const silentLogger: Logger = lazyLogger('silent', () => {
  throw new Error('silentLogger writes nothing');
});
