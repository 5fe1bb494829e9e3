/**
 * Maps --compression names and wire flags to methods (QEMU's multifd_register_ops), at run time
 * and, through MethodRegistry, at compile time.
 */
import { UsageError } from '../errors.js';
import type { CompressionMethod, MethodOption, MethodParams, ParamsOf } from './method.js';

/**
 * Every method by its name, as a type: each method's file adds itself
 * (`declare module './registry.js' { interface MethodRegistry { zstd: typeof zstd } }`) beside
 * its registerMethod(), which takes only a method declared here. From it come the names
 * (MethodName) and each method's parameters (ParamsOfMethod), so a caller that picks a method
 * by name gets its parameters typed: a misspelt or wrongly typed one does not compile.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled by declaration merging, one entry per method file
export interface MethodRegistry {}

/** A registered method's --compression name. */
export type MethodName = keyof MethodRegistry & string;

/** The parameters of method N, typed as its options declare (a union over N when N is). */
export type ParamsOfMethod<N extends MethodName> = N extends MethodName
  ? MethodRegistry[N] extends { readonly options: infer O extends readonly MethodOption[] }
    ? ParamsOf<O>
    : never
  : never;

/**
 * A method and the parameters a caller gives it (each may be left to its default), correlated: for
 * `compression: 'zstd'`, `methodParams` takes only zstd's (`{ level?: number }`). Functions that take
 * it are generic in N, so the literal name a caller writes picks the shape its parameters must have.
 */
export interface MethodChoice<N extends MethodName = MethodName> {
  compression: N;
  methodParams?: Partial<ParamsOfMethod<N>>;
}

const byName = new Map<string, CompressionMethod>();
const byFlag = new Map<number, CompressionMethod>();

export function registerMethod<N extends MethodName>(m: MethodRegistry[N] & { readonly name: N }): void {
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

export function listMethods(): MethodName[] {
  return [...byName.keys()] as MethodName[];
}

/**
 * The one door from a method named at run time (the command line's --compression and the flags
 * made from allMethodOptions()) to a MethodChoice: the name must be registered, and the parameters
 * are checked against its options (UsageError naming the flag).
 */
export function methodChoice(name: string, params: Readonly<Record<string, unknown>>): MethodChoice {
  const m = getMethod(name);
  return { compression: m.name as MethodName, methodParams: m.params(params) };
}

/** Every method's command-line parameters (for the CLI to offer). */
export function allMethodOptions(): { method: string; option: MethodOption }[] {
  return [...byName.values()].flatMap((m) => m.options.map((option) => ({ method: m.name, option })));
}

/**
 * Fills defaults and range-checks a method's parameters against its options;
 * a key the method does not take is refused.
 */
export function checkParams<const O extends readonly MethodOption[]>(
  method: string,
  options: O,
  user: Readonly<Record<string, unknown>>,
): ParamsOf<O> {
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
      if (typeof v !== 'string' || !o.choices.includes(v))
        throw new UsageError(
          `Expected one of ${o.choices.join(', ')} for --${o.flag} but received ${JSON.stringify(v)}`,
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
  return out as ParamsOf<O>;
}
