/** `mfd bench`: a matrix of loopback (or shaped-link) migrations against the peers, with a report. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { UsageError } from '../../errors.js';
import { parseBenchOptions, parseList, PEER_NAMES, type BenchImage, type RawBenchOptions } from '../../bench/matrix.js';
import { listMethods } from '../../methods/index.js';
import { listDetectors } from '../../zero-page/index.js';
import type { CommandContext } from '../context.js';

interface BenchOpts extends Omit<RawBenchOptions, 'images'> {
  image?: string;
  base?: string;
  dir: string;
  out?: string;
  keep?: boolean;
  json?: boolean;
  progress: boolean;
}

/** An --image (or --base) file: a regular file (or a link to one), with its size. */
function imageFile(file: string, flag = '--image'): BenchImage {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new UsageError(`${flag} "${file}" does not exist`);
  if (!st.isFile()) throw new UsageError(`${flag} "${file}" is not a regular file`);
  return { path: path.resolve(file), sizeBytes: st.size };
}

/** --image files, each with its --base (the earlier version the destination holds), paired in order. */
function imageFiles(images: string | undefined, bases: string | undefined): BenchImage[] | undefined {
  if (images === undefined) {
    if (bases !== undefined) throw new UsageError('--base names the earlier versions of --image files: give --image too');
    return undefined;
  }
  const out = parseList('--image', images).map((f) => imageFile(f));
  if (bases === undefined) return out;
  // One earlier version may serve several images (checkpoints of one guest against its first).
  const b = parseList('--base', bases, true).map((f) => imageFile(f, '--base'));
  if (b.length !== out.length)
    throw new UsageError(`--base lists ${b.length} file(s), --image ${out.length}: give one earlier version per image, in the same order`);
  return out.map((im, i) => ({ ...im, base: b[i]!.path }));
}

export function benchCommand(ctx: CommandContext): Command {
  return new Command('bench')
    .summary('measure migrations over loopback or a shaped link, against iperf3, nc, zstd|nc and QEMU')
    .description(
      'Runs a matrix of migrations, mfd recv and mfd send in their own processes: methods x channel counts x ' +
        'zero-page modes x image profiles and sizes, several runs per cell after a warm-up, each run followed by ' +
        'the peers on the same image. Every output is compared with its image. Writes results.jsonl, report.md and ' +
        'SVG charts to --out and prints the report (or, with --json, the JSON lines) on stdout; progress on stderr. ' +
        'Lists are comma-separated: --compression none,zstd --channels 1,4 --size 512M,1G.',
    )
    .addOption(
      new Option('--compression <list>', `methods (QEMU's multifd-compression): ${listMethods().join(', ')}`).default('none,zstd,lz4'),
    )
    .addOption(new Option('--channels <list>', "channel counts (QEMU's multifd-channels)").default('1,4'))
    .addOption(new Option('--zero-page-detection <list>', `zero-page modes: ${listDetectors().join(', ')}`).default('multifd'))
    .addOption(
      new Option('--profile <list>', 'image profiles: mixed (about 50% zero, 30% text-like, 20% random pages), zero, random, text').default(
        'mixed',
      ),
    )
    .addOption(new Option('--size <list>', 'image sizes (K, M, G suffixes), e.g. 512M,1G,2G,4G to see scaling').default('1G'))
    .addOption(
      new Option(
        '--image <list>',
        "image files to migrate as they are (a real guest's RAM, say: ../shared/corpus/guest-ram makes one), each a row of its own; only read, never changed. Without --profile, instead of the generated images",
      ),
    )
    .addOption(
      new Option(
        '--base <list>',
        'delta transfer: the earlier version of each --image (in the same order), which the destination holds; those images run with --delta, against plain mfd and rsync (peers mfd-plain, rsync)',
      ),
    )
    .addOption(
      new Option(
        '--changed <list>',
        'delta transfer on the generated images: percentages of pages changed since an earlier version the destination holds (e.g. 1,10,50); those cells run with --delta, against plain mfd and rsync',
      ),
    )
    .addOption(new Option('--runs <n>', 'measured runs per cell').default('3'))
    .addOption(new Option('--warmup <n>', 'warm-up runs of mfd per cell, not measured').default('1'))
    .addOption(
      new Option(
        '--peers <list>',
        `peers: ${PEER_NAMES.join(', ')}, or all, or none (default: every one installed; the others are skipped with the reason)`,
      ),
    )
    .addOption(
      new Option(
        '--qemu-binary <path>',
        'the QEMU the qemu peer runs (default: qemu-system-x86_64 on PATH, Debian 12: 7.2); the report names its version',
      ),
    )
    .addOption(
      new Option(
        '--qemu10-binary <path>',
        'the QEMU the qemu10 peer runs (default: $MFD_QEMU10, or the QEMU 10.0 npm run fetch-qemu10 puts in ~/.cache/mfd/qemu-10.0); the report names its version',
      ),
    )
    .addOption(
      new Option(
        '--link <rate[,delay]>',
        "run between two network namespaces over a link shaped by tc tbf (and mfd's delay line for a delay), e.g. 1gbit,1ms (delay each way); needs root",
      ),
    )
    .addOption(
      new Option('--dir <dir>', 'where images and outputs go (a temporary directory inside it, removed at the end)').default(os.tmpdir()),
    )
    .addOption(new Option('--out <dir>', 'results directory (default bench/results/<timestamp>/ under the current directory)'))
    .addOption(new Option('--seed <n>', 'seed of the generated images').default('1'))
    .addOption(new Option('--keep', 'keep the images and the work directory'))
    .addOption(new Option('--json', 'print the results as JSON lines on stdout instead of the markdown report'))
    .addOption(new Option('--no-progress', 'no progress lines on stderr'))
    .action(async (o: BenchOpts, cmd: Command) => {
      const images = imageFiles(o.image, o.base);
      const cfg = parseBenchOptions(
        { ...o, images, profileGiven: cmd.getOptionValueSource('profile') !== 'default' },
        listMethods(),
        listDetectors(),
      );
      const stamp = new Date()
        .toISOString()
        .replace(/\.\d+Z$/, 'Z')
        .replace(/:/g, '-');
      const outDir = path.resolve(o.out ?? path.join('bench', 'results', stamp));
      // Before the first run, not after it: results are never written over, nor found unwritable an hour in.
      const st = fs.statSync(outDir, { throwIfNoEntry: false });
      if (st && !st.isDirectory())
        throw new UsageError(`--out "${outDir}" exists and is not a directory: give a directory for the results`);
      if (st && fs.existsSync(path.join(outDir, 'results.jsonl')))
        throw new UsageError(`--out "${outDir}" already holds results (results.jsonl): give a new directory, or remove them`);
      // Loaded here, not at start-up: every `mfd send` the bench times starts this same CLI.
      const { runBench } = await import('../../bench/bench.js');
      const { charts, formatTargetLine, markdownReport } = await import('../../bench/report.js');
      if (cfg.link) {
        // Before any file is written: the commonest reason a bench cannot run as asked.
        const { linkUnavailable } = await import('../../bench/netns.js');
        const unavailable = linkUnavailable(cfg.link);
        if (unavailable) throw unavailable;
      }
      const jsonl = path.join(outDir, 'results.jsonl');
      const lines: string[] = [];
      const result = await runBench(cfg, {
        dir: o.dir,
        keep: o.keep ?? false,
        signal: ctx.signal,
        status: (line) => {
          if (o.progress) ctx.status(line);
        },
        record: (line) => {
          // Made on the first line, so a bench that could not start leaves no empty directory.
          if (lines.length === 0) {
            fs.mkdirSync(outDir, { recursive: true });
            fs.writeFileSync(jsonl, '');
          }
          lines.push(line);
          fs.appendFileSync(jsonl, line + '\n');
        },
      });
      const md = markdownReport(result.meta, result.cells, result.targets, result.delayLine);
      fs.writeFileSync(path.join(outDir, 'report.md'), md + '\n');
      const written = ['results.jsonl', 'report.md'];
      for (const c of charts(result.meta, result.cells)) {
        fs.writeFileSync(path.join(outDir, c.file), c.svg);
        written.push(c.file);
      }
      if (o.json) for (const l of lines) ctx.out(l);
      else ctx.out(md);
      for (const t of result.targets) ctx.status(`target: ${formatTargetLine(t)}`);
      ctx.status(`results in ${outDir}: ${written.join(', ')}`);
    });
}
