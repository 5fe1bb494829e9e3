/** `mfd accel`: offload hardware on this machine, what this build compiled, live probes, and what a run would use. */
import { Command, Option } from 'commander';
import { accelReport, formatAccel } from '../../accel/report.js';
import { listMethods } from '../../methods/index.js';
import { listDetectors } from '../../zero-page/index.js';
import type { CommandContext } from '../context.js';
import { versioned } from '../../version.js';

interface AccelOpts {
  json?: boolean;
  compression: string;
  zeroPageDetection: string;
  accelPath?: string[];
  requireHardware?: boolean;
}

export function accelCommand(ctx: CommandContext): Command {
  return new Command('accel')
    .summary('report CPU features, IAA/DSA work queues, QAT endpoints, live probes, and the paths a run would take')
    .description(
      'Reads the CPU features and sysfs (/sys/bus/dsa, /sys/bus/pci), says which hardware backends this\n' +
        'build compiled, probes each for real (a QPL hardware job, a QATzip hardware session, a NOOP\n' +
        'descriptor on each DSA work queue), and shows what `mfd send` with the given flags would run.',
    )
    .addOption(new Option('--compression <method>', 'plan for this method').choices(listMethods()).default('none'))
    .addOption(new Option('--zero-page-detection <mode>', 'plan for this zero-page mode').choices(listDetectors()).default('multifd'))
    .addOption(
      new Option('--accel-path <path>', 'plan (and probe) with this device, e.g. dsa:/dev/dsa/wq0.0; repeatable').argParser(
        (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
      ),
    )
    .addOption(new Option('--require-hardware', 'plan as `mfd send --require-hardware` would'))
    .option('--json', 'one JSON object')
    .action((o: AccelOpts) => {
      const r = accelReport(undefined, {
        compression: o.compression,
        zeroPageDetection: o.zeroPageDetection,
        accelPaths: o.accelPath ?? [],
        requireHardware: o.requireHardware ?? false,
      });
      ctx.out(o.json ? JSON.stringify(versioned(r)) : formatAccel(r));
    });
}
