/**
 * Every failure mfd reports is an MfdError with a stable `code`. Where it
 * happened (channel, packet number) is kept in fields, what happened (received
 * vs expected) is the message; errorText() puts the two together, once, where
 * an error is shown (the CLI, a report, the peer). Only the CLI entry turns an
 * error into an exit code, through `exitCode`.
 */

import os from 'node:os';

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
  /** What happened; where is in channel and packetNum. */
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
    super(message, options);
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

/** "channel 1, packet 3: " (or "channel 1: "), or nothing without a channel. */
function placeText(place: ErrorPlace): string {
  if (place.channel === undefined) return '';
  if (place.packetNum === undefined) return `channel ${place.channel}: `;
  return `channel ${place.channel}, packet ${place.packetNum}: `;
}

/**
 * An error as a person reads it: where, then what ("channel 1, packet 3: flags received 0x4, expected
 * 0x0"). The one place an error's fields become text; anything else gives the message as it is.
 */
export function errorText(e: unknown): string {
  if (e instanceof MfdError) return placeText(e) + e.message;
  return e instanceof Error ? e.message : String(e);
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
  constructor(code: string, message: string, cause?: unknown, place: ErrorPlace = {}) {
    super(code, message, ExitCode.IO, place, { cause });
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

/** What a failed native I/O call (src/native/io-error.ts) worked on, and what it did. */
export interface NativeIoFields {
  /** The descriptor's role: a file by position, pages that may be a file mapping, a multifd channel's socket. */
  on: 'file' | 'pages' | 'socket';
  /** read or write (a file, a packet's pages to their file, a socket), scan (zero check and CRC-32C), copy. */
  op: 'read' | 'write' | 'scan' | 'copy';
  /** The file position of the failed call. */
  at?: number;
  /** The bytes the failed call asked for. */
  asked?: number;
  /** The bytes it moved (a short read or write; a socket's bytes sent or received). */
  moved?: number;
  /** EPADDING: the index (among the packet's offsets) of the page with non-zero bytes past the block's end. */
  badPage?: number;
}

/**
 * A failed call into the addon's I/O: positional file reads and writes, a packet's page scan, copy
 * or write, a socket channel's send or receive. `code` is an errno name (ENOSPC, ECONNRESET, ...)
 * or one of the addon's own (ESHORTREAD, ESHORTWRITE, EPADDING, ESTALLED: native.resultCodes).
 * Not an MfdError: nativeIoFailure() makes it one, with what its caller knows.
 */
export class NativeIoError extends Error implements NativeIoFields {
  readonly on: NativeIoFields['on'];
  readonly op: NativeIoFields['op'];
  readonly at: number | undefined;
  readonly asked: number | undefined;
  readonly moved: number | undefined;
  readonly badPage: number | undefined;

  constructor(
    readonly code: string,
    fields: NativeIoFields,
  ) {
    super(nativeIoWhat(code, fields));
    this.name = 'NativeIoError';
    this.on = fields.on;
    this.op = fields.op;
    this.at = fields.at;
    this.asked = fields.asked;
    this.moved = fields.moved;
    this.badPage = fields.badPage;
  }

  /** The errno when `code` names one (not for the addon's own codes). */
  get errno(): number | undefined {
    return (os.constants.errno as Record<string, number>)[this.code];
  }

  /** The fields, to rebuild the error on the other side of a thread hop. */
  fields(): NativeIoFields {
    const { on, op, at, asked, moved, badPage } = this;
    return { on, op, at, asked, moved, badPage };
  }
}

function nativeIoWhat(code: string, f: NativeIoFields): string {
  const at = f.at !== undefined ? ` at byte ${f.at}` : '';
  switch (code) {
    case 'ESHORTREAD':
      return `${f.op}${at}: end of file${f.asked !== undefined ? `, read ${f.moved ?? 0} of ${f.asked} bytes` : ''}`;
    case 'ESHORTWRITE':
      return `${f.op}${at}: short write, ${f.moved ?? 0} of ${f.asked ?? '?'} bytes written`;
    case 'EPADDING':
      return `${f.op}: non-zero bytes past the end of the block (page ${f.badPage ?? '?'})`;
    case 'ESTALLED':
      return `${f.op}: no progress within the timeout`;
    default:
      return `${f.op}${at}: ${code}${f.asked !== undefined && f.on === 'file' ? ` (${f.asked} bytes)` : ''}`;
  }
}

/** What the caller of a native I/O call knows, as fields: the file or stream, the channel and packet. */
export interface NativeIoContext extends ErrorPlace {
  /** What was read or written, as a message names it: `image "/a"`, `ram block "pc.ram" to "/b"`. */
  subject?: string;
  /** The code instead of the default: ERR_<errno name>, ERR_SHORT_WRITE; ERR_CHANNEL_CONNECTION for a socket. */
  code?: string;
  /** What to check, said after the what in parentheses. */
  hint?: string;
}

/**
 * The one way a native I/O failure becomes an MfdError: an IoError (exit 6) for a file or mapped
 * pages, a ConnectionError (exit 4) for a socket. Callers handle the codes that mean something
 * to them first (ESHORTREAD of an image: it shrank; ESTALLED: the peer stopped) and hand the rest here.
 */
export function nativeIoFailure(e: NativeIoError, ctx: NativeIoContext = {}): MfdError {
  const { subject, code, hint, ...place } = ctx;
  const why = hint !== undefined ? ` (${hint})` : '';
  if (e.on === 'socket')
    return new ConnectionError(
      code ?? 'ERR_CHANNEL_CONNECTION',
      `${subject !== undefined ? `${subject}: ` : ''}${e.message}${why}`,
      place,
      e,
    );
  const verb = e.op === 'write' ? 'writing' : 'reading';
  const at = e.at !== undefined ? ` at byte ${e.at}` : '';
  const what =
    e.code === 'ESHORTWRITE'
      ? `short write, ${e.moved ?? 0} of ${e.asked ?? '?'} bytes written (disk full, or a file size limit?)`
      : `${e.code}${e.asked !== undefined && e.code !== 'ESHORTREAD' ? ` (${e.asked} bytes)` : ''}`;
  const target = subject ?? (e.on === 'pages' ? 'mapped pages' : 'a file');
  return new IoError(
    code ?? (e.code === 'ESHORTWRITE' ? 'ERR_SHORT_WRITE' : `ERR_${e.code}`),
    `${verb} ${target}${at}: ${what}${why}`,
    e,
    place,
  );
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
  if (err instanceof NativeIoError) return nativeIoFailure(err);
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
