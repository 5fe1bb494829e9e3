/**
 * mfd recv --qemu against QEMU itself: a paused `-M none` VM whose RAM is an image file migrates
 * into mfd; the received ramblock must equal the image byte for byte (multifd none, zlib, zstd over
 * 1 and 4 channels, and once without multifd).
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, makeImage, sha256 } from '../helpers/index.js';
import { qemuMissing, launch, listenQemu, noneMachine, setMigration, migrateTo, waitMigration, type MigrationSetup } from '../helpers/qemu.js';

const SIZE = 8 * 1024 * 1024;

async function run(t: Test, setup: MigrationSetup) {
  const dir = tmpdir(t);
  const image = makeImage(path.join(dir, 'image.ram'), SIZE, 'mixed', 7);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const { port, result } = await listenQemu({ outputDir: out, timeoutMs: 20_000 });
  const vm = await launch(dir, 'src', noneMachine(image, SIZE));
  try {
    await setMigration(vm.qmp, setup);
    await migrateTo(vm.qmp, port);
    const r = await result;
    const st = await waitMigration(vm.qmp, 'completed');
    t.equal(st.status, 'completed', 'source completed');
    return { r, image, out };
  } finally {
    await vm.quit();
  }
}

t.test('QEMU -M none into mfd recv --qemu', { skip: qemuMissing }, async (t) => {
  const setups: MigrationSetup[] = [{ channels: 0 }];
  for (const compression of (process.env.QP_METHODS ?? 'none,zlib,zstd').split(',')) for (const channels of [1, 4]) setups.push({ channels, compression });
  for (const setup of setups) {
    await t.test(setup.channels === 0 ? 'without multifd: PAGE records on the main channel' : `multifd ${setup.compression}, ${setup.channels} channels`, async (t) => {
      const { r, image, out } = await run(t, setup);
      t.equal(sha256(path.join(out, 'mem')), sha256(image), 'ramblock mem equals the image');
      const m = r.manifest;
      t.equal(m.channels, setup.channels);
      t.equal(m.method, setup.channels === 0 ? null : setup.compression);
      t.equal(m.qemu.machineType, 'none');
      t.same(m.ramblocks.map((b) => [b.name, b.size, b.file]), [['mem', SIZE, 'mem']]);
      t.equal(m.ramblocks[0]!.sha256, sha256(image));
      t.equal(m.deviceState.vmDescription, true, 'the stream ended with the VM description');
      t.ok(m.deviceState.size > 0 && fs.statSync(path.join(out, 'device-state')).size === m.deviceState.size, 'device state saved');
      t.same(JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')), m, 'manifest.json written');
      if (setup.channels === 0) t.ok(m.counts.pageRecords! > 0, 'pages came as PAGE records');
      else t.equal(m.counts.syncPackets, setup.channels * m.counts.ramSections!, 'one SYNC per channel per RAM section');
    });
  }
});
