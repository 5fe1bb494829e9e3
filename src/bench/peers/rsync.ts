/**
 * rsync, as an operator sends an image against an older copy at the destination: the old image
 * is in place, `rsync --no-whole-file --inplace` (rolling checksums on fixed blocks, only what
 * differs sent) to an rsync daemon on the receiving side. Delta cells only. Its bytes are its own
 * `--stats` (sent plus received).
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { compareFiles } from '../files.js';
import { freePort, start, syncDisks, tail, waitFor, waitListening, which, type Proc } from '../../proc/proc.js';
import { isDeltaCell } from '../matrix.js';
import type { Peer, PeerRunInput, PeerSample } from './peer.js';

export const rsync: Peer = {
  name: 'rsync',
  label: () => {
    const v = /version (\d[\d.]*)/.exec(spawnSync('rsync', ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1];
    return `rsync${v ? ` ${v}` : ''} --no-whole-file --inplace (daemon)`;
  },
  unavailable: () => (which('rsync') ? null : 'rsync is not installed (Debian: apt-get install rsync)'),
  notApplicable: (cell) => (isDeltaCell(cell) ? null : 'rsync sends against an older copy: only delta cells (--changed, --base) have one'),
  async run({ image, base, workDir, net, signal }: PeerRunInput): Promise<PeerSample> {
    if (base === undefined) throw new Error('rsync: the cell has no base');
    const dest = path.join(workDir, 'rsync-dest');
    fs.rmSync(dest, { recursive: true, force: true });
    fs.mkdirSync(dest);
    const name = path.basename(image);
    const out = path.join(dest, name);
    fs.copyFileSync(base, out);
    const conf = path.join(workDir, 'rsyncd.conf');
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    fs.writeFileSync(conf, `use chroot = no\nuid = ${uid}\ngid = ${gid}\n[dst]\npath = ${dest}\nread only = no\n`);
    syncDisks();
    const port = await freePort();
    let daemon: Proc | undefined;
    let send: Proc | undefined;
    try {
      const [dc, da] = net.wrap('recv', 'rsync', [
        '--daemon',
        '--no-detach',
        `--address=${net.recvAddr}`,
        `--port=${port}`,
        `--config=${conf}`,
      ]);
      daemon = start(dc, da);
      await waitListening(daemon, port, 'rsync --daemon', signal);
      const [sc, sa] = net.wrap('send', 'rsync', [
        '--no-whole-file',
        '--inplace',
        '--stats',
        image,
        `rsync://${net.recvAddr.includes(':') ? `[${net.recvAddr}]` : net.recvAddr}:${port}/dst/${name}`,
      ]);
      const rx0 = net.rxBytes();
      const t0 = process.hrtime.bigint();
      send = start(sc, sa);
      const s = await waitFor(send, signal);
      const wallSec = Number(process.hrtime.bigint() - t0) / 1e9;
      const linkBytes = net.rxBytes() - rx0;
      if (s.code !== 0) throw new Error(`rsync failed: exit ${s.code}: ${tail(s.stderr)}`);
      const num = (re: RegExp): number => Number((re.exec(s.stdout)?.[1] ?? '0').replace(/,/g, ''));
      await compareFiles(image, out, 'rsync');
      return {
        wallSec,
        linkBytes: Number.isFinite(linkBytes) ? linkBytes : null,
        wireBytes: num(/Total bytes sent: ([\d,]+)/) + num(/Total bytes received: ([\d,]+)/),
      };
    } finally {
      for (const p of [send, daemon]) {
        p?.kill();
        await p?.done;
      }
      fs.rmSync(dest, { recursive: true, force: true });
    }
  },
};
