/**
 * The codec floor of a zstd cell: the CPU seconds the `zstd` command needs to compress the image at
 * level 1 (mfd's and QEMU's default multifd-zstd-level) and to decompress it again, divided by the
 * cores. No migration on these cores can do the same codec work in less wall time, so mfd's wall
 * time over it says how much the rest (scan, copies, sockets, writes) costs. One thread each
 * (`-T1`), so the count is the codec's work, not a thread pool's; bash's `times` reads the children's
 * CPU. Nothing is written but the compressed stream (the decompressed bytes go to /dev/null): the
 * floor is a count, not a transfer, so there is no output to compare with the image.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { shq, start, tail, waitFor, which, type Proc } from '../../proc/proc.js';
import type { Peer, PeerRunInput, PeerSample } from './peer.js';

/** The children's user and system seconds from bash's `times` (its second line: "0m3.012s 0m0.410s"). */
export function childrenCpuSec(times: string): number {
  const lines = times.trim().split('\n');
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(lines[lines.length - 1]!.trim());
  if (!m) throw new Error(`bash times: unexpected output ${JSON.stringify(times)}`);
  return Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]);
}

export const zstdFloor: Peer = {
  name: 'zstd-floor',
  label: () => `zstd -1 compress + decompress CPU seconds / ${os.availableParallelism()} cores`,
  unavailable: () =>
    !which('zstd') ? 'zstd is not installed (Debian: apt-get install zstd)' : !which('bash') ? 'bash is not installed' : null,
  notApplicable: (cell) => (cell.compression === 'zstd' ? null : 'the codec floor is measured for zstd cells'),
  async run({ image, workDir, signal }: PeerRunInput): Promise<PeerSample> {
    const packed = path.join(workDir, 'zstd-floor.zst');
    const script = [
      'set -e',
      `zstd -1 -T1 -q -f -c ${shq(image)} > ${shq(packed)}`,
      'times',
      'echo --',
      `zstd -d -q -c ${shq(packed)} > /dev/null`,
      'times',
    ].join('\n');
    let p: Proc | undefined;
    try {
      p = start('bash', ['-c', script]);
      const r = await waitFor(p, signal);
      if (r.code !== 0) throw new Error(`zstd floor: exit ${r.code}: ${tail(r.stderr)}`);
      const [compress, both] = r.stdout.split('--\n') as [string, string];
      const compressSec = childrenCpuSec(compress);
      const totalSec = childrenCpuSec(both);
      return { wallSec: totalSec / os.availableParallelism(), sendCpuSec: compressSec, recvCpuSec: totalSec - compressSec };
    } finally {
      p?.kill();
      await p?.done;
      fs.rmSync(packed, { force: true });
    }
  },
};
