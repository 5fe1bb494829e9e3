/**
 * mfd as a library (the package's "exports"): migrate() and migrateIncoming(),
 * which take a typed destination or source (an mfd or a QEMU, over TCP or in a
 * file) as the CLI does; the network sender and receiver they run, and delta
 * transfer's extensions of them; their
 * options and results, the error classes with their exit codes, and which addon
 * and engines are in use.
 */
export {
  migrate,
  migrateIncoming,
  type SendDestination,
  type RecvSource,
  type MigrateOptions,
  type MigrateResult,
  type IncomingOptions,
  type IncomingResult,
  type QemuShape,
} from './migrate/migrate.js';
export { send, type SendOptions, type SendResult, type SendExtension } from './sender/sender.js';
export { receive, type RecvOptions, type RecvResult } from './receiver/receiver.js';
export type { RecvExtension } from './receiver/extension.js';
// Delta transfer for send() and receive() alone: their `extension` (migrate() and migrateIncoming() wire it in themselves).
export { deltaSender } from './delta/sender.js';
export { deltaReceiver, type DeltaRecvOptions } from './delta/receiver.js';
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
