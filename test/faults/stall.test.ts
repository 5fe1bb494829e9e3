/**
 * A receiver that stops reading and answering (SIGSTOP: the process is
 * stopped, its sockets stay open, the kernel's buffers fill): the sender's
 * --timeout must fail it, exit 4, naming what stalled, within a few seconds
 * of the timeout. Continued afterwards, the receiver finds its sender gone
 * and exits non-zero too, leaving no output that looks complete.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { makeImage, tmpdir } from '../helpers/index.js';
import { mfd, mfdRecv, lastError } from '../helpers/procs.js';

const TIMEOUT_S = 2;

t.test('receiver stopped mid-transfer: the sender exits 4 naming the stalled channel', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  // Far more than loopback's socket buffers hold, so the stop leaves writes pending.
  const img = makeImage(path.join(dir, 'vm.ram'), 96 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress']);
  const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--channels', '2', '--timeout', String(TIMEOUT_S), '--json', '--no-progress', '--log-level', 'info', img]);
  await send.waitFor(/receiver ready/);
  recv.p.kill('SIGSTOP');
  const stoppedAt = performance.now();
  const s = await send.done;
  const took = s.at - stoppedAt;
  t.equal(s.code, 4, `sender exit 4: ${lastError(s.stderr)}`);
  t.match(JSON.parse(s.stdout), { status: 'failed', error: { code: 'ERR_CHANNEL_STALLED', message: /^channel \d: the receiver took no data for 2000 ms \(\d+ bytes waiting to be written\)/ } });
  t.ok(took < TIMEOUT_S * 1000 + 3000, `sender exited ${Math.round(took)} ms after the receiver stopped (timeout ${TIMEOUT_S} s)`);
  recv.p.kill('SIGCONT');
  const contAt = performance.now();
  const r = await recv.done;
  t.not(r.code, 0, `the continued receiver fails too (exit ${r.code}): ${lastError(r.stderr)}`);
  t.notOk(fs.readdirSync(out).includes('vm.ram'), 'no output under its final name');
  t.comment(`fault: receiver SIGSTOP mid-transfer; sender exit ${s.code} after ${Math.round(took)} ms (--timeout ${TIMEOUT_S}); receiver, continued, exit ${r.code} after ${Math.round(r.at - contAt)} ms`);
});

t.test('receiver stopped before it answers the hello: the sender exits 4 naming the control channel', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const recv = await mfdRecv(t, ['--output', dir, '--no-progress']);
  recv.p.kill('SIGSTOP');
  const stoppedAt = performance.now();
  const send = mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--timeout', String(TIMEOUT_S), '--json', '--no-progress', img]);
  const s = await send.done;
  const took = s.at - stoppedAt;
  t.equal(s.code, 4, `sender exit 4: ${lastError(s.stderr)}`);
  t.match(JSON.parse(s.stdout), {
    status: 'failed',
    error: { code: 'ERR_CONTROL_TIMEOUT', message: /^control channel \(127\.0\.0\.1:\d+\): no answer from the receiver for 2000 ms, waiting for "ready"/ },
  });
  t.ok(took < TIMEOUT_S * 1000 + 3000, `sender exited ${Math.round(took)} ms after the receiver stopped`);
  t.comment(`fault: receiver SIGSTOP before ready; sender exit ${s.code} after ${Math.round(took)} ms (--timeout ${TIMEOUT_S})`);
});
