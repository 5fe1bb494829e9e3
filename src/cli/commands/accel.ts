/** `mfd accel`: offload hardware on this machine and what this build would do with it. */
import { Command } from 'commander';
import { accelReport, formatAccel } from '../../accel/report.js';
import type { CommandContext } from '../main.js';

export function accelCommand(ctx: CommandContext): Command {
  return new Command('accel')
    .summary('report CPU features, IAA/DSA work queues, QAT endpoints and which paths this build uses')
    .option('--json', 'one JSON object')
    .action((o: { json?: boolean }) => {
      const r = accelReport();
      ctx.out(o.json ? JSON.stringify(r) : formatAccel(r));
    });
}
