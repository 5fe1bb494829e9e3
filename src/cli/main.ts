/**
 * CLI entry: builds the commands, runs one, and is the only place that turns
 * an error into an exit code (README, "Exit codes").
 */
import { Command, CommanderError, Option } from 'commander';
import { compiledEngines, formatEngines } from '../accel/report.js';
import { MFD_VERSION } from '../version.js';
import { ExitCode, MfdError, UsageError, asMfdError, type ExitCodeValue, errorText } from '../errors.js';
import { createLogger } from '../log.js';
import { formatStats } from '../stats/stats.js';
import { failureJson, runJson } from './json.js';
import { createProgress } from './progress.js';
import type { CommandContext } from './context.js';
import { settleCommonOptions } from './options.js';
import { sendCommand } from './commands/send.js';
import { recvCommand } from './commands/recv.js';
import { genImageCommand } from './commands/gen-image.js';
import { inspectCommand } from './commands/inspect.js';
import { accelCommand } from './commands/accel.js';
import { benchCommand } from './commands/bench.js';
import { completionCommand } from './commands/completion.js';
import { printable } from '../text.js';

export const EXIT_CODES_HELP = `
Exit codes:
  0    success: every ramblock arrived and verified
  1    internal error (a bug in mfd)
  2    bad command line or option value
  3    protocol error: the peer (or a migration file) sent something invalid
  4    connection failed, dropped or timed out
  5    verification failed: digest, packet count or page coverage mismatch,
       or an incomplete migration file (no valid trailer)
  6    I/O error reading an image or writing an output or a migration file
  7    the peer reported a failure of its own
  8    a hardware accelerator is missing, or fell back under --require-hardware
  9    resume refused: no progress journal, or it does not match the images
  10   authentication failed: a certificate or pre-shared key was refused
  130  interrupted (SIGINT, Ctrl-C)
  143  terminated (SIGTERM)`;

export function buildProgram(ctx: CommandContext): Command {
  const program = new Command('mfd')
    .description('Move RAM images between hosts as QEMU multifd packets over parallel TCP channels.')
    .addOption(new Option('-V, --version', 'print the version and the engines this build compiled in'))
    .showHelpAfterError()
    .addHelpText('after', EXIT_CODES_HELP);
  program.addCommand(recvCommand(ctx));
  program.addCommand(sendCommand(ctx));
  program.addCommand(inspectCommand(ctx));
  program.addCommand(accelCommand(ctx));
  program.addCommand(genImageCommand(ctx));
  program.addCommand(benchCommand(ctx));
  program.addCommand(completionCommand(ctx));
  // Commander's .version() takes a fixed string; the engines are looked up only when asked.
  program.on('option:version', () => {
    ctx.out(`mfd ${MFD_VERSION}\n${formatEngines(compiledEngines())}\nnode ${process.version}`);
    throw new CommanderError(0, 'commander.version', MFD_VERSION);
  });
  program.hook('preAction', (_, action) => settleCommonOptions(action, process.stderr.isTTY === true));
  // Commander's own usage errors in mfd's shape: "mfd send: error: ... [ERR_USAGE]".
  for (const c of [program, ...program.commands]) {
    const name = c === program ? 'mfd' : `mfd ${c.name()}`;
    c.exitOverride().configureOutput({
      outputError: (str, write) => write(str.replace(/^error: (.*?)\n?$/s, `${name}: error: $1 [ERR_USAGE]\n`)),
    });
  }
  return program;
}

function ignoreEpipe(e: NodeJS.ErrnoException): void {
  if (e.code !== 'EPIPE') throw e;
}

/** Runs the CLI; resolves to the exit code. */
export async function main(
  argv: string[],
  io: { stdout?: (s: string) => void; stderr?: (s: string) => void } = {},
): Promise<ExitCodeValue> {
  let printed = false;
  const write = io.stdout ?? ((s: string) => process.stdout.write(s + '\n'));
  const out = (s: string): void => {
    printed = true;
    write(s);
  };
  const err = io.stderr ?? ((s: string) => process.stderr.write(s + '\n'));
  // A reader that leaves early (`mfd ... | head -1`) is not the command's failure: its exit code stands.
  if (!io.stdout) process.stdout.on('error', ignoreEpipe);
  if (!io.stderr) process.stderr.on('error', ignoreEpipe);
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => abort.abort(sig);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let json = argv.includes('--json');
  const ctx: CommandContext = {
    out,
    logger: (level) => createLogger(level),
    progress: (label, enabled) => createProgress(label, enabled),
    listening: (address, port) => err(`mfd recv: listening on ${address}:${port}`),
    status: (line) => err(line),
    result(o, stats, extra) {
      json = o.json ?? false;
      if (o.json) out(JSON.stringify(runJson(stats, extra)));
      else out(formatStats(stats));
    },
    signal: abort.signal,
  };
  // The event loop drained while the command still waits: something it awaits
  // can no longer settle. That is a bug, and it must not pass for success.
  let onStall = (): void => {};
  const stalled = new Promise<never>((_, reject) => {
    onStall = () =>
      reject(new MfdError('ERR_STALLED', 'the command stopped with nothing left to wait for (a bug in mfd)', ExitCode.INTERNAL));
  });
  process.once('beforeExit', onStall);
  try {
    await Promise.race([buildProgram(ctx).parseAsync(argv, { from: 'user' }), stalled]);
    return ExitCode.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version land here too; commander has already printed its message.
      if (e.exitCode === 0) return ExitCode.OK;
      if (json && !printed && e.code !== 'commander.help')
        out(JSON.stringify(failureJson(new UsageError(e.message.replace(/^error: /, '')))));
      return ExitCode.USAGE;
    }
    const me: MfdError = asMfdError(e);
    const verb = argv.find((a) => !a.startsWith('-')) ?? 'mfd';
    err(`mfd ${verb}: error: ${printable(errorText(me))} [${me.code}]`);
    // One JSON object on stdout: a command that already printed its own keeps it.
    if (json && !printed) out(JSON.stringify(failureJson(me)));
    return me.exitCode;
  } finally {
    process.off('beforeExit', onStall);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
