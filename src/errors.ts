/**
 * Every failure mfd reports is an MfdError with a stable `code`. Messages say
 * where (channel, packet number) and what (received vs expected). Only the CLI
 * entry turns an error into an exit code, through `exitCode`.
 */

/** Documented process exit codes (see README, "Exit codes"). */
export const ExitCode = {
  OK: 0,
  /** Internal error: a bug in mfd. */
  INTERNAL: 1,
  /** Bad command line or option value. */
  USAGE: 2,
  /** The peer sent something that breaks the wire or control protocol. */
  PROTOCOL: 3,
  /** A connection failed, dropped or timed out. */
  CONNECTION: 4,
  /** The transfer finished but its digest or page coverage does not match. */
  VERIFY: 5,
  /** Reading an image or writing an output failed. */
  IO: 6,
  /** The peer reported a failure of its own. */
  REMOTE: 7,
  /** A hardware accelerator asked for is missing or unusable, or fell back under --require-hardware. */
  ACCEL: 8,
  /** A resume was refused: no progress journal, or it does not match the images. */
  RESUME: 9,
  /** Authentication failed: a certificate or pre-shared key proof was refused, by us or by the peer. */
  AUTH: 10,
  /** Interrupted (SIGINT, Ctrl-C): 128 + 2, the shell's convention. */
  INTERRUPTED: 130,
  /** Terminated (SIGTERM): 128 + 15. */
  TERMINATED: 143,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export interface ErrorPlace {
  channel?: number;
  packetNum?: bigint | number;
}

/** An error as --json prints it. */
export interface ErrorJson {
  name: string;
  code: string;
  message: string;
  channel?: number;
  packetNum?: number;
}

export class MfdError extends Error {
  readonly code: string;
  readonly exitCode: ExitCodeValue;
  readonly channel: number | undefined;
  readonly packetNum: bigint | number | undefined;

  constructor(code: string, message: string, exitCode: ExitCodeValue, place: ErrorPlace = {}, options?: { cause?: unknown }) {
    super(prefix(place) + message, options);
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.channel = place.channel;
    this.packetNum = place.packetNum;
  }

  toJSON(): ErrorJson {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      ...(this.channel !== undefined ? { channel: this.channel } : {}),
      ...(this.packetNum !== undefined ? { packetNum: Number(this.packetNum) } : {}),
    };
  }
}

function prefix(place: ErrorPlace): string {
  if (place.channel === undefined) return '';
  if (place.packetNum === undefined) return `channel ${place.channel}: `;
  return `channel ${place.channel}, packet ${place.packetNum}: `;
}

export class UsageError extends MfdError {
  constructor(message: string, code = 'ERR_USAGE') {
    super(code, message, ExitCode.USAGE);
  }
}

/** The peer broke the multifd wire format or the control protocol. */
export class ProtocolError extends MfdError {
  constructor(code: string, message: string, place: ErrorPlace = {}) {
    super(code, message, ExitCode.PROTOCOL, place);
  }
}

/**
 * A QEMU migration stream uses something mfd does not handle (another iterative
 * section, xbzrle, compress, postcopy, an unknown section type): refused, never guessed.
 */
export class UnsupportedStreamError extends MfdError {
  constructor(message: string, code = 'ERR_QEMU_UNSUPPORTED', place: ErrorPlace = {}) {
    super(code, message, ExitCode.PROTOCOL, place);
  }
}

export class ConnectionError extends MfdError {
  constructor(code: string, message: string, place: ErrorPlace = {}, cause?: unknown) {
    super(code, message, ExitCode.CONNECTION, place, { cause });
  }
}

export class VerifyError extends MfdError {
  constructor(code: string, message: string, place: ErrorPlace = {}) {
    super(code, message, ExitCode.VERIFY, place);
  }
}

export class IoError extends MfdError {
  constructor(code: string, message: string, cause?: unknown) {
    super(code, message, ExitCode.IO, {}, { cause });
  }
}

/** The other side failed and told us why over the control channel. */
export class RemoteError extends MfdError {
  readonly remoteCode: string;
  constructor(side: 'sender' | 'receiver', remoteCode: string, message: string) {
    super('ERR_REMOTE', `${side} failed: ${message} [${remoteCode}]`, ExitCode.REMOTE);
    this.remoteCode = remoteCode;
  }
}

/** An accelerator (IAA, QAT, DSA) asked for is missing, or fell back under --require-hardware. */
export class AccelError extends MfdError {
  constructor(code: string, message: string, place: ErrorPlace = {}) {
    super(code, message, ExitCode.ACCEL, place);
  }
}

/** `mfd send --resume` refused: no journal to resume from, or the images differ from the journaled ones. */
export class ResumeError extends MfdError {
  constructor(code: string, message: string) {
    super(code, message, ExitCode.RESUME);
  }
}

/**
 * A connection could not be authenticated: TLS (a certificate refused either way, a host name
 * that does not match) or the pre-shared key's challenge-response.
 */
export class AuthError extends MfdError {
  constructor(code: string, message: string, place: ErrorPlace = {}) {
    super(code, message, ExitCode.AUTH, place);
  }
}

export class InterruptedError extends MfdError {
  constructor(signal: string) {
    super('ERR_INTERRUPTED', `interrupted by ${signal}`, signal === 'SIGTERM' ? ExitCode.TERMINATED : ExitCode.INTERRUPTED);
  }
}

/**
 * `mfd bench` could not measure: a shaped link could not be made, or an mfd run failed (its exit
 * code is the failing side's, so a receiver's verification failure is still 5).
 */
export class BenchError extends MfdError {
  constructor(code: string, message: string, exitCode: ExitCodeValue = ExitCode.INTERNAL) {
    super(code, message, exitCode);
  }
}

export class NativeLoadError extends MfdError {
  constructor(message: string) {
    super('ERR_NATIVE_LOAD', message, ExitCode.INTERNAL);
  }
}

/** Wraps anything thrown into an MfdError (an unknown error is a bug: INTERNAL). */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EADDRINUSE',
  'EADDRNOTAVAIL',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
const FILE_CODES = new Set([
  'ENOENT',
  'EACCES',
  'EPERM',
  'ENOSPC',
  'EIO',
  'EISDIR',
  'ENOTDIR',
  'EEXIST',
  'EROFS',
  'EDQUOT',
  'EFBIG',
  'EMFILE',
  'ENFILE',
  'ENAMETOOLONG',
  'ELOOP',
  'ENOTEMPTY',
  'EBUSY',
  'EXDEV',
]);

export function asMfdError(err: unknown): MfdError {
  if (err instanceof MfdError) return err;
  const e = err instanceof Error ? err : new Error(String(err));
  const code = (e as NodeJS.ErrnoException).code;
  if (code !== undefined && NETWORK_CODES.has(code)) return new ConnectionError(`ERR_${code}`, e.message, {}, e);
  // Any other failed system call (a file that exists, a directory that does not, a full disk) is an
  // I/O condition of this host, not a bug: exit 6 with the system's words.
  if (code !== undefined && ((e as NodeJS.ErrnoException).syscall !== undefined || FILE_CODES.has(code)))
    return new IoError(`ERR_${code}`, e.message, e);
  return new MfdError('ERR_INTERNAL', e.stack ?? e.message, ExitCode.INTERNAL, {}, { cause: e });
}

/**
 * The failure of a run: the first one wins and is kept, later ones are
 * answered with it. An abort of `signal` is a failure (InterruptedError).
 * `onFirst` runs once, when the first failure is recorded (to tell the peer,
 * to tear the connections down). dispose() stops listening to the signal.
 */
export class FirstFailure {
  error: MfdError | null = null;
  private readonly onAbort = (): void => void this.fail(new InterruptedError(String(this.signal?.reason ?? 'abort')));

  constructor(
    private readonly signal?: AbortSignal,
    private readonly onFirst?: (e: MfdError) => void,
  ) {
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** Records `e` unless a failure came first; returns the failure that stands. */
  readonly fail = (e: unknown): MfdError => {
    if (!this.error) {
      this.error = asMfdError(e);
      this.onFirst?.(this.error);
    }
    return this.error;
  };

  dispose(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
  }
}
