/**
 * Loads a codec package the first time its method is used, so `none` never
 * depends on it and a package that cannot load is reported as that method
 * being unavailable, with the reason, instead of failing every command.
 */
import { createRequire } from 'node:module';
import { UsageError } from '../errors.js';

const require = createRequire(import.meta.url);

export function lazyModule<T>(pkg: string, method: string): () => T {
  let mod: T | undefined;
  return () => {
    if (mod === undefined) {
      try {
        mod = require(pkg) as T;
      } catch (e) {
        throw new UsageError(
          `--compression ${method} is unavailable: package ${pkg} did not load (${(e as Error).message.split('\n')[0]})`,
          'ERR_METHOD_UNAVAILABLE',
        );
      }
    }
    return mod;
  };
}
