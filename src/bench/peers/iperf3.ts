/**
 * The link's limit: iperf3 moving as many bytes as the image has, over as many parallel streams as
 * the cell has channels. It writes no file (nothing to verify); the floor for a cell is the bytes
 * mfd put on the wire divided by this rate.
 */
import { spawnSync } from 'node:child_process';
import { freePort, start, tail, waitFor, waitListening, which } from '../../proc/proc.js';
import type { Peer, PeerRunInput, PeerSample } from './peer.js';

interface IperfJson {
  error?: string;
  end?: { sum_received?: { bits_per_second?: number; bytes?: number } };
}

export const iperf3: Peer = {
  name: 'iperf3',
  label: () => {
    const v = /iperf (\d[\d.]*)/.exec(spawnSync('iperf3', ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1];
    return v ? `iperf3 ${v}` : 'iperf3';
  },
  unavailable: () => (which('iperf3') ? null : 'iperf3 is not installed (Debian: apt-get install iperf3)'),
  notApplicable: () => null,
  async run({ cell, imageBytes, net, signal }: PeerRunInput): Promise<PeerSample> {
    const port = await freePort();
    const [sc, sa] = net.wrap('recv', 'iperf3', ['-s', '-1', '-B', net.recvAddr, '-p', String(port)]);
    const server = start(sc, sa);
    try {
      await waitListening(server, port, 'iperf3 -s', signal);
      const [cc, ca] = net.wrap('send', 'iperf3', [
        '-c',
        net.recvAddr,
        '-p',
        String(port),
        '-n',
        String(imageBytes),
        '-P',
        String(Math.min(cell.channels, 128)),
        '-J',
      ]);
      const rx0 = net.rxBytes();
      const c = await waitFor(start(cc, ca), signal);
      const linkBytes = net.rxBytes() - rx0;
      let j: IperfJson;
      try {
        j = JSON.parse(c.stdout) as IperfJson;
      } catch {
        throw new Error(`iperf3 -c exited ${c.code}: ${tail(c.stderr || c.stdout)}`);
      }
      const bps = j.end?.sum_received?.bits_per_second;
      if (c.code !== 0 || j.error || !bps) throw new Error(`iperf3 -c exited ${c.code}: ${j.error ?? tail(c.stderr)}`);
      return { bytesPerSec: bps / 8, linkBytes: Number.isFinite(linkBytes) ? linkBytes : null };
    } finally {
      server.kill();
      await server.done;
    }
  },
};
