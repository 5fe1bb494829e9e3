/** Maps --compression names and wire flags to methods (QEMU's multifd_register_ops). */
import { UsageError } from '../errors.js';
import type { CompressionMethod, MethodOption, MethodParams } from './method.js';

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

/** The largest next_packet_size any method accepts for `normalPages` pages (a reader's buffer before the method is known). */
export function largestPayload(normalPages: number, pageSize: number): number {
  return Math.max(...[...byName.values()].map((m) => m.maxPayload(normalPages, pageSize)));
}

export function listMethods(): string[] {
  return [...byName.keys()];
}

/** Every method's command-line parameters (for the CLI to offer). */
export function allMethodOptions(): { method: string; option: MethodOption }[] {
  return [...byName.values()].flatMap((m) => m.options.map((option) => ({ method: m.name, option })));
}

/**
 * Fills defaults and range-checks a method's parameters against its options;
 * a key the method does not take is refused.
 */
export function checkParams(method: string, options: MethodOption[], user: MethodParams): MethodParams {
  const out: MethodParams = {};
  for (const key of Object.keys(user)) {
    if (!options.some((o) => o.key === key)) throw new UsageError(`method ${method} takes no parameter "${key}"`, 'ERR_METHOD_PARAMS');
  }
  for (const o of options) {
    const v = user[o.key] ?? o.default;
    if (o.type === 'bool') {
      if (typeof v !== 'boolean')
        throw new UsageError(`Expected on or off for --${o.flag} but received ${JSON.stringify(v)}`, 'ERR_METHOD_PARAMS');
      out[o.key] = v;
      continue;
    }
    if (o.type === 'choice') {
      if (typeof v !== 'string' || !o.choices?.includes(v))
        throw new UsageError(
          `Expected one of ${o.choices?.join(', ')} for --${o.flag} but received ${JSON.stringify(v)}`,
          'ERR_METHOD_PARAMS',
        );
      out[o.key] = v;
      continue;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < o.min || v > o.max) {
      throw new UsageError(
        `Expected an integer in ${o.min}..${o.max} for --${o.flag} but received ${JSON.stringify(v)}`,
        'ERR_METHOD_PARAMS',
      );
    }
    out[o.key] = v;
  }
  return out;
}
