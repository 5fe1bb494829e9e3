/** mfd's version, from package.json (the one source; --version and every --json output carry it). */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export const MFD_VERSION: string = (require('../package.json') as { version: string }).version;

/**
 * The version of the shape of every --json output (dist/schema/mfd-json.schema.json):
 * raised when a field changes meaning or goes away, not when one is added.
 */
export const JSON_SCHEMA_VERSION = 1;

/** The two fields every --json object starts with. */
export interface Versioned {
  'mfd-version': string;
  'schema-version': typeof JSON_SCHEMA_VERSION;
}

export function versioned<T extends object>(o: T): Versioned & T {
  return { 'mfd-version': MFD_VERSION, 'schema-version': JSON_SCHEMA_VERSION, ...o };
}
