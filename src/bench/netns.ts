/**
 * A shaped link for `mfd bench --link RATE,DELAY`: two network namespaces, so the sender and the
 * receiver talk over a link whose rate, not the CPU, is the limit. Each end's egress is shaped by
 * tc tbf for the rate. Without a delay the namespaces are joined by a veth pair. With one they are
 * joined by two TUN devices and mfd's delay line (addon/delay_line.cc), a thread of this process
 * that forwards each packet from one device to the other DELAY after it left: no netem needed
 * (this VM's kernel has none). Made and removed by the bench: removed in `close()`, on process
 * exit, and on a second SIGINT or SIGTERM (the first one lets the bench unwind through its own
 * finally blocks).
 *
 * Addresses are 198.18.0.1 (sender) and 198.18.0.2 (receiver), in RFC 2544's benchmarking range;
 * they exist only inside the two namespaces.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { BenchError, UsageError } from '../errors.js';
import type { LinkSpec } from './matrix.js';
import { formatRate } from './matrix.js';
import type { Net, Side } from './net.js';
import { which } from '../proc/proc.js';
import { native } from '../native/load.js';
import type { DelayLine } from '../native/binding.js';

export const SEND_ADDR = '198.18.0.1';
export const RECV_ADDR = '198.18.0.2';
const PREFIX = 'mfdb';
/** The TUN devices' MTU: big packets, so the delay line handles few per second (about 2000 at 1 gbit/s). */
export const TUN_MTU = 65000;

interface Names {
  ns: Record<Side, string>;
  dev: Record<Side, string>;
}

function names(pid: number): Names {
  return {
    ns: { send: `${PREFIX}-${pid}-send`, recv: `${PREFIX}-${pid}-recv` },
    // Interface names are at most 15 bytes: "mfdb" + pid (up to 7 digits) + 1.
    dev: { send: `${PREFIX}${pid}s`, recv: `${PREFIX}${pid}r` },
  };
}

function run(cmd: string, args: string[]): { ok: boolean; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr ?? '').trim() || (r.error?.message ?? '') };
}

function must(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (!r.ok) throw new BenchError('ERR_BENCH_LINK', `shaped link: \`${cmd} ${args.join(' ')}\` failed: ${r.err}`);
  return r.out;
}

/** Why this process cannot make `link`, or null when it can (as far as can be told without trying). */
export function linkUnavailable(link: LinkSpec): UsageError | null {
  if (process.getuid?.() !== 0) {
    return new UsageError(
      '--link needs root: it creates two network namespaces, a veth pair or TUN devices, and tc qdiscs (run as root, e.g. with sudo, or drop --link to measure over loopback)',
      'ERR_BENCH_NEEDS_ROOT',
    );
  }
  for (const tool of ['ip', 'tc']) {
    if (!which(tool)) return new UsageError(`--link needs \`${tool}\` (Debian: apt-get install iproute2)`, 'ERR_BENCH_NEEDS_ROOT');
  }
  if (link.delayMs > 0 && !fs.existsSync('/dev/net/tun')) {
    return new UsageError(
      `--link ${link.text}: the delay line needs /dev/net/tun (CONFIG_TUN), which this machine lacks; give a rate alone (--link ${link.text.split(',')[0]})`,
      'ERR_BENCH_NO_TUN',
    );
  }
  return null;
}

/** Removes namespaces left by a bench that was killed (their pid is gone). */
function removeStale(): void {
  const r = run('ip', ['netns', 'list']);
  if (!r.ok) return;
  for (const line of r.out.split('\n')) {
    const m = new RegExp(`^(${PREFIX}-(\\d+)-(?:send|recv))\\b`).exec(line.trim());
    if (m && !fs.existsSync(`/proc/${m[2]}`)) run('ip', ['netns', 'del', m[1]!]);
  }
}

/** The tc command that shapes one end's egress to the link's rate; exported for the tests. */
export function tbfCommand(ns: string, dev: string, link: LinkSpec): string[] {
  const bytesPerSec = link.rateBitsPerSec / 8;
  // Burst: 1 ms of traffic, at least 64 KiB (one GSO packet, or one packet at TUN_MTU); queue: 25 ms at the rate.
  const burst = Math.max(65536, Math.ceil(bytesPerSec / 1000));
  return [
    '-n',
    ns,
    'qdisc',
    'add',
    'dev',
    dev,
    'root',
    'handle',
    '1:',
    'tbf',
    'rate',
    `${link.rateBitsPerSec}bit`,
    'burst',
    String(burst),
    'latency',
    '25ms',
  ];
}

export function describeLink(link: LinkSpec): string {
  const rate = formatRate(link.rateBitsPerSec);
  return link.delayMs > 0
    ? `TUN pair between two network namespaces, ${rate}, ${link.delayMs} ms delay each way (round trip +${2 * link.delayMs} ms; ` +
        `tc tbf for the rate + mfd delay line for the delay, no netem)`
    : `veth between two network namespaces, ${rate}, no added delay (tc tbf)`;
}

/** Creates the namespaces, the veth pair or the delay line, and the qdiscs. Throws UsageError when this machine cannot. */
export function openShapedLink(link: LinkSpec): Net {
  const unavailable = linkUnavailable(link);
  if (unavailable) throw unavailable;
  removeStale();
  const n = names(process.pid);
  let closed = false;
  let line: DelayLine | undefined;
  const cleanup = (): void => {
    if (closed) return;
    closed = true;
    // Stops the forwarding thread; closing its file descriptors removes the TUN devices.
    line?.close();
    // Deleting a namespace deletes the veth end in it, and so the pair.
    run('ip', ['netns', 'del', n.ns.send]);
    run('ip', ['netns', 'del', n.ns.recv]);
    process.off('exit', cleanup);
    for (const s of SIGNALS) process.off(s, onSignal);
  };
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    // The first signal is the CLI's (it aborts the bench, which closes the link in a finally);
    // a second one means "now": clean up and go.
    if (++signals < 2) return;
    cleanup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', cleanup);
  for (const s of SIGNALS) process.on(s, onSignal);
  try {
    must('ip', ['netns', 'add', n.ns.send]);
    must('ip', ['netns', 'add', n.ns.recv]);
    if (link.delayMs > 0) {
      // Made in this namespace (the forwarding thread keeps their file descriptors), then moved.
      try {
        line = new native.DelayLine(n.dev.send, n.dev.recv, Math.round(link.delayMs * 1000));
      } catch (e) {
        throw new BenchError('ERR_BENCH_LINK', `shaped link: ${(e as Error).message}`);
      }
      for (const side of ['send', 'recv'] as const) must('ip', ['link', 'set', n.dev[side], 'netns', n.ns[side]]);
    } else {
      must('ip', ['link', 'add', n.dev.send, 'netns', n.ns.send, 'type', 'veth', 'peer', 'name', n.dev.recv, 'netns', n.ns.recv]);
    }
    for (const side of ['send', 'recv'] as const) {
      const ns = n.ns[side];
      const [self, peer] = side === 'send' ? [SEND_ADDR, RECV_ADDR] : [RECV_ADDR, SEND_ADDR];
      // A TUN device is point-to-point: the peer's address is reached through it.
      must('ip', ['-n', ns, 'addr', 'add', ...(line ? [self, 'peer', peer] : [`${self}/30`]), 'dev', n.dev[side]]);
      must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      // No IPv6 link-local address on a TUN device: its router solicitations would be the delay line's only traffic and drops.
      if (line) must('ip', ['-n', ns, 'link', 'set', n.dev[side], 'mtu', String(TUN_MTU), 'addrgenmode', 'none']);
      must('ip', ['-n', ns, 'link', 'set', n.dev[side], 'up']);
      const args = tbfCommand(ns, n.dev[side], link);
      const r = run('tc', args);
      if (r.ok) continue;
      if (/unknown/i.test(r.err)) {
        throw new UsageError(
          `--link ${link.text}: this kernel has no tbf qdisc (CONFIG_NET_SCH_TBF): tc said "${r.err}"`,
          'ERR_BENCH_NO_TBF',
        );
      }
      throw new BenchError('ERR_BENCH_LINK', `shaped link: \`tc ${args.join(' ')}\` failed: ${r.err}`);
    }
  } catch (e) {
    cleanup();
    throw e;
  }
  return {
    kind: 'link',
    description: describeLink(link),
    recvAddr: RECV_ADDR,
    wrap: (side, cmd, args) => ['ip', ['netns', 'exec', n.ns[side], cmd, ...args]],
    rxBytes: () => {
      const r = run('ip', ['-n', n.ns.recv, '-j', '-s', 'link', 'show', 'dev', n.dev.recv]);
      if (!r.ok) return NaN;
      const j = JSON.parse(r.out) as { stats64?: { rx?: { bytes?: number } } }[];
      return j[0]?.stats64?.rx?.bytes ?? NaN;
    },
    rxPrivate: true,
    // Still readable after close: the thread is joined, the counts final.
    delayLine: () => line?.stats(),
    close: async () => cleanup(),
  };
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
