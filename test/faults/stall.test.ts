/**
 * Peers that stop (SIGSTOP: the process is stopped, its sockets stay open,
 * the kernel's buffers fill). A stopped receiver: the sender's --timeout
 * fails it, exit 4, naming the stalled channel or the control-channel answer
 * it waited for; continued, the receiver finds its sender gone and exits
 * non-zero too. A stopped sender: the receiver's --timeout fails it, exit 4,
 * naming the silent channel, keeping its journal. Both within a few seconds
 * of the timeout, leaving no output that looks complete. And a receiver that
 * says busy while it finishes is waited for past the timeout.
 */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { makeImage, rejection, tmpdir } from '../helpers/index.js';
import { send } from '../../src/sender/sender.js';
import { silentLogger } from '../../src/log.js';
import { ControlChannel } from '../../src/transport/control-channel.js';
import { CONTROL_MAGIC, CONTROL_PREAMBLE_SIZE } from '../../src/control/protocol.js';
import { mfd, mfdRecv, lastError } from '../helpers/procs.js';
import { FaultProxy } from '../helpers/proxy.js';

const TIMEOUT_S = 2;

t.test('receiver stopped mid-transfer: the sender exits 4 naming the stalled channel', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  // Far more than loopback's socket buffers hold, so the stop leaves writes pending.
  const img = makeImage(path.join(dir, 'vm.ram'), 96 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress']);
  const send = mfd(t, [
    'send',
    '--to',
    `127.0.0.1:${recv.port}`,
    '--channels',
    '2',
    '--timeout',
    String(TIMEOUT_S),
    '--json',
    '--no-progress',
    '--log-level',
    'info',
    img,
  ]);
  await send.waitFor(/receiver ready/);
  recv.p.kill('SIGSTOP');
  const stoppedAt = performance.now();
  const s = await send.done;
  const took = s.at - stoppedAt;
  t.equal(s.code, 4, `sender exit 4: ${lastError(s.stderr)}`);
  t.match(JSON.parse(s.stdout), {
    status: 'failed',
    'error-desc': /^channel \d: the receiver took no data for 2000 ms \(\d+ bytes waiting to be written\)/,
    error: {
      code: 'ERR_CHANNEL_STALLED',
      channel: Number,
      message: /^the receiver took no data for 2000 ms \(\d+ bytes waiting to be written\)/,
    },
  });
  t.ok(took < TIMEOUT_S * 1000 + 3000, `sender exited ${Math.round(took)} ms after the receiver stopped (timeout ${TIMEOUT_S} s)`);
  recv.p.kill('SIGCONT');
  const contAt = performance.now();
  const r = await recv.done;
  t.not(r.code, 0, `the continued receiver fails too (exit ${r.code}): ${lastError(r.stderr)}`);
  t.notOk(fs.readdirSync(out).includes('vm.ram'), 'no output under its final name');
  t.comment(
    `fault: receiver SIGSTOP mid-transfer; sender exit ${s.code} after ${Math.round(took)} ms (--timeout ${TIMEOUT_S}); receiver, continued, exit ${r.code} after ${Math.round(r.at - contAt)} ms`,
  );
});

t.test('receiver stopped before it answers the hello: the sender exits 4 naming the control channel', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const recv = await mfdRecv(t, ['--output', dir, '--no-progress']);
  recv.p.kill('SIGSTOP');
  const send = mfd(t, [
    'send',
    '--to',
    `127.0.0.1:${recv.port}`,
    '--timeout',
    String(TIMEOUT_S),
    '--json',
    '--no-progress',
    '--log-level',
    'debug',
    img,
  ]);
  // From the hello on: the sender's start-up (seconds on a loaded machine) is not the timeout's.
  await send.waitFor(/hello sent/);
  const helloAt = performance.now();
  const s = await send.done;
  const took = s.at - helloAt;
  t.equal(s.code, 4, `sender exit 4: ${lastError(s.stderr)}`);
  t.match(JSON.parse(s.stdout), {
    status: 'failed',
    error: {
      code: 'ERR_CONTROL_TIMEOUT',
      message: /^control channel \(127\.0\.0\.1:\d+\): no answer from the receiver for 2000 ms, waiting for "ready"/,
    },
  });
  t.ok(took < TIMEOUT_S * 1000 + 3000, `sender exited ${Math.round(took)} ms after its hello`);
  t.comment(`fault: receiver SIGSTOP before ready; sender exit ${s.code} ${Math.round(took)} ms after its hello (--timeout ${TIMEOUT_S})`);
});

t.test('sender stopped mid-transfer: the receiver exits 4 naming the silent channel, its journal kept', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), 64 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', out, '--timeout', String(TIMEOUT_S), '--json', '--no-progress']);
  // Throttled, so the sender is stopped with most of the image still to send.
  const proxy = await FaultProxy.start(t, recv.port, { rate: 8 << 20 });
  const send = mfd(t, [
    'send',
    '--to',
    `127.0.0.1:${proxy.port}`,
    '--channels',
    '2',
    '--json',
    '--no-progress',
    '--log-level',
    'info',
    img,
  ]);
  await send.waitFor(/receiver ready/);
  await new Promise((r) => setTimeout(r, 300));
  send.p.kill('SIGSTOP');
  const stoppedAt = performance.now();
  const r = await recv.done;
  const took = r.at - stoppedAt;
  t.equal(r.code, 4, `receiver exit 4: ${lastError(r.stderr)}`);
  t.match(JSON.parse(r.stdout), {
    status: 'failed',
    'error-desc': /^channel \d: no data for 2000 ms/,
    error: { code: 'ERR_CHANNEL_TIMEOUT', channel: Number, message: /^no data for 2000 ms/ },
  });
  t.ok(took < TIMEOUT_S * 1000 + 3000, `receiver exited ${Math.round(took)} ms after the sender stopped (timeout ${TIMEOUT_S} s)`);
  t.same(
    fs.readdirSync(out).sort(),
    ['.vm.ram.mfd-journal', '.vm.ram.mfd-partial'],
    'the partial output and its journal stay, for a resume',
  );
  send.p.kill('SIGCONT');
  const contAt = performance.now();
  const s = await send.done;
  t.not(s.code, 0, `the continued sender fails too (exit ${s.code}): ${lastError(s.stderr)}`);
  t.comment(
    `fault: sender SIGSTOP mid-transfer; receiver exit ${r.code} after ${Math.round(took)} ms (--timeout ${TIMEOUT_S}); sender, continued, exit ${s.code} after ${Math.round(s.at - contAt)} ms`,
  );
});

/**
 * A receiver stand-in that takes everything, then after `complete` says
 * `busy` `beats` times, 300 ms apart, and then either gives its verdict or
 * falls silent.
 */
async function fakeReceiver(t: Test, beats: number, verdict: boolean): Promise<number> {
  const server = net.createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', (first: Buffer) => {
      if (first.readUInt32BE(0) !== CONTROL_MAGIC) return sock.resume(); // a data channel: drain it
      const ctl = new ControlChannel(sock, 'test', first.subarray(CONTROL_PREAMBLE_SIZE));
      void (async () => {
        await ctl.next(); // hello
        ctl.send({ type: 'ready' });
        await ctl.next(); // complete
        for (let i = 0; i < beats; i++) {
          await new Promise((r) => setTimeout(r, 300));
          ctl.send({ type: 'busy', what: 'verifying and committing the outputs' });
        }
        if (verdict) ctl.send({ type: 'verdict', ok: true, stats: {} });
      })().catch(() => {});
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

t.test('a receiver that says busy past --timeout before its verdict is waited for', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const port = await fakeReceiver(t, 6, true);
  const started = performance.now();
  const r = await send({
    host: '127.0.0.1',
    port,
    logger: silentLogger,
    images: [{ name: 'vm.ram', path: img }],
    channels: 2,
    pageSize: 4096,
    compression: 'none',
    methodParams: {},
    zeroPageDetection: 'multifd',
    timeoutMs: 1000,
  });
  t.ok(performance.now() - started > 1500, 'the verdict came after more than the timeout, with busy messages between');
  t.same(r.receiver, {});
});

t.test('a receiver that falls silent after complete: the sender fails waiting for the verdict', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const port = await fakeReceiver(t, 2, false);
  const e = await rejection(
    send({
      host: '127.0.0.1',
      port,
      logger: silentLogger,
      images: [{ name: 'vm.ram', path: img }],
      channels: 2,
      pageSize: 4096,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
      timeoutMs: 1000,
    }),
  );
  t.match(e, { code: 'ERR_CONTROL_TIMEOUT', exitCode: 4, message: /no answer from the receiver for 1000 ms, waiting for the verdict/ });
});
