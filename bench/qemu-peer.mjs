// QEMU's own multifd migration of an image, as a peer for `npm run bench`: two paused QEMUs
// (`-M none`), guest RAM from a memory-backend-file with share=on (the image on the source,
// the output on the destination), multifd with the same channel count and method on both
// sides, max-bandwidth raised so QEMU is not throttled, completion polled over QMP on both
// sides, and the destination file compared with the image by the caller.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/** A minimal QMP client: one command at a time, events skipped. */
class Qmp {
  constructor(sock) {
    this.sock = sock;
    this.buf = '';
    this.waiters = [];
    sock.on('data', (d) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        if (msg.event || msg.QMP) continue;
        this.waiters.shift()?.(msg);
      }
    });
  }

  static async connect(file, timeoutMs = 10_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise((resolve, reject) => {
          const s = net.connect(file, () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > end) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  cmd(execute, args) {
    return new Promise((resolve, reject) => {
      this.waiters.push((m) => (m.error ? reject(new Error(`${execute}: ${m.error.desc}`)) : resolve(m.return)));
      this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
  }

  close() {
    this.sock.destroy();
  }
}

function qemu(args) {
  const p = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d) => (err += d));
  return { p, err: () => err };
}

const loBytes = () => Number(fs.readFileSync('/sys/class/net/lo/statistics/rx_bytes', 'utf8'));

/**
 * Migrates `image` into `out` with QEMU. Returns wall seconds from `migrate` to both sides
 * reporting completed, and the bytes that crossed loopback meanwhile (TCP/IP headers included).
 */
export async function qemuMigrate({ image, out, dir, channels, compression, port }) {
  const size = fs.statSync(image).size;
  fs.rmSync(out, { force: true });
  const machine = (mem, share) => [
    '-nodefaults', '-display', 'none', '-S',
    '-machine', 'none,memory-backend=mem', '-m', `${size / 1048576}M`,
    '-object', `memory-backend-file,id=mem,size=${size},mem-path=${mem},share=${share}`,
  ];
  const dstSock = path.join(dir, 'dst.qmp');
  const srcSock = path.join(dir, 'src.qmp');
  fs.rmSync(dstSock, { force: true });
  fs.rmSync(srcSock, { force: true });
  const dst = qemu([...machine(out, 'on'), '-incoming', 'defer', '-qmp', `unix:${dstSock},server=on,wait=off`]);
  const src = qemu([...machine(image, 'on'), '-qmp', `unix:${srcSock},server=on,wait=off`]);
  const qd = await Qmp.connect(dstSock);
  const qs = await Qmp.connect(srcSock);
  try {
    const params = { 'multifd-channels': channels, 'multifd-compression': compression };
    for (const q of [qd, qs]) {
      await q.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
      await q.cmd('migrate-set-parameters', params);
    }
    // QEMU's default max-bandwidth throttles; lift it (bytes per second).
    await qs.cmd('migrate-set-parameters', { 'max-bandwidth': 1e12 });
    await qd.cmd('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
    const lo0 = loBytes();
    const t0 = process.hrtime.bigint();
    await qs.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const done = { src: false, dst: false };
    for (;;) {
      if (!done.src) {
        const s = await qs.cmd('query-migrate');
        if (s.status === 'failed') throw new Error(`QEMU source: migration failed: ${s['error-desc'] ?? ''}`);
        done.src = s.status === 'completed';
      }
      if (!done.dst) {
        const d = await qd.cmd('query-migrate');
        if (d.status === 'failed') throw new Error('QEMU destination: migration failed');
        done.dst = d.status === 'completed';
      }
      if (done.src && done.dst) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    return { wall, loopbackBytes: loBytes() - lo0 };
  } finally {
    for (const q of [qs, qd]) {
      await q.cmd('quit').catch(() => {});
      q.close();
    }
    await Promise.all([src, dst].map(({ p }) => new Promise((r) => (p.exitCode !== null ? r() : p.on('exit', r)))));
  }
}
