/** Ramblock specs: `path` or `name=path` on the sender, `name=path` outputs on the receiver. */
import path from 'node:path';
import { UsageError } from '../errors.js';
import { RAMBLOCK_NAME_MAX } from '../wire/constants.js';

export interface BlockSpec {
  name: string;
  path: string;
}

/** Checks a ramblock name: 1..255 bytes of UTF-8, no NUL. */
export function checkRamblockName(name: string, where = 'ramblock name'): string | null {
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes === 0) return `${where} is empty`;
  if (bytes > RAMBLOCK_NAME_MAX) return `${where} "${name.slice(0, 40)}..." is ${bytes} bytes, expected at most ${RAMBLOCK_NAME_MAX}`;
  if (name.includes('\0')) return `${where} contains a NUL byte`;
  return null;
}

/** A name that can be used as a file name inside an output directory, as it is. */
export function isSafeFileName(name: string): boolean {
  return name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

/** `vm1.ram` -> {name: 'vm1.ram', path}; `ram0=/path/vm1.ram` -> {name: 'ram0', path}. */
export function parseBlockSpec(spec: string): BlockSpec {
  const eq = spec.indexOf('=');
  // A path may itself contain '=', so only a prefix without '/' counts as a name.
  const named = eq > 0 && !spec.slice(0, eq).includes('/');
  const name = named ? spec.slice(0, eq) : path.basename(spec);
  const file = named ? spec.slice(eq + 1) : spec;
  if (file === '') throw new UsageError(`image "${spec}" has no path`);
  const bad = checkRamblockName(name, `ramblock name of "${spec}"`);
  if (bad) throw new UsageError(bad);
  return { name, path: file };
}

export function parseBlockSpecs(specs: string[]): BlockSpec[] {
  const out = specs.map(parseBlockSpec);
  const seen = new Set<string>();
  for (const b of out) {
    if (seen.has(b.name)) throw new UsageError(`ramblock name "${b.name}" is given twice; name one of them with name=path`);
    seen.add(b.name);
  }
  return out;
}
