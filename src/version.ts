/**
 * The package: its root folder and its version (from package.json, the one
 * source; --version and every --json output carry it).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The folder that holds mfd's package.json, found by walking up from this
 * module: the same answer from the sources (src/), the compiled tree (dist/)
 * and the bundles (dist/bundle/), which sit at different depths.
 */
function findPackageRoot(): { root: string; version: string } {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'mfd' && typeof pkg.version === 'string') return { root: dir, version: pkg.version };
    } catch {
      // no (readable) package.json here: go up
    }
    if (path.dirname(dir) === dir) throw new Error(`mfd's package.json is in no folder above ${start}`);
  }
}

const found = findPackageRoot();
/** The package's root folder: bin/, build/, dist/ and package.json are below it. */
export const PACKAGE_ROOT: string = found.root;
export const MFD_VERSION: string = found.version;

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
