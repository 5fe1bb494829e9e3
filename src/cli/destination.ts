/**
 * The one parser of migration destinations, in QEMU's URI words:
 * `tcp:HOST:PORT` (or the bare `HOST:PORT`) and `file:PATH[,offset=N]`.
 * `--to` takes either; `--listen` only a TCP address.
 */
import { UsageError } from '../errors.js';
import { isFileUri, parseFileUri, type FileTarget } from '../file/target.js';
import { parseHostPort } from '../transport/connect.js';

export type Destination = { kind: 'tcp'; host: string; port: number } | { kind: 'file'; target: FileTarget };

const TCP_PREFIX = 'tcp:';

const tcp = (spec: string, defaultHost: string): { host: string; port: number } | null =>
  parseHostPort(spec.startsWith(TCP_PREFIX) ? spec.slice(TCP_PREFIX.length) : spec, defaultHost);

/** `tcp:HOST:PORT` or `HOST:PORT` (`[v6]:PORT`, `:PORT` = defaultHost); `flag` names the option in errors. */
export function parseTcpAddress(spec: string, flag: string, defaultHost: string): { host: string; port: number } {
  const at = tcp(spec, defaultHost);
  if (!at) throw new UsageError(`Expected HOST:PORT or tcp:HOST:PORT for ${flag} but received "${spec}"`);
  return at;
}

/** A network address (`tcp:HOST:PORT`, `HOST:PORT`) or a migration file (`file:PATH[,offset=N]`). */
export function parseDestination(spec: string, flag: string, defaultHost: string): Destination {
  if (isFileUri(spec)) return { kind: 'file', target: parseFileUri(spec, flag) };
  const at = tcp(spec, defaultHost);
  if (!at) throw new UsageError(`Expected HOST:PORT, tcp:HOST:PORT or file:PATH for ${flag} but received "${spec}"`);
  return { kind: 'tcp', ...at };
}
