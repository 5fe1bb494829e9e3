/**
 * The logger (src/log.ts): pino is loaded with the first line that passes the level, so a run that
 * writes none (a send at the default level) never pays for loading it; lines that pass are pino's.
 */
import t from 'tap';
import { createRequire } from 'node:module';
import { createLogger, silentLogger } from '../../src/log.js';

const require = createRequire(import.meta.url);
const pinoLoaded = (): boolean => Object.keys(require.cache).some((k) => /[\\/]node_modules[\\/]pino[\\/]/.test(k));

t.test('pino is loaded only with the first line that passes the level', async (t) => {
  t.notOk(pinoLoaded(), 'not loaded by importing the logger');
  const log = createLogger('warn', 'mfd', false);
  log.info('below the level');
  log.debug({ x: 1 }, 'below the level');
  silentLogger.error('the silent logger writes nothing');
  t.notOk(pinoLoaded(), 'not loaded by lines below the level, nor by the silent logger');
  // pino writes to fd 2 synchronously (sonic-boom's fs.writeSync), not through process.stderr: watch that.
  const writes: string[] = [];
  const fs = require('node:fs') as { writeSync: (...a: unknown[]) => number };
  const writeSync = fs.writeSync;
  fs.writeSync = (...a: unknown[]): number => {
    if (a[0] === 2) writes.push(String(a[1]));
    return writeSync(...a);
  };
  t.teardown(() => {
    fs.writeSync = writeSync;
  });
  log.warn({ channel: 3 }, 'a line\nthat passes');
  t.ok(pinoLoaded(), 'loaded by a line that passes');
  const line = writes.map((w) => w.trim()).find((w) => w.includes('that passes'));
  t.ok(line, 'the line was written to stderr');
  t.match(JSON.parse(line!), { level: 40, name: 'mfd', channel: 3, msg: 'a line\\nthat passes' }, "pino's JSON, the peer's text escaped");
});
