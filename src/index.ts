/**
 * mfd as a library (the package's "exports"): the sender and receiver the
 * CLI runs, their options and results, the error classes with their exit
 * codes, and which addon and engines are in use.
 */
export { send, type SendOptions, type SendResult } from './sender/sender.js';
export { receive, type RecvOptions, type RecvResult } from './receiver/receiver.js';
export type { ChannelCounters, RunStats } from './stats/stats.js';
export {
  ExitCode,
  MfdError,
  UsageError,
  ProtocolError,
  UnsupportedStreamError,
  ConnectionError,
  VerifyError,
  IoError,
  RemoteError,
  AccelError,
  ResumeError,
  AuthError,
  InterruptedError,
  NativeLoadError,
  errorText,
} from './errors.js';
export { native, nativeFile } from './native/load.js';
export type { MfdBinding } from './native/binding.js';
