/** Where a bench run's two sides talk: loopback, or a shaped link between two network namespaces (netns.ts). */
import fs from 'node:fs';
import type { DelayLineStats } from '../native/binding.js';

export type Side = 'send' | 'recv';

export interface Net {
  kind: 'loopback' | 'link';
  /** For the report: "loopback" or "veth between two network namespaces, 1 gbit/s, no added delay (tc tbf)". */
  description: string;
  /** The address the receiving side listens on and the sending side connects to. */
  recvAddr: string;
  /** The command line that runs `cmd args` on `side` (in its namespace for a link). */
  wrap(side: Side, cmd: string, args: readonly string[]): [string, string[]];
  /** Bytes the receiving side's interface has received so far. */
  rxBytes(): number;
  /** True when rxBytes counts this bench's traffic only (a link's veth); lo counts the whole host's loopback. */
  rxPrivate: boolean;
  /** A delayed link's forwarder: its packets, drops and CPU time so far (after close: in all). */
  delayLine?(): DelayLineStats | undefined;
  close(): Promise<void>;
}

export function loopback(): Net {
  return {
    kind: 'loopback',
    description: 'loopback',
    recvAddr: '127.0.0.1',
    wrap: (_side, cmd, args) => [cmd, [...args]],
    rxBytes: () => {
      try {
        return Number(fs.readFileSync('/sys/class/net/lo/statistics/rx_bytes', 'utf8'));
      } catch {
        return NaN;
      }
    },
    rxPrivate: false,
    close: async () => {},
  };
}
