/**
 * A tiny Linux guest for the booted-guest QEMU test: Debian's kernel and busybox-static (fetched by
 * .ci/fetch-guest) and an initramfs built here, whose /init prints a heartbeat on the serial port,
 * `HB <n>`, n counting up from 1 in the guest's own memory. A guest that prints a later n on the
 * destination than it did on the source ran on, with its memory, after the migration.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

const guestDir = process.env.MFD_GUEST_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'mfd', 'guest');

export interface Guest {
  kernel: string;
  initrd: string;
}

/** Why the guest cannot be had here, or false. */
export const guestMissing: string | false =
  fs.existsSync(path.join(guestDir, 'vmlinuz')) && fs.existsSync(path.join(guestDir, 'busybox'))
    ? false
    : `no guest kernel and busybox in ${guestDir}: run .ci/fetch-guest (Debian's linux-image-amd64 and busybox-static), or set MFD_GUEST_DIR`;

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev /bin
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox echo GUEST-UP
n=0
while :; do n=$((n + 1)); /bin/busybox echo "HB $n"; /bin/busybox sleep 0.2; done
`;

/** One newc cpio entry (the initramfs format): a 110-byte ASCII header, the name, the data, each padded to 4 bytes. */
function entry(name: string, mode: number, data: Buffer = Buffer.alloc(0), rdev: [number, number] = [0, 0]): Buffer {
  const fields = [1, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], name.length + 1, 0];
  const head = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'ascii');
  const pad = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  const nameBytes = Buffer.concat([Buffer.from(name, 'ascii'), Buffer.alloc(1)]);
  return Buffer.concat([head, nameBytes, pad(head.length + nameBytes.length), data, pad(data.length)]);
}

/** Writes the guest's initramfs into `dir` (the kernel is used where .ci/fetch-guest put it). */
export function makeGuest(dir: string): Guest {
  const cpio = Buffer.concat([
    entry('bin', 0o040755),
    entry('bin/busybox', 0o100755, fs.readFileSync(path.join(guestDir, 'busybox'))),
    entry('dev', 0o040755),
    entry('dev/console', 0o020600, Buffer.alloc(0), [5, 1]),
    entry('init', 0o100755, Buffer.from(INIT)),
    entry('TRAILER!!!', 0),
  ]);
  const initrd = path.join(dir, 'initramfs.cpio.gz');
  fs.writeFileSync(initrd, zlib.gzipSync(cpio));
  return { kernel: path.join(guestDir, 'vmlinuz'), initrd };
}

/** The kernel and initramfs on QEMU's command line, console on the serial port written to `serial`. */
export function guestArgs(g: Guest, serial: string): string[] {
  return ['-kernel', g.kernel, '-initrd', g.initrd, '-append', 'console=ttyS0 panic=-1 quiet', '-serial', `file:${serial}`];
}

/** The heartbeats the guest has printed to `serial` so far. */
export function heartbeats(serial: string): number[] {
  const text = fs.existsSync(serial) ? fs.readFileSync(serial, 'latin1') : '';
  return [...text.matchAll(/^HB (\d+)\r?$/gm)].map((m) => Number(m[1]));
}
