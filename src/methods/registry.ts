/** Maps --compression names and wire flags to methods (QEMU's multifd_register_ops). */
import { UsageError } from '../errors.js';
import type { CompressionMethod } from './method.js';

const byName = new Map<string, CompressionMethod>();
const byFlag = new Map<number, CompressionMethod>();

export function registerMethod(m: CompressionMethod): void {
  if (byName.has(m.name)) throw new Error(`compression method ${m.name} registered twice`);
  if (byFlag.has(m.flag)) throw new Error(`compression flag 0x${m.flag.toString(16)} registered twice`);
  byName.set(m.name, m);
  byFlag.set(m.flag, m);
}

export function getMethod(name: string): CompressionMethod {
  const m = byName.get(name);
  if (!m) throw new UsageError(`Expected one of ${listMethods().join('|')} for --compression but received "${name}"`, 'ERR_UNKNOWN_METHOD');
  return m;
}

export function methodByFlag(flag: number): CompressionMethod | undefined {
  return byFlag.get(flag);
}

export function listMethods(): string[] {
  return [...byName.keys()];
}
