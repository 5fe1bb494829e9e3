/** Fuzz: the receiver's page bookkeeping (offset patterns) and its control channel's timing, bounded runs with a fixed seed. */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { controlTimingTarget, pageBookkeepingTarget } from '../helpers/fuzz/bookkeeping.js';

t.test('fuzz: page bookkeeping agrees with a plain set, stays within its budget and O(pages), refuses typed', async (t) => {
  const stats = await assertTarget(pageBookkeepingTarget(), 300);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(stats.outcomes.has('ok'), 'some patterns fit the budget');
  t.ok(stats.outcomes.has('ERR_PAGE_STATE_LIMIT'), 'some are refused');
});

t.test('fuzz: a control peer that stalls anywhere is ended or dropped within a few --timeout', async (t) => {
  const stats = await assertTarget(controlTimingTarget(), 12);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
});
