/** Fuzz: `mfd recv --qemu`'s main-channel parser and a live receiver fed mutated QEMU migrations (test/helpers/fuzz/qemu.ts). */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { qemuMainTarget, qemuRecvTarget } from '../helpers/fuzz/qemu.js';

t.test('fuzz: the main-channel parser hands on only pages inside the declared blocks and ends in success or a typed error', async (t) => {
  const stats = await assertTarget(await qemuMainTarget(), 3000);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(stats.outcomes.has('ok'), 'unmutated streams parse');
});

t.test(
  'fuzz: recv --qemu fed mutated main and multifd bytes ends in success or a typed error, leaving nothing behind after a failure',
  async (t) => {
    const stats = await assertTarget(await qemuRecvTarget(), 400);
    t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
    t.ok(stats.outcomes.has('ok'), 'unmutated migrations complete');
  },
);
