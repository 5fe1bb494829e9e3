/**
 * The compressed pipeline end to end: `zstd -1 -T0 | nc` on the sending side, `nc -l | zstd -d`
 * on the receiving side (bash with pipefail, so a failure anywhere in a pipe counts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { compareFiles } from '../files.js';
import { freePort, shq, start, syncDisks, tail, waitFor, waitListening, which, type Proc } from '../../proc/proc.js';
import { ncUnavailable } from './nc.js';
import type { Peer, PeerRunInput, PeerSample } from './peer.js';

export const zstdNc: Peer = {
  name: 'zstd-nc',
  label: () => {
    const v = /v(\d[\d.]*)/.exec(spawnSync('zstd', ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1];
    return `zstd${v ? ` ${v}` : ''} -1 -T0 | nc`;
  },
  unavailable: () => {
    if (!which('zstd')) return 'zstd is not installed (Debian: apt-get install zstd)';
    if (!which('bash')) return 'bash is not installed';
    return ncUnavailable();
  },
  notApplicable: () => null,
  async run({ image, workDir, net, signal }: PeerRunInput): Promise<PeerSample> {
    const out = path.join(workDir, 'zstd-nc.out');
    fs.rmSync(out, { force: true });
    syncDisks();
    const port = await freePort();
    let recv: Proc | undefined;
    let send: Proc | undefined;
    try {
      const [rc, ra] = net.wrap('recv', 'bash', ['-c', `set -o pipefail; nc -l ${net.recvAddr} ${port} | zstd -d -q -f -o ${shq(out)}`]);
      recv = start(rc, ra, { group: true });
      await waitListening(recv, port, 'nc -l | zstd -d', signal);
      const [sc, sa] = net.wrap('send', 'bash', ['-c', `set -o pipefail; zstd -1 -T0 -q -c ${shq(image)} | nc -N ${net.recvAddr} ${port}`]);
      const rx0 = net.rxBytes();
      const t0 = process.hrtime.bigint();
      send = start(sc, sa, { group: true });
      const [s, r] = await Promise.all([waitFor(send, signal), waitFor(recv, signal)]);
      const wallSec = Number(process.hrtime.bigint() - t0) / 1e9;
      const linkBytes = net.rxBytes() - rx0;
      if (s.code !== 0 || r.code !== 0)
        throw new Error(`zstd | nc failed: send exit ${s.code}: ${tail(s.stderr)}; recv exit ${r.code}: ${tail(r.stderr)}`);
      await compareFiles(image, out, 'zstd-nc');
      return { wallSec, linkBytes: Number.isFinite(linkBytes) ? linkBytes : null };
    } finally {
      for (const p of [send, recv]) {
        p?.kill();
        await p?.done;
      }
      fs.rmSync(out, { force: true });
    }
  },
};
