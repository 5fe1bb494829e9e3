/** Fuzz: a live receiver fed mutated data-channel streams of every method (test/helpers/fuzz/receiver.ts). */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { receiverTarget } from '../helpers/fuzz/receiver.js';

t.test(
  'fuzz: a receiver fed a mutated channel ends in success or a typed error naming the channel, never writing outside the block',
  async (t) => {
    const stats = await assertTarget(await receiverTarget(), 60);
    t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
    t.ok(stats.outcomes.has('ok'), 'unmutated streams migrate');
  },
);

import { receiverHelloTarget } from '../helpers/fuzz/receiver.js';

t.test('fuzz: a receiver given a mutated hello answers ready or error, ends typed, and allocates nothing for declared sizes', async (t) => {
  const stats = await assertTarget(receiverHelloTarget(), 100);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(
    [...stats.outcomes.keys()].some((k) => k.startsWith('ready+')),
    'some hellos are accepted',
  );
});
