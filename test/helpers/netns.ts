/** Whether the tests may make network namespaces (the shaped-link tests), and if not why. */
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';

export function netnsUnavailable(opts: { tun?: boolean } = {}): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  if (spawnSync('sh', ['-c', 'command -v tc']).status !== 0) return 'no tc (iproute2)';
  if (opts.tun && !fs.existsSync('/dev/net/tun')) return 'no /dev/net/tun (the delay line needs TUN devices)';
  const name = `mfdb-probe-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.status !== 0) return `ip netns add failed: ${(add.stderr || add.error?.message || '').trim()}`;
  spawnSync('ip', ['netns', 'del', name]);
  return null;
}

/**
 * The namespaces and devices made by the bench process `pid` (mfdb-PID-send, mfdbPIDs, ...) still
 * present, for "removed" checks. Only that pid's: other test files make links of their own at the
 * same time.
 */
export function leftoverLinks(pid: number): string {
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.match(new RegExp(`^mfdb-${pid}-(send|recv)\\b`, 'gm')) ?? [];
  const devs = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout.match(new RegExp(`\\bmfdb${pid}[sr]\\b`, 'g')) ?? [];
  return [...ns, ...devs].join(' ');
}
