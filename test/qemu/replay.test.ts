/**
 * A q35 VM (TCG, -nodefaults, paused, 64 MiB on a memory-backend-file) migrates into
 * mfd recv --qemu: every ramblock and the device state land in the directory. mfd send --qemu
 * then replays it into a fresh QEMU destination with the same command line: the destination
 * completes, its RAM file equals the source's, and the guest can be continued.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, makeImage, sha256 } from '../helpers/index.js';
import { qemuMissing, launch, listenQemu, q35Machine, setMigration, migrateTo, waitMigration } from '../helpers/qemu.js';
import { sendQemu } from '../../src/qemu/replay.js';
import { silentLogger } from '../../src/log.js';

const SIZE = 64 * 1024 * 1024;

t.test('q35: QEMU -> mfd recv --qemu -> mfd send --qemu -> QEMU', { skip: qemuMissing }, async (t) => {
  const dir = tmpdir(t);
  const srcRam = makeImage(path.join(dir, 'src.ram'), SIZE, 'mixed', 3);
  const saved = path.join(dir, 'saved');
  fs.mkdirSync(saved);
  const { port, result: received } = await listenQemu({ outputDir: saved, timeoutMs: 30_000 });
  const src = await launch(dir, 'src', q35Machine(srcRam, SIZE));
  t.teardown(() => src.quit());
  await setMigration(src.qmp, { channels: 2, compression: 'zstd' });
  await migrateTo(src.qmp, port);
  const { manifest } = await received;
  t.equal((await waitMigration(src.qmp, 'completed')).status, 'completed', 'source completed');
  await src.quit();

  const names = manifest.ramblocks.map((b) => b.name);
  t.same(names.slice().sort(), ['/rom@etc/acpi/rsdp', '/rom@etc/acpi/tables', '/rom@etc/table-loader', 'mem', 'pc.bios', 'pc.rom'].sort(), 'every q35 ramblock');
  for (const b of manifest.ramblocks) t.equal(fs.statSync(path.join(saved, b.file)).size, b.size, `${b.name} saved as ${b.file}`);
  t.equal(manifest.ramblocks.find((b) => b.name === '/rom@etc/acpi/tables')?.file, '%2From@etc%2Facpi%2Ftables', 'names made safe as file names');
  t.equal(sha256(path.join(saved, 'mem')), sha256(srcRam), 'mem equals the source RAM file');
  t.match(manifest.qemu.machineType, /^pc-q35-/, 'machine type from the configuration section');
  t.ok(manifest.deviceState.size > 1000, `device state saved (${manifest.deviceState.size} bytes)`);
  const blob = fs.readFileSync(path.join(saved, 'device-state'));
  t.ok(blob.includes(Buffer.from('globalstate')), 'device state holds the device sections');

  for (const { channels, compression } of [{ channels: 2, compression: 'zlib' }, { channels: 0, compression: 'none' }]) {
    await t.test(channels ? `replay over ${channels} multifd channels, ${compression}` : 'replay without multifd (PAGE records)', async (t) => {
      const dstRam = path.join(dir, `dst-${channels}.ram`);
      const dst = await launch(dir, `dst${channels}`, [...q35Machine(dstRam, SIZE), '-incoming', 'defer']);
      t.teardown(() => dst.quit());
      await setMigration(dst.qmp, { channels, compression });
      await dst.qmp.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
      const info = await dst.qmp.cmd<{ 'socket-address'?: { port?: string }[] }>('query-migrate');
      const dport = Number(info['socket-address']?.[0]?.port);
      const r = await sendQemu({ host: '127.0.0.1', port: dport, dir: saved, channels, compression, methodParams: {}, connectTimeoutMs: 5000, logger: silentLogger });
      t.equal(r.channels, channels);
      t.equal(r.normalPages + r.zeroPages, SIZE / 4096 + (manifest.ramblocks.reduce((a, b) => a + b.size, 0) - SIZE) / 4096, 'every page sent once');
      const st = await waitMigration(dst.qmp, 'completed');
      t.equal(st.status, 'completed', `destination completed ${st['error-desc'] ?? ''}`);
      t.equal(sha256(dstRam), sha256(srcRam), "destination's RAM file equals the source's");
      await dst.qmp.cmd('cont');
      const status = await dst.qmp.cmd<{ status: string }>('query-status');
      t.equal(status.status, 'running', 'the guest runs after cont');
    });
  }

  await t.test('a destination expecting more channels than sent: a clear error, not a hang', async (t) => {
    const dst = await launch(dir, 'dst-mismatch', [...q35Machine(path.join(dir, 'dst-mismatch.ram'), SIZE), '-incoming', 'defer']);
    t.teardown(() => dst.quit());
    await setMigration(dst.qmp, { channels: 2, compression: 'none' });
    await dst.qmp.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
    const info = await dst.qmp.cmd<{ 'socket-address'?: { port?: string }[] }>('query-migrate');
    const dport = Number(info['socket-address']?.[0]?.port);
    const sent = sendQemu({ host: '127.0.0.1', port: dport, dir: saved, channels: 1, compression: 'none', methodParams: {}, connectTimeoutMs: 5000, stallTimeoutMs: 1500, logger: silentLogger });
    await t.rejects(sent, { code: 'ERR_QEMU_DESTINATION_STALLED', message: /is --channels the destination's multifd-channels/ });
  });
});
