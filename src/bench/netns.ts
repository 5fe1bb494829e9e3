/**
 * A shaped link for `mfd bench --link RATE,DELAY`: two network namespaces joined by a veth pair,
 * each end shaped by tc (tbf for the rate; netem before it for the delay), so the sender and the
 * receiver talk over a link whose rate, not the CPU, is the limit. Made and removed by the bench:
 * removed in `close()`, on process exit, and on a second SIGINT or SIGTERM (the first one lets the
 * bench unwind through its own finally blocks).
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
import { which } from './proc.js';

export const SEND_ADDR = '198.18.0.1';
export const RECV_ADDR = '198.18.0.2';
const PREFIX = 'mfdb';

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

/** Why this process cannot make a shaped link, or null when it can (as far as can be told without trying). */
export function linkUnavailableReason(): string | null {
  if (process.getuid?.() !== 0) {
    return '--link needs root: it creates two network namespaces, a veth pair and tc qdiscs (run as root, e.g. with sudo, or drop --link to measure over loopback)';
  }
  for (const tool of ['ip', 'tc']) {
    if (!which(tool)) return `--link needs \`${tool}\` (Debian: apt-get install iproute2)`;
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

/** The tc commands that shape one end; exported for the tests. */
export function qdiscCommands(ns: string, dev: string, link: LinkSpec): string[][] {
  const bytesPerSec = link.rateBitsPerSec / 8;
  // Burst: 1 ms of traffic, at least 64 KiB (one GSO packet); queue: 25 ms at the rate.
  const burst = Math.max(65536, Math.ceil(bytesPerSec / 1000));
  const tbf = ['tbf', 'rate', `${link.rateBitsPerSec}bit`, 'burst', String(burst), 'latency', '25ms'];
  if (link.delayMs <= 0) return [['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', ...tbf]];
  const delayUs = Math.round(link.delayMs * 1000);
  return [
    // netem delays (its queue must hold a delay's worth of packets), tbf below it sets the rate:
    // the tc-netem(8) recipe for rate limiting with tbf.
    ['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'netem', 'delay', `${delayUs}us`, 'limit', '100000'],
    ['-n', ns, 'qdisc', 'add', 'dev', dev, 'parent', '1:1', 'handle', '10:', ...tbf],
  ];
}

export function describeLink(link: LinkSpec): string {
  const rate = formatRate(link.rateBitsPerSec);
  return link.delayMs > 0
    ? `veth between two network namespaces, ${rate}, ${link.delayMs} ms delay each way (round trip +${2 * link.delayMs} ms; tc netem + tbf)`
    : `veth between two network namespaces, ${rate}, no added delay (tc tbf)`;
}

/** Creates the namespaces, the veth pair and the qdiscs. Throws UsageError when this machine cannot. */
export function openShapedLink(link: LinkSpec): Net {
  const why = linkUnavailableReason();
  if (why) throw new UsageError(why, 'ERR_BENCH_NEEDS_ROOT');
  removeStale();
  const n = names(process.pid);
  let closed = false;
  const cleanup = (): void => {
    if (closed) return;
    closed = true;
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
    must('ip', ['link', 'add', n.dev.send, 'netns', n.ns.send, 'type', 'veth', 'peer', 'name', n.dev.recv, 'netns', n.ns.recv]);
    for (const side of ['send', 'recv'] as const) {
      const ns = n.ns[side];
      must('ip', ['-n', ns, 'addr', 'add', `${side === 'send' ? SEND_ADDR : RECV_ADDR}/30`, 'dev', n.dev[side]]);
      must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      must('ip', ['-n', ns, 'link', 'set', n.dev[side], 'up']);
      for (const args of qdiscCommands(ns, n.dev[side], link)) {
        const r = run('tc', args);
        if (r.ok) continue;
        if (args.includes('netem') && /unknown/i.test(r.err)) {
          throw new UsageError(
            `--link ${link.text}: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), which the delay needs; ` +
              `give a rate alone (--link ${link.text.split(',')[0]}, shaped by tbf) or run on a kernel with sch_netem`,
            'ERR_BENCH_NO_NETEM',
          );
        }
        if (/unknown/i.test(r.err)) {
          throw new UsageError(`--link ${link.text}: this kernel has no tbf qdisc (CONFIG_NET_SCH_TBF): tc said "${r.err}"`, 'ERR_BENCH_NO_TBF');
        }
        throw new BenchError('ERR_BENCH_LINK', `shaped link: \`tc ${args.join(' ')}\` failed: ${r.err}`);
      }
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
    close: async () => cleanup(),
  };
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
