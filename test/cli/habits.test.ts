/** The habits operators expect of a CLI: durations with suffixes, -v/-q, progress on a terminal, --version, signals. */
import t from 'tap';
import { InvalidArgumentError } from 'commander';
import { durationInRange, formatDuration, parseDuration } from '../../src/cli/options.js';

t.test('durations: seconds by default, ms/s/m/h suffixes', async (t) => {
  t.equal(parseDuration('10'), 10_000);
  t.equal(parseDuration('1.5'), 1500);
  t.equal(parseDuration('500ms'), 500);
  t.equal(parseDuration('90s'), 90_000);
  t.equal(parseDuration('2m'), 120_000);
  t.equal(parseDuration('1h'), 3_600_000);
  t.equal(parseDuration('2 m'), null);
  t.equal(parseDuration('-1'), null);
  t.equal(parseDuration('1d'), null);
  t.equal(formatDuration(10_000), '10s');
  t.equal(formatDuration(500), '500ms');
  t.equal(formatDuration(120_000), '2m');
  const p = durationInRange('--connect-timeout', 1, 3_600_000);
  t.equal(p('200ms'), 200);
  t.equal(p('10'), 10_000);
  t.throws(() => p('0'), InvalidArgumentError);
  // The old meaning of --connect-timeout (milliseconds), past the range as seconds: the error says how to write it.
  t.throws(() => p('10000'), { message: /Expected a duration in 1ms\.\.1h for --connect-timeout .* received "10000" \(a bare number is seconds: for milliseconds write 10000ms\)/ });
  t.throws(() => p('2h'), { message: /received "2h"\.$/ });
});
