/**
 * A native call's negative result as a NativeIoError (src/errors.ts): -errno, or one of the
 * addon's own codes, whose names and values come from the addon (native.resultCodes, built from
 * the one table in addon/common.h), never copied here.
 */
import os from 'node:os';
import { NativeIoError, type NativeIoFields } from '../errors.js';
import { native } from './load.js';

const names = new Map<number, string>([
  ...Object.entries(os.constants.errno).map(([name, errno]): [number, string] => [-errno, name]),
  ...Object.entries(native.resultCodes).map(([name, value]): [number, string] => [value, name]),
]);

/** ECONNRESET for -104, ESHORTREAD for native.resultCodes.ESHORTREAD, and so on. */
export function resultName(result: number): string {
  return names.get(result) ?? `errno ${-result}`;
}

/** The error for a native call's negative `result`, with what the call worked on and did. */
export function nativeIoError(result: number, fields: NativeIoFields): NativeIoError {
  return new NativeIoError(resultName(result), fields);
}
