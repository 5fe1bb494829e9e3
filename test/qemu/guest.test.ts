/**
 * A booted guest, migrated while it runs: QEMU 10.0 boots a small Linux guest (Debian's kernel,
 * busybox, an init that counts heartbeats on the serial port), migrates it running over 4 multifd
 * channels into mfd recv --qemu, and mfd send --qemu replays the capture, device state and all,
 * into a fresh QEMU 10.0 destination. After `cont` the guest goes on counting from where the
 * source stopped: its memory and its devices came through.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, sha256 } from '../helpers/index.js';
import { QEMU10, launch, listenIncoming, listenQemu, q35Machine, setMigration, migrateTo, waitMigration } from '../helpers/qemu.js';
import { guestArgs, guestMissing, heartbeats, makeGuest } from '../helpers/guest.js';
import { sendQemu } from '../../src/qemu/replay.js';
import { silentLogger } from '../../src/log.js';
import { sleep } from '../../src/proc/proc.js';

const SIZE = 256 * 1024 * 1024;
const CHANNELS = 4;

/** Waits until the guest writing `serial` has printed a heartbeat above `above`; returns the heartbeats. */
async function beatsAbove(serial: string, above: number, timeoutMs: number): Promise<number[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const hb = heartbeats(serial);
    if (hb.some((n) => n > above) || Date.now() > end) return hb;
    await sleep(200);
  }
}

t.test(
  'a running guest: QEMU 10.0 -> mfd recv --qemu -> mfd send --qemu -> QEMU 10.0, then cont',
  { skip: QEMU10.missing || guestMissing },
  async (t) => {
    const root = tmpdir(t);
    const guest = makeGuest(root);
    const srcRam = path.join(root, 'src.ram');
    const srcSerial = path.join(root, 'src.serial');
    const src = await launch(root, 'src', [...q35Machine(srcRam, SIZE), ...guestArgs(guest, srcSerial)], QEMU10);
    t.teardown(() => src.quit());
    await src.qmp.cmd('cont');
    const booted = await beatsAbove(srcSerial, 2, 120_000);
    t.ok(booted.length >= 3, `the guest booted on the source (heartbeats ${booted.slice(-1)})`);

    // Migrated while it runs: the guest keeps counting (and dirtying its memory) until QEMU stops it.
    const cap = path.join(root, 'capture');
    fs.mkdirSync(cap);
    const { port, result } = await listenQemu({ outputDir: cap, timeoutMs: 60_000 });
    await setMigration(src.qmp, { channels: CHANNELS, compression: 'zstd' });
    t.equal((await src.qmp.cmd<{ status: string }>('query-status')).status, 'running', 'the source runs while it migrates');
    await migrateTo(src.qmp, port);
    const { manifest } = await result;
    const st = await waitMigration(src.qmp, 'completed', 60_000);
    t.equal(st.status, 'completed', `the source completed ${st['error-desc'] ?? ''}`);
    t.equal(sha256(path.join(cap, 'mem')), sha256(srcRam), "mfd's capture of the guest's RAM equals the stopped source's");
    t.ok(manifest.deviceState.size > 0, `device state captured (${manifest.deviceState.size} bytes)`);
    const last = Math.max(...heartbeats(srcSerial));
    await src.quit();

    const dstRam = path.join(root, 'dst.ram');
    const dstSerial = path.join(root, 'dst.serial');
    const dst = await launch(root, 'dst', [...q35Machine(dstRam, SIZE), ...guestArgs(guest, dstSerial), '-incoming', 'defer'], QEMU10);
    t.teardown(() => dst.quit());
    const dstPort = await listenIncoming(dst.qmp, { channels: CHANNELS, compression: 'zstd' });
    await sendQemu({
      host: '127.0.0.1',
      port: dstPort,
      dir: cap,
      channels: CHANNELS,
      compression: 'zstd',
      methodParams: {},
      connectTimeoutMs: 5000,
      logger: silentLogger,
    });
    const dstSt = await waitMigration(dst.qmp, 'completed', 60_000);
    t.equal(dstSt.status, 'completed', `the destination completed ${dstSt['error-desc'] ?? ''}`);
    t.equal(sha256(dstRam), sha256(srcRam), "the destination's RAM equals the source's");
    t.same(heartbeats(dstSerial), [], 'the destination has not run the guest before cont');
    await dst.qmp.cmd('cont');
    t.equal((await dst.qmp.cmd<{ status: string }>('query-status')).status, 'running', 'the guest runs after cont');
    const after = await beatsAbove(dstSerial, last, 60_000);
    t.ok(
      after.length > 0 && after[0]! > last,
      `the guest counts on from the source's last heartbeat ${last}: ${after.slice(0, 3).join(', ')}`,
    );
    t.ok(
      after.every((n, i) => i === 0 || n === after[i - 1]! + 1),
      'heartbeat by heartbeat',
    );
  },
);
