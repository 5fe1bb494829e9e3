/** Shared option parsers: each refuses a bad value with the valid range in the message. */
import { UsageError } from '../errors.js';
import { InvalidArgumentError, Option } from 'commander';
import { LOG_LEVELS } from '../log.js';
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

/** QEMU's boolean parameter values: on|off (also true|false, yes|no). */
export function onOff(flag: string): (v: string) => boolean {
  return (v: string) => {
    const s = v.trim().toLowerCase();
    if (['on', 'true', 'yes'].includes(s)) return true;
    if (['off', 'false', 'no'].includes(s)) return false;
    throw new InvalidArgumentError(`Expected on or off for ${flag} but received "${v}".`);
  };
}

export function commonOptions(): Option[] {
  return [
    new Option('--json', 'print the final summary (or the failure) as one JSON object on stdout'),
    new Option('--log-level <level>', 'log level for the JSON logs on stderr').choices(LOG_LEVELS).default('warn').env('MFD_LOG_LEVEL'),
    new Option('--no-progress', 'no progress line (it only shows when stdout and stderr are terminals)'),
  ];
}

export function pageSizeOption(): Option {
  return new Option('--page-size <bytes>', 'page size: 4096, 16384 or 65536 (the packet header length follows)')
    .argParser((v: string) => {
      const n = Number(v);
      if (!(PAGE_SIZES as readonly number[]).includes(n)) throw new InvalidArgumentError(`Expected one of ${PAGE_SIZES.join(', ')} for --page-size but received "${v}".`);
      return n;
    })
    .default(4096);
}

/** --tls-cert/--tls-key/--tls-ca and --psk-file (--psk-mode, --psk-identity), the same on send and recv (docs/control-protocol.md, "Authentication"). */
export function securityOptions(): Option[] {
  return [
    new Option('--tls-cert <file>', 'TLS 1.3 on every connection: this side\'s certificate (PEM), with --tls-key and --tls-ca'),
    new Option('--tls-key <file>', "TLS: this side's private key (PEM)"),
    new Option('--tls-ca <file>', "TLS: CA certificate(s) (PEM) that the peer's certificate must chain to; the sender also checks the receiver's host name"),
    new Option('--psk-file <file>', "a pre-shared key, mode 600: mfd's raw key file (its bytes, at least 16) or QEMU's keys.psk (IDENTITY:HEXKEY lines; a directory means DIR/keys.psk)"),
    new Option('--psk-mode <mode>', 'with --psk-file: tls = TLS 1.3 on the key, every byte encrypted and protected (default); auth = a challenge-response per connection, then pages in clear and unprotected (trusted links)').choices(PSK_MODES),
    new Option('--psk-identity <name>', "with --psk-file: the key file's identity to use (QEMU's tls-creds-psk username; default qemu if there, else the first); a receiver then accepts only it"),
  ];
}

/** The authentication flags of securityOptions(), by their option key. */
export const SECURITY_FLAGS = { tlsCert: '--tls-cert', tlsKey: '--tls-key', tlsCa: '--tls-ca', pskFile: '--psk-file', pskMode: '--psk-mode', pskIdentity: '--psk-identity' } as const;

export type SecurityOpts = { [K in keyof typeof SECURITY_FLAGS]?: string };

/** Authentication flags given where no network connection is made are refused, not ignored. */
export function refuseSecurityOptions(o: SecurityOpts, why: string): void {
  const flags = Object.entries(SECURITY_FLAGS).filter(([k]) => o[k as keyof SecurityOpts] !== undefined).map(([, flag]) => flag);
  if (flags.length === 0) return;
  throw new UsageError(`${flags.join(', ')}: authentication is for network connections; ${why}`);
}

export interface CommonOpts {
  json?: boolean;
  logLevel: (typeof LOG_LEVELS)[number];
  progress: boolean;
}
