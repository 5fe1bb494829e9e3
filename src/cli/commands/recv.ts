/** `mfd recv`: listen for one migration and write its ramblocks to files. */
import fs from 'node:fs';
import { Command, Option } from 'commander';
import { IoError, UsageError } from '../../errors.js';
import { checkRamblockName, splitNamedSpec } from '../../image/ramblock.js';
import { recvSource, runRecv, type Outputs, type RecvSourceOpts } from '../destination.js';
import { addAlias, commonOptions, durationInRange, intInRange, securityOptions, type CommonOpts } from '../options.js';
import { MAX_CHANNELS } from '../../control/protocol.js';
import type { CommandContext } from '../context.js';
import { requireDelta } from '../../delta/fingerprint.js';
import type { DeltaRecvOptions } from '../../delta/receiver.js';

interface RecvOpts extends CommonOpts, RecvSourceOpts {
  output: string[];
  fsync?: boolean;
  threads?: number;
  requireHardware?: boolean;
  base?: string[];
  baseDir?: string[];
}

/** --delta, --base NAME=PATH, --base-dir DIR: the bases to offer, or null without any of them. */
function deltaOptions(o: RecvOpts): DeltaRecvOptions | null {
  if (!o.delta && !o.base && !o.baseDir) return null;
  requireDelta('--delta');
  const bases = (o.base ?? []).map((spec) => {
    const named = splitNamedSpec(spec);
    if (!named) throw new UsageError(`--base "${spec}": expected NAME=PATH`);
    return named;
  });
  for (const d of o.baseDir ?? [])
    if (!fs.statSync(d, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--base-dir "${d}" is not a directory`);
  return { bases, dirs: o.baseDir ?? [] };
}

/** --output: one directory and/or NAME=PATH for single ramblocks; a directory must exist and take new files. */
function parseOutputs(specs: string[]): Outputs & { outputMap: Map<string, string> } {
  let outputDir: string | undefined;
  const outputMap = new Map<string, string>();
  for (const spec of specs) {
    const named = splitNamedSpec(spec);
    if (named) {
      const bad = checkRamblockName(named.name, `--output ${spec}`);
      if (bad) throw new UsageError(bad);
      if (outputMap.has(named.name)) throw new UsageError(`--output names ram block "${named.name}" twice`);
      outputMap.set(named.name, named.path);
    } else {
      if (outputDir) throw new UsageError(`--output gives two directories ("${outputDir}" and "${spec}"); give one`);
      if (!fs.statSync(spec, { throwIfNoEntry: false })?.isDirectory())
        throw new UsageError(`--output "${spec}" is not a directory (use NAME=PATH for a single file)`);
      try {
        fs.accessSync(spec, fs.constants.W_OK | fs.constants.X_OK);
      } catch (e) {
        // Found now, not once a sender has connected and sent its hello.
        throw new IoError(
          `ERR_${(e as NodeJS.ErrnoException).code ?? 'ACCESS'}`,
          `--output "${spec}": cannot create files there: ${(e as Error).message}`,
          e,
        );
      }
      outputDir = spec;
    }
  }
  return { ...(outputDir !== undefined ? { outputDir } : {}), outputMap };
}

export function recvCommand(ctx: CommandContext): Command {
  const channelsOption = new Option(
    '--channels <n>',
    "with --qemu: the source's multifd-channels, as QEMU's destination is given it: exactly N multifd channels (ids 0..N-1) must connect, " +
      '0 when multifd is off (default: as many as connect; a missing highest channel that carried no pages then goes unseen)',
  ).argParser(intInRange('--channels', 0, MAX_CHANNELS, `0..${MAX_CHANNELS}`));
  const cmd = new Command('recv')
    .summary('receive one migration from mfd send into image files')
    .description(
      'Listens on HOST:PORT for one migration: a control channel and the multifd channels it announces.\n' +
        'Or, with --from file:PATH[,offset=N], restores a migration file written by mfd send --to file:...\n' +
        'Each ramblock is written to DIR/NAME, its name made a file name (bytes other than A-Za-z0-9._@+- and a leading dot as %XX: ' +
        '/rom@etc/acpi/tables -> %2From@etc%2Facpi%2Ftables), or where NAME=PATH says (NAME written the same way when it has a / or =), under a temporary ' +
        'name until packet counts, page coverage and digests have been verified; then it is renamed.\n' +
        "With --qemu, stands in for a QEMU migration destination: point the VM's migrate at HOST:PORT,\n" +
        "or read what QEMU's migrate file:PATH[,offset=N] wrote (with or without mapped-ram) with --from file:PATH[,offset=N];\n" +
        'each ramblock goes to DIR/<name> and the device state to DIR/device-state, with DIR/manifest.json.',
    )
    .addOption(
      new Option(
        '--qemu',
        'receive a migration from QEMU itself (migrate tcp:HOST:PORT), with or without multifd, or read its migration file (--from file:PATH)',
      ),
    )
    .option('--listen <host:port>', 'address to listen on, HOST:PORT or tcp:HOST:PORT (":4444" = all interfaces; port 0 picks a free one)')
    .option(
      '--from <file:path>',
      'restore from a migration file instead: file:PATH[,offset=N] (refused unless its trailer is valid: "incomplete migration file"); with --qemu, a file QEMU\'s migrate file: wrote',
    )
    .requiredOption(
      '--output <dir|name=path...>',
      'output directory, and/or NAME=PATH for single ramblocks (repeatable; NAME as its file name in DIR shows it: %2F for /, %3D for =)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .addOption(
      new Option(
        '--in-place',
        'write into existing output files (zero pages are zeroed) instead of a temporary file renamed at the end; a NAME.mfd-partial marker stays until verified',
      ),
    )
    .addOption(new Option('--fsync', 'flush each output to disk before it takes its final name (slower; like rsync --fsync)'))
    .addOption(channelsOption)
    .addOption(
      new Option(
        '--threads <n>',
        "compute worker threads for decompression where a channel's own thread cannot decode: qpl, qatzip, zstd-napi and lz4-napi, TLS channels, --dump-streams (default: min(channels, cores))",
      ).argParser(intInRange('--threads', 1, 256)),
    )
    .addOption(new Option('--dump-streams <dir>', "also save each multifd channel's raw bytes to DIR/channel-N.bin (for mfd inspect)"))
    .addOption(
      new Option('--require-hardware', 'fail instead of decoding in software when the method has a hardware path (qpl: IAA, qatzip: QAT)'),
    )
    .addOption(
      new Option('--timeout <duration>', 'fail when a connected channel sends nothing for this long (seconds, or 500ms, 2m)')
        .argParser(durationInRange('--timeout', 1, 86_400_000))
        .default(60_000, '60s'),
    )
    .addOption(
      new Option(
        '--no-journal',
        'keep no progress journal: no periodic flushes, and a failure removes the temporary outputs (no mfd send --resume)',
      ),
    )
    .addOption(
      new Option(
        '--resume-wait <duration>',
        'after a failed migration, keep listening this long for the next sender: mfd send --resume when a journal was kept, else a new migration (seconds, or 500ms, 2m; 0: exit at once)',
      )
        .argParser(durationInRange('--resume-wait', 0, 86_400_000))
        .default(0),
    )
    .addOption(
      new Option(
        '--delta',
        "offer bases to a sender with --delta: each output's existing file (with --in-place written where it is, no copy), and --base / --base-dir; pages found in them travel as references",
      ),
    )
    .addOption(
      new Option(
        '--base <name=path>',
        "a base image for --delta (repeatable; implies --delta); with --from, where the delta file's base NAME is (never its recorded path)",
      ).argParser((v: string, prev: string[] = []) => [...prev, v]),
    )
    .addOption(
      new Option(
        '--base-dir <dir>',
        "every file in DIR (not starting with a dot) is a base for --delta (repeatable; implies --delta); with --from, the delta file's bases are looked up by name in DIR",
      ).argParser((v: string, prev: string[] = []) => [...prev, v]),
    )
    .addOption(
      new Option(
        '--insecure',
        'listen on a non-loopback address without --tls-* or --psk-file: any sender that reaches the port can write the outputs',
      ),
    );
  for (const o of [...securityOptions(), ...commonOptions()]) cmd.addOption(o);
  addAlias(cmd, channelsOption, 'multifd-channels');
  cmd.action(async (o: RecvOpts) => {
    const outputs = parseOutputs(o.output);
    const delta = deltaOptions(o);
    const logger = ctx.logger(o.logLevel);
    const src = recvSource(cmd, o, outputs, delta, logger);
    await runRecv(ctx, o, src, {
      ...outputs,
      inPlace: o.inPlace ?? false,
      fsync: o.fsync ?? false,
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      requireHardware: o.requireHardware ?? false,
      logger,
    });
  });
  return cmd;
}
