/** pino logger on stderr; stdout is reserved for results (`--json`). */
import { pino, type Logger } from 'pino';
import { printable } from './text.js';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel = 'info', name = 'mfd'): Logger {
  // Messages may carry a peer's text (ramblock names, its error message): escaped (text.ts).
  const hooks = {
    logMethod(this: Logger, args: Parameters<Logger['info']>, method: (...a: unknown[]) => void) {
      method.apply(this, args.map((a) => (typeof a === 'string' ? printable(a) : a)));
    },
  };
  return pino({ name, level, base: { pid: process.pid }, hooks }, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything (library use and tests). */
export const silentLogger: Logger = pino({ level: 'silent' });
