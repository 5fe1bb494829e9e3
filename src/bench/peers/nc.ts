/** Raw `nc` of the image: `nc -l > output` on the receiving side, `nc -N < image` on the sending side (OpenBSD netcat). */
import fs from 'node:fs';
import path from 'node:path';
import { compareFiles } from '../files.js';
import { freePort, start, syncDisks, tail, waitFor, waitListening, which, type Proc } from '../../proc/proc.js';
import type { Peer, PeerRunInput, PeerSample } from './peer.js';
import { spawnSync } from 'node:child_process';

/** Why `nc` is not usable here (missing, or not OpenBSD netcat, whose -N the peers need), or null. */
export function ncUnavailable(): string | null {
  if (!which('nc')) return 'nc is not installed (Debian: apt-get install netcat-openbsd)';
  const h = spawnSync('nc', ['-h'], { encoding: 'utf8' });
  if (!/OpenBSD netcat/.test(`${h.stdout}${h.stderr}`))
    return 'nc is not OpenBSD netcat (needs -N; Debian: apt-get install netcat-openbsd)';
  return null;
}

export const nc: Peer = {
  name: 'nc',
  label: () => 'nc (OpenBSD netcat)',
  unavailable: ncUnavailable,
  notApplicable: () => null,
  async run({ image, workDir, net, signal }: PeerRunInput): Promise<PeerSample> {
    const out = path.join(workDir, 'nc.out');
    fs.rmSync(out, { force: true });
    syncDisks();
    const port = await freePort();
    let recv: Proc | undefined;
    let send: Proc | undefined;
    const outFd = fs.openSync(out, 'w');
    const inFd = fs.openSync(image, 'r');
    try {
      const [rc, ra] = net.wrap('recv', 'nc', ['-l', net.recvAddr, String(port)]);
      recv = start(rc, ra, { stdio: ['ignore', outFd, 'pipe'] });
      await waitListening(recv, port, 'nc -l', signal);
      const [sc, sa] = net.wrap('send', 'nc', ['-N', net.recvAddr, String(port)]);
      const rx0 = net.rxBytes();
      const t0 = process.hrtime.bigint();
      send = start(sc, sa, { stdio: [inFd, 'ignore', 'pipe'] });
      const [s, r] = await Promise.all([waitFor(send, signal), waitFor(recv, signal)]);
      const wallSec = Number(process.hrtime.bigint() - t0) / 1e9;
      const linkBytes = net.rxBytes() - rx0;
      if (s.code !== 0 || r.code !== 0)
        throw new Error(`nc failed: send exit ${s.code}: ${tail(s.stderr)}; recv exit ${r.code}: ${tail(r.stderr)}`);
      await compareFiles(image, out, 'nc');
      return { wallSec, linkBytes: Number.isFinite(linkBytes) ? linkBytes : null };
    } finally {
      for (const p of [send, recv]) {
        p?.kill();
        await p?.done;
      }
      fs.closeSync(outFd);
      fs.closeSync(inFd);
      fs.rmSync(out, { force: true });
    }
  },
};
