/** `mfd completion bash|zsh|fish`: a completion script generated from the command tree. */
import { Argument, Command } from 'commander';
import { completionScript, SHELLS, type Shell } from '../completion.js';
import type { CommandContext } from '../context.js';

export function completionCommand(ctx: CommandContext): Command {
  const cmd = new Command('completion')
    .summary('print a shell completion script: bash, zsh or fish')
    .description(
      "Prints a completion script for the shell, generated from mfd's own commands and options.\n" +
        'bash: source <(mfd completion bash), or save it in /etc/bash_completion.d/mfd.\n' +
        'zsh: mfd completion zsh > "${fpath[1]}/_mfd".  fish: mfd completion fish > ~/.config/fish/completions/mfd.fish.',
    )
    .addArgument(new Argument('<shell>', 'the shell').choices(SHELLS));
  return cmd.action((shell: Shell) => ctx.out(completionScript(cmd.parent!, shell).trimEnd()));
}
