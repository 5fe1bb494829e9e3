/** Shared option parsers: each refuses a bad value with the valid range in the message. */
import { UsageError } from '../errors.js';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { LOG_LEVELS, shiftLevel, type LogLevel } from '../log.js';
import { PAGE_SIZES } from '../wire/constants.js';
import { PSK_MODES } from '../transport/security.js';

/** A parser for an integer flag in min..max; `range` is how the message states the valid values. */
export function intInRange(flag: string, min: number, max: number, range = `${min}..${max}`): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`Expected an integer in ${range} for ${flag} but received "${v}".`);
    }
    return n;
  };
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "500ms", "90s", "2m", "1h"; a bare number is seconds. Milliseconds, or null when it is not a duration. */
export function parseDuration(v: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) return null;
  return Math.round(Number(m[1]) * DURATION_UNITS_MS[m[2] ?? 's']!);
}

/** A duration in milliseconds as an option shows it: "10s", "500ms", "2m". */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms >= 60_000 * 2) return `${ms / 60_000}m`;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/**
 * A parser for a duration flag in minMs..maxMs, to milliseconds: seconds by
 * default, or with a suffix (ms, s, m, h), as every duration mfd takes.
 */
export function durationInRange(flag: string, minMs: number, maxMs: number): (v: string) => number {
  return (v: string) => {
    const ms = parseDuration(v);
    if (ms === null || ms < minMs || ms > maxMs) {
      // A bare number past the range was likely meant as milliseconds.
      const hint =
        ms !== null && ms > maxMs && /^\d+$/.test(v.trim()) && Number(v) <= maxMs
          ? ` (a bare number is seconds: for milliseconds write ${v.trim()}ms)`
          : '';
      throw new InvalidArgumentError(
        `Expected a duration in ${formatDuration(minMs)}..${formatDuration(maxMs)} for ${flag} (seconds, or with a suffix: 500ms, 90s, 2m, 1h) but received "${v}"${hint}.`,
      );
    }
    return ms;
  };
}

/** QEMU's boolean parameter values: on|off (also true|false, yes|no). */
export function onOff(flag: string): (v: string) => boolean {
  return (v: string) => {
    const s = v.trim().toLowerCase();
    if (['on', 'true', 'yes'].includes(s)) return true;
    if (['off', 'false', 'no'].includes(s)) return false;
    throw new InvalidArgumentError(`Expected on or off for ${flag} but received "${v}".`);
  };
}

const count = (_: string, prev: number | undefined): number => (prev ?? 0) + 1;

export function commonOptions(): Option[] {
  return [
    new Option('--json', 'print the final summary (or the failure) as one JSON object on stdout'),
    new Option('--log-level <level>', 'log level on stderr (text lines on a terminal, JSON lines otherwise)')
      .choices(LOG_LEVELS)
      .default('warn')
      .env('MFD_LOG_LEVEL'),
    new Option('-v, --verbose', 'log more: each -v one step past --log-level (from warn: -v info, -vv debug, -vvv trace)').argParser(count),
    new Option(
      '-q, --quiet',
      'log less: each -q one step quieter than --log-level (from warn: -q errors only, -qq fatal, -qqq nothing); and no progress line unless --progress',
    ).argParser(count),
    new Option('--progress', 'show the progress line on stderr even when it is not a terminal (one line a second)'),
    new Option('--no-progress', 'no progress line (by default it shows whenever stderr is a terminal)'),
  ];
}

/**
 * Settles what commonOptions() leave open, once, before a command runs:
 * the log level after -v/-q, and whether the progress line shows (forced by
 * --progress/--no-progress, else when stderr is a terminal and not -q).
 */
export function settleCommonOptions(cmd: Command, stderrIsTTY: boolean): void {
  if (!cmd.options.some((o) => o.long === '--verbose')) return;
  const o = cmd.opts<{ logLevel: LogLevel; verbose?: number; quiet?: number; progress?: boolean }>();
  if (o.verbose || o.quiet) cmd.setOptionValue('logLevel', shiftLevel(o.logLevel, o.verbose ?? 0, o.quiet ?? 0));
  if (o.progress === undefined) cmd.setOptionValue('progress', stderrIsTTY && !o.quiet);
}

export function pageSizeOption(): Option {
  return new Option('--page-size <bytes>', 'page size: 4096, 16384 or 65536 (the packet header length follows)')
    .argParser((v: string) => {
      const n = Number(v);
      if (!(PAGE_SIZES as readonly number[]).includes(n))
        throw new InvalidArgumentError(`Expected one of ${PAGE_SIZES.join(', ')} for --page-size but received "${v}".`);
      return n;
    })
    .default(4096);
}

/** --tls-cert/--tls-key/--tls-ca and --psk-file (--psk-mode, --psk-identity), the same on send and recv (docs/control-protocol.md, "Authentication"). */
export function securityOptions(): Option[] {
  return [
    new Option('--tls-cert <file>', "TLS 1.3 on every connection: this side's certificate (PEM), with --tls-key and --tls-ca"),
    new Option('--tls-key <file>', "TLS: this side's private key (PEM)"),
    new Option(
      '--tls-ca <file>',
      "TLS: CA certificate(s) (PEM) that the peer's certificate must chain to; the sender also checks the receiver's host name",
    ),
    new Option(
      '--psk-file <file>',
      "a pre-shared key, mode 600: mfd's raw key file (its bytes, at least 16) or QEMU's keys.psk (IDENTITY:HEXKEY lines; a directory means DIR/keys.psk)",
    ),
    new Option(
      '--psk-mode <mode>',
      'with --psk-file: tls = TLS 1.3 on the key, every byte encrypted and protected (default); auth = a challenge-response per connection, then pages in clear and unprotected (trusted links)',
    ).choices(PSK_MODES),
    new Option(
      '--psk-identity <name>',
      "with --psk-file: the key file's identity to use (QEMU's tls-creds-psk username; default qemu if there, else the first); a receiver then accepts only it",
    ),
  ];
}

/** The authentication flags of securityOptions(), by their option key. */
export const SECURITY_FLAGS = {
  tlsCert: '--tls-cert',
  tlsKey: '--tls-key',
  tlsCa: '--tls-ca',
  pskFile: '--psk-file',
  pskMode: '--psk-mode',
  pskIdentity: '--psk-identity',
} as const;

export type SecurityOpts = { [K in keyof typeof SECURITY_FLAGS]?: string };

/** Authentication flags given where no network connection is made are refused, not ignored. */
export function refuseSecurityOptions(o: SecurityOpts, why: string): void {
  const flags = Object.entries(SECURITY_FLAGS)
    .filter(([k]) => o[k as keyof SecurityOpts] !== undefined)
    .map(([, flag]) => flag);
  if (flags.length === 0) return;
  throw new UsageError(`${flags.join(', ')}: authentication is for network connections; ${why}`);
}

export interface CommonOpts {
  json?: boolean;
  logLevel: (typeof LOG_LEVELS)[number];
  progress: boolean;
}

/**
 * Adds `--ALIAS` to `cmd` as another name of its option `target` (QEMU's
 * parameter names: --multifd-channels for --channels): the same value parser
 * and choices, hidden from --help, and the value lands under the target's key
 * as if the target had been given.
 */
export function addAlias(cmd: Command, target: Option, alias: string): void {
  const a = new Option(target.flags.replace(target.long!, `--${alias}`), `alias of ${target.long}`).hideHelp();
  if (target.parseArg) a.argParser(target.parseArg);
  if (target.argChoices) a.choices(target.argChoices);
  cmd.addOption(a);
  cmd.on(`option:${alias}`, () => cmd.setOptionValueWithSource(target.attributeName(), cmd.getOptionValue(a.attributeName()), 'cli'));
}
