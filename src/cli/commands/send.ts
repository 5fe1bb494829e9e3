/** `mfd send`: stream images to a listening `mfd recv`. */
import { Command, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '../../errors.js';
import { parseSize } from '../../image/generate.js';
import { IMAGE_ACCESS, type ImageAccess } from '../../image/image-source.js';
import { allMethodOptions, listMethods, methodChoice, type MethodChoice, type MethodOption } from '../../methods/index.js';
import { listDetectors } from '../../zero-page/index.js';
import { runSend, sendDestination, type SendDestinationOpts } from '../destination.js';
import { MAX_CHANNELS } from '../../control/protocol.js';
import {
  addAlias,
  commonOptions,
  durationInRange,
  intInRange,
  onOff,
  pageSizeOption,
  securityOptions,
  type CommonOpts,
} from '../options.js';
import type { CommandContext } from '../context.js';

interface SendOpts extends CommonOpts, SendDestinationOpts {
  compression: string;
  pageSize: number;
  threads?: number;
  accelPath?: string[];
  requireHardware?: boolean;
  maxBandwidth: number;
  imageAccess: ImageAccess;
}

/** --max-bandwidth: bytes per second, with QEMU's binary K, M, G suffixes (qemu_strtosz). */
function bandwidth(v: string): number {
  try {
    return parseSize(v);
  } catch {
    throw new InvalidArgumentError(
      `Expected bytes per second (with an optional K, M or G suffix) for --max-bandwidth but received "${v}".`,
    );
  }
}

/** commander's key for a long flag: zlib-level -> zlibLevel. */
const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/**
 * The chosen method and its parameters, from its own flags: which flags exist is the registry's
 * (allMethodOptions(), from each method's declared options; each flag's parser gives the value the
 * option's type declares), and the registry's door, methodChoice(), checks them against the
 * method. A flag of another method is refused.
 */
function chosenMethod(cmd: Command, compression: string): MethodChoice {
  const params: Record<string, unknown> = {};
  for (const { method, option } of allMethodOptions()) {
    const v: unknown = cmd.getOptionValue(camel(option.flag));
    if (v === undefined) continue;
    if (method !== compression) throw new UsageError(`--${option.flag} applies to --compression ${method}, not ${compression}`);
    params[option.key] = v;
  }
  return methodChoice(compression, params);
}

/** The command-line flag of a method's option: on|off, one of its choices, or an integer in its range. */
function methodFlag(option: MethodOption): Option {
  switch (option.type) {
    case 'bool':
      return new Option(`--${option.flag} <on|off>`, `${option.description}, default ${option.default ? 'on' : 'off'}`).argParser(
        onOff(`--${option.flag}`),
      );
    case 'choice':
      return new Option(`--${option.flag} <${option.choices.join('|')}>`, `${option.description}, default ${option.default}`).choices(
        option.choices,
      );
    case 'int':
      return new Option(`--${option.flag} <n>`, `${option.description}, ${option.min}..${option.max}, default ${option.default}`).argParser(
        intInRange(`--${option.flag}`, option.min, option.max),
      );
  }
}

export function sendCommand(ctx: CommandContext): Command {
  const channelsOption = new Option(
    '--channels <n>',
    `number of multifd channels (QEMU's multifd-channels), 1..${MAX_CHANNELS} (with --qemu, 0 = multifd off)`,
  )
    .argParser(intInRange('--channels', 0, MAX_CHANNELS, `1..${MAX_CHANNELS} (0 only with --qemu)`))
    .default(4);
  const compressionOption = new Option('--compression <method>', "compression method (QEMU's multifd-compression)")
    .choices(listMethods())
    .default('none');
  const cmd = new Command('send')
    .summary('send RAM images to a listening mfd recv')
    .description(
      'Connects a control channel and N multifd channels to the receiver and streams each image\n' +
        'as one ramblock in QEMU multifd packets (512 KiB, header 320 + 8 x pages per packet).\n' +
        'With --to file:PATH[,offset=N], writes a self-describing migration file instead\n' +
        '(docs/file-format.md), for mfd recv --from file:PATH.\n' +
        'IMAGE is a file path (ramblock name = file name) or NAME=PATH.\n' +
        'With --qemu, replays a migration saved by mfd recv --qemu (the one argument is its directory) into\n' +
        'a QEMU destination started with -incoming and the same machine type and devices; --channels must be\n' +
        "the destination's multifd-channels (0 when multifd is off) and --compression its multifd-compression.",
    )
    .argument('<image...>', 'image files, as PATH or NAME=PATH (with --qemu: the directory mfd recv --qemu wrote)')
    .addOption(
      new Option(
        '--qemu',
        'replay a migration saved by mfd recv --qemu into a QEMU destination (-incoming tcp:HOST:PORT), or write it as a QEMU migration file (--to file:PATH, for migrate-incoming file:PATH)',
      ),
    )
    .requiredOption(
      '--to <host:port|file:path>',
      'address of the listening mfd recv (HOST:PORT or tcp:HOST:PORT), or file:PATH[,offset=N] to save a migration file (starting at byte N; earlier bytes untouched)',
    )
    .addOption(channelsOption)
    .addOption(compressionOption)
    .addOption(
      new Option(
        '--zero-page-detection <mode>',
        "where zero pages are found (QEMU's zero-page-detection): multifd = SIMD scan in the channel path, dsa-accel = Intel DSA (with --accel-path), none; with --qemu, where they go: multifd = in the multifd packets (a QEMU 9.0+ destination), legacy = ZERO records on the main channel (default: from the machine type's version, else as the source did)",
      )
        .choices([...listDetectors(), 'legacy'])
        .default('multifd'),
    )
    .addOption(
      new Option(
        '--accel-path <path>',
        "accelerator device for dsa-accel (QEMU's accel-path), e.g. dsa:/dev/dsa/wq0.0; repeat for several, channels take them round-robin",
      ).argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]),
    )
    .addOption(
      new Option(
        '--require-hardware',
        'fail instead of falling back from a hardware path (IAA, QAT, DSA); the error names what is missing',
      ),
    )
    .addOption(pageSizeOption())
    .addOption(
      new Option('--threads <n>', 'compute worker threads for compression (default: min(channels, cores))').argParser(
        intInRange('--threads', 1, 256),
      ),
    )
    .addOption(
      new Option(
        '--image-access <how>',
        'how pages that travel as they are (--compression none) come from the image: map = read-only mappings (no copy), read = pread into a reused buffer (one copy, no page-table work), auto = map on hugetlbfs, elsewhere whichever costs less CPU on a 16 MiB sample of the image (the summary says which ran and why); compressing methods always read',
      )
        .choices([...IMAGE_ACCESS])
        .default('auto'),
    )
    .addOption(
      new Option('--connect-timeout <duration>', 'give up connecting after this long (seconds, or 500ms, 2m)')
        .argParser(durationInRange('--connect-timeout', 1, 3_600_000))
        .default(10_000, '10s'),
    )
    .addOption(
      new Option(
        '--timeout <duration>',
        'fail when the receiver takes no data on a channel, or does not answer on the control channel, for this long (seconds, or 500ms, 2m)',
      )
        .argParser(durationInRange('--timeout', 1, 86_400_000))
        .default(60_000, '60s'),
    )
    .addOption(
      new Option(
        '--max-bandwidth <bytes/s>',
        "at most this many bytes a second for the whole migration, all channels together (QEMU's max-bandwidth; K, M, G suffixes, binary; 0: no limit)",
      )
        .argParser(bandwidth)
        .default(0, 'no limit'),
    )
    .addOption(
      new Option(
        '--resume',
        'continue a failed migration: send only the pages the receiver (the same mfd recv, or one restarted on the same outputs) has not durably written',
      ),
    )
    .addOption(
      new Option(
        '--delta',
        'ask the receiver (mfd recv --delta) for the pages it holds: those travel as references, and pages equal to one sent earlier as references to it; with --to file:, a delta file (pages equal to one earlier in it, and to --base files, as references)',
      ),
    )
    .addOption(
      new Option(
        '--base <name=path|path>',
        'with --to file:: a base file the delta file refers to for the pages it holds (repeatable; implies --delta; name: the file name unless given); restore with mfd recv --from ... --base NAME=PATH',
      ).argParser((v: string, prev: string[] = []) => [...prev, v]),
    )
    .addOption(
      new Option(
        '--mapped-ram',
        "file: each ramblock at a fixed 1 MiB-aligned region, pages written in place, zero pages never written (QEMU's mapped-ram; no compression; with --qemu, QEMU's own layout)",
      ),
    )
    .addOption(
      new Option('--direct-io', 'file: write with O_DIRECT (aligned buffers, bypassing the page cache); offset must be a multiple of 4096'),
    )
    .addOption(
      new Option(
        '--multifd-flush-after-each-section <on|off>',
        "--qemu: the destination's multifd-flush-after-each-section: on = a multifd sync per RAM section (QEMU 7.2, and 8.0 and older machine types), off = one per pass marked by MULTIFD_FLUSH (QEMU 8.1+ with newer or unversioned machine types); default: from the machine type's version, else as the source did",
      ).argParser(onOff('--multifd-flush-after-each-section')),
    )
    .addOption(
      new Option(
        '--send-switchover-start <on|off>',
        "--qemu: send SWITCHOVER_START before the RAM END section (QEMU's send-switchover-start; QEMU before 10.0 refuses it); default: on for 10.0+ machine types, off for older, else as the source did",
      ).argParser(onOff('--send-switchover-start')),
    )
    .addOption(
      new Option(
        '--file-writer <kind>',
        'file, stream layout: ring of aligned buffers written asynchronously, or per-packet (one synchronous write per packet: the benchmark baseline)',
      )
        .choices(['ring', 'per-packet'])
        .default('ring')
        .hideHelp(),
    );
  addAlias(cmd, channelsOption, 'multifd-channels');
  addAlias(cmd, compressionOption, 'multifd-compression');
  for (const { option } of allMethodOptions()) {
    const opt = methodFlag(option);
    cmd.addOption(opt);
    if (option.qemu) addAlias(cmd, opt, option.qemu);
  }
  for (const o of [...securityOptions(), ...commonOptions()]) cmd.addOption(o);
  cmd.action(async (images: string[], o: SendOpts) => {
    const logger = ctx.logger(o.logLevel);
    const dest = sendDestination(cmd, o, images, logger);
    await runSend(ctx, o, dest, {
      images,
      channels: o.channels,
      pageSize: o.pageSize,
      ...chosenMethod(cmd, o.compression),
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      zeroPageDetection: o.zeroPageDetection,
      accelPaths: o.accelPath ?? [],
      requireHardware: o.requireHardware ?? false,
      logger,
      maxBandwidth: o.maxBandwidth,
      imageAccess: o.imageAccess,
    });
  });
  return cmd;
}
