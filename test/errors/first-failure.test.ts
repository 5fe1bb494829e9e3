/** FirstFailure: the first failure of a run stands, an abort is one, and the teardown hook runs once. */
import t from 'tap';
import { ConnectionError, ExitCode, FirstFailure, ProtocolError } from '../../src/errors.js';

t.test('the first failure stands; later ones are answered with it; the hook runs once', async (t) => {
  const seen: string[] = [];
  const f = new FirstFailure(undefined, (e) => seen.push(e.code));
  t.equal(f.error, null);
  const first = new ProtocolError('ERR_PACKET_MAGIC', 'bad magic', { channel: 2, packetNum: 7 });
  t.equal(f.fail(first), first);
  t.equal(f.fail(new ConnectionError('ERR_ECONNRESET', 'reset')), first, 'a later failure gets the first one back');
  t.equal(f.error, first);
  t.same(seen, ['ERR_PACKET_MAGIC']);
});

t.test('anything thrown becomes an MfdError (an unknown error is INTERNAL)', async (t) => {
  const f = new FirstFailure();
  const e = f.fail(new TypeError('boom'));
  t.equal(e.code, 'ERR_INTERNAL');
  t.equal(e.exitCode, ExitCode.INTERNAL);
});

t.test('an abort of the signal is the failure (exit 130), until dispose()', async (t) => {
  const ac = new AbortController();
  const f = new FirstFailure(ac.signal);
  ac.abort('SIGINT');
  t.equal(f.error?.code, 'ERR_INTERRUPTED');
  t.match(f.error?.message, /interrupted by SIGINT/);
  t.equal(f.error?.exitCode, ExitCode.INTERRUPTED);

  const later = new AbortController();
  const g = new FirstFailure(later.signal);
  g.dispose();
  later.abort('SIGTERM');
  t.equal(g.error, null, 'no longer listening');
});
