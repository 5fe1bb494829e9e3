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

/**
 * A ramblock name as a file name, the default name of its output: bytes
 * outside [A-Za-z0-9._@+-] and a leading dot as %XX ("/rom@etc/acpi/tables"
 * -> "%2From@etc%2Facpi%2Ftables"). One name per file name (`%` itself is
 * %25), never `.`, `..`, a hidden name or one with `/`.
 */
export function ramblockFileName(name: string): string {
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_@+-]/.test(c) || (c === '.' && out !== '') ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * `NAME=PATH` (a sender's image, a receiver's --output): the text before the
 * first `=` is a ramblock name when it has no `/`; otherwise the whole is a
 * path (a path may contain `=`). A name with `/`, `=` or any byte is written
 * %XX-escaped as its default file name shows it (ramblockFileName): %2F for
 * `/`, %3D for `=`, %25 for `%`; a `%` not followed by two hex digits is
 * itself. Null when `spec` is a plain path.
 */
export function splitNamedSpec(spec: string): BlockSpec | null {
  const eq = spec.indexOf('=');
  if (eq <= 0 || spec.slice(0, eq).includes('/')) return null;
  return { name: unescapeName(spec.slice(0, eq)), path: spec.slice(eq + 1) };
}

function unescapeName(s: string): string {
  const bytes: Buffer[] = [];
  let at = 0;
  for (const m of s.matchAll(/%([0-9A-Fa-f]{2})/g)) {
    bytes.push(Buffer.from(s.slice(at, m.index), 'utf8'), Buffer.of(parseInt(m[1]!, 16)));
    at = m.index + 3;
  }
  bytes.push(Buffer.from(s.slice(at), 'utf8'));
  return Buffer.concat(bytes).toString('utf8');
}

/** `vm1.ram` -> {name: 'vm1.ram', path}; `ram0=/path/vm1.ram` -> {name: 'ram0', path}. */
export function parseBlockSpec(spec: string): BlockSpec {
  const named = splitNamedSpec(spec);
  const name = named ? named.name : path.basename(spec);
  const file = named ? named.path : spec;
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
