/** `mfd gen-image`: a reproducible sample RAM image. */
import { Command, Option } from 'commander';
import { generateImage, parseSize, PROFILES, type Profile } from '../../image/generate.js';
import { intInRange } from '../options.js';
import type { CommandContext } from '../context.js';
import { versioned } from '../../version.js';

export function genImageCommand(ctx: CommandContext): Command {
  return new Command('gen-image')
    .summary('write a reproducible sample RAM image')
    .description('Pages come in runs like real memory; mixed = ~50% zero, 30% text-like, 20% random. Same seed, same bytes.')
    .argument('<file>', 'image file to write')
    .addOption(new Option('--size <bytes>', 'image size (K, M, G suffixes)').default('256M'))
    .addOption(new Option('--profile <profile>', 'page mix').choices(Object.keys(PROFILES)).default('mixed'))
    .addOption(new Option('--seed <n>', 'seed').argParser(intInRange('--seed', 0, 2 ** 32 - 1)).default(1))
    .option('--json', 'print the result as JSON')
    .action((file: string, o: { size: string; profile: Profile; seed: number; json?: boolean }) => {
      const r = generateImage(file, { size: parseSize(o.size), profile: o.profile, seed: o.seed });
      if (o.json) ctx.out(JSON.stringify(versioned({ file, ...r })));
      else ctx.out(`${file}: ${r.size} bytes, pages zero=${r.pages.zero} text=${r.pages.text} random=${r.pages.random}`);
    });
}
