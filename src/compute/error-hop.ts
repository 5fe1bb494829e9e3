/**
 * An error across the thread hop from a compute worker to the main thread: its fields go as they
 * are (code, channel, packet number, a native I/O failure's counts) and the same class is built
 * again on this side, so nothing is read back out of a message.
 */
import {
  AccelError,
  ConnectionError,
  ExitCode,
  IoError,
  MfdError,
  NativeIoError,
  ProtocolError,
  VerifyError,
  type ErrorPlace,
  type ExitCodeValue,
} from '../errors.js';
import type { SerializedError } from './messages.js';

/** What the worker posts for a failure. An error mfd does not know goes with its stack (it is a bug). */
export function serializeError(e: unknown): SerializedError {
  if (e instanceof NativeIoError) return { name: e.name, code: e.code, message: e.message, native: e.fields() };
  if (e instanceof MfdError) {
    return {
      name: e.name,
      code: e.code,
      message: e.message,
      exitCode: e.exitCode,
      ...(e.channel !== undefined ? { channel: e.channel } : {}),
      ...(e.packetNum !== undefined ? { packetNum: String(e.packetNum) } : {}),
    };
  }
  const err = e as { name?: string; code?: string; stack?: string };
  return { name: err.name ?? 'Error', code: err.code ?? 'ERR_INTERNAL', message: String(err.stack ?? e) };
}

/** The error again, on the main thread. */
export function reviveError(e: SerializedError): Error {
  if (e.native) return new NativeIoError(e.code, e.native);
  const place: ErrorPlace = {
    ...(e.channel !== undefined ? { channel: e.channel } : {}),
    ...(e.packetNum !== undefined ? { packetNum: BigInt(e.packetNum) } : {}),
  };
  switch (e.name) {
    case 'ProtocolError':
      return new ProtocolError(e.code, e.message, place);
    case 'VerifyError':
      return new VerifyError(e.code, e.message, place);
    case 'ConnectionError':
      return new ConnectionError(e.code, e.message, place);
    case 'IoError':
      return new IoError(e.code, e.message, undefined, place);
    case 'AccelError':
      return new AccelError(e.code, e.message, place);
    default:
      return new MfdError(e.code, e.message, (e.exitCode as ExitCodeValue | undefined) ?? ExitCode.INTERNAL, place);
  }
}
