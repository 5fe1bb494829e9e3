/**
 * The shaped link with a delay (src/bench/netns.ts, addon/delay_line.cc), measured from inside its
 * two namespaces: TCP round trips take twice the delay, and a bulk transfer runs at the rate.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { openShapedLink, RECV_ADDR } from '../../src/bench/netns.js';
import { parseLink } from '../../src/bench/matrix.js';
import type { Net, Side } from '../../src/bench/net.js';
import { leftoverLinks, netnsUnavailable } from '../helpers/netns.js';

const BULK = 16 << 20;

// In the receiver's namespace: an echo server (port 7001) and a sink (7002) that answers with the
// bytes it took and the time from their first to their last byte.
const server = `
const net = require('node:net');
net.createServer((c) => c.pipe(c)).listen(7001, '${RECV_ADDR}', () => {
  net.createServer((c) => {
    let bytes = 0, first = 0n, last = 0n;
    c.on('data', (d) => { last = process.hrtime.bigint(); if (bytes === 0) first = last; bytes += d.length; });
    c.on('end', () => c.end(JSON.stringify({ bytes, ms: Number(last - first) / 1e6 })));
  }).listen(7002, '${RECV_ADDR}', () => console.log('ready'));
});`;

// In the sender's namespace: a TCP connect, then 10 one-byte echoes, then the bulk transfer.
const client = `
const net = require('node:net');
const now = () => Number(process.hrtime.bigint()) / 1e6;
const t0 = now();
const c = net.connect(7001, '${RECV_ADDR}', async () => {
  const connectMs = now() - t0;
  const echoMs = [];
  for (let i = 0; i < 10; i++) {
    const s = now();
    await new Promise((r) => { c.once('data', r); c.write('x'); });
    echoMs.push(now() - s);
  }
  c.destroy();
  const b = net.connect(7002, '${RECV_ADDR}', () => b.end(Buffer.alloc(${BULK}, 1)));
  let reply = '';
  b.on('data', (d) => (reply += d));
  b.on('end', () => console.log(JSON.stringify({ connectMs, echoMs, sink: JSON.parse(reply) })));
});`;

function start(net: Net, side: Side, script: string): { out: Promise<string>; kill(): void; ready: Promise<void> } {
  const [cmd, args] = net.wrap(side, process.execPath, ['-e', script]);
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady: () => void = () => {};
  const ready = new Promise<void>((r) => (onReady = r));
  p.stdout.on('data', (d) => {
    out += d;
    if (out.includes('ready')) onReady();
  });
  p.stderr.on('data', (d) => (err += d));
  const done = new Promise<string>((resolve, reject) =>
    p.on('close', (code) => (code === 0 || p.killed ? resolve(out) : reject(new Error(`${side} script exit ${code}: ${err}`)))),
  );
  return { out: done, kill: () => p.kill(), ready };
}

t.test('--link 200mbit,5ms: round trips of 10 ms, a transfer at the rate', async (t) => {
  const why = netnsUnavailable({ tun: true });
  if (why) return void t.skip(`network namespaces or TUN devices unavailable here: ${why}`, () => {});
  const link = parseLink('200mbit,5ms');
  const net = openShapedLink(link);
  t.teardown(() => net.close());
  t.match(net.description, /TUN pair .* 200 mbit\/s, 5 ms delay each way/);

  const srv = start(net, 'recv', server);
  t.teardown(() => srv.kill());
  await srv.ready;
  const r = JSON.parse(await start(net, 'send', client).out) as {
    connectMs: number;
    echoMs: number[];
    sink: { bytes: number; ms: number };
  };

  // A connect is one round trip (SYN, SYN-ACK); each echo one more. The least of them is the link's,
  // the others add this shared machine's scheduling.
  const rtt = Math.min(r.connectMs, ...r.echoMs);
  t.ok(
    rtt >= 9 && rtt < 50,
    `TCP round trip ${rtt.toFixed(2)} ms: twice the 5 ms delay (connect ${r.connectMs.toFixed(1)} ms, echoes ${r.echoMs.map((x) => x.toFixed(1)).join(' ')})`,
  );

  t.equal(r.sink.bytes, BULK, 'the bulk transfer arrived whole');
  const bitsPerSec = (r.sink.bytes * 8) / (r.sink.ms / 1000);
  t.ok(bitsPerSec <= link.rateBitsPerSec * 1.05, `${(bitsPerSec / 1e6).toFixed(0)} Mbit/s, no more than the 200 Mbit/s rate`);
  t.ok(bitsPerSec >= link.rateBitsPerSec * 0.3, 'and not far below it: the rate, not the delay line, is the limit');

  const stats = net.delayLine?.();
  t.ok(stats && stats.forward.bytes >= BULK, 'the delay line forwarded the transfer');
  t.equal(stats?.forward.dropped, 0, 'and dropped nothing');
  t.ok(stats && stats.cpuSec > 0, `its CPU time is measured (${stats?.cpuSec.toFixed(3)} s)`);

  srv.kill();
  await net.close();
  t.equal(leftoverLinks(process.pid), '', 'namespaces and TUN devices removed');
  t.equal(net.delayLine?.()?.forward.bytes, stats?.forward.bytes, 'the final counts stay readable after close');
});
