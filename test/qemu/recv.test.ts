/**
 * mfd recv --qemu against QEMU itself, 7.2 and 10.0: one paused `-M none` VM per QEMU, whose RAM
 * is an image file, migrates again and again into mfd (a source that completed may migrate anew),
 * once per setting; each received ramblock must equal the image byte for byte. QEMU 7.2: without
 * multifd, and none, zlib, zstd over 1 and 4 channels. QEMU 10.0: without multifd, and none, zlib,
 * zstd over 1, 4 and 8 channels with each zero-page-detection (multifd: zero pages in the packets'
 * zero_pages field; legacy: ZERO records on the main channel; none: sent as data), the per-round
 * sync (MULTIFD_FLUSH) and the switchover-start command of 10.0's machine types.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, makeImage, sha256, pagesDigest } from '../helpers/index.js';
import { QEMU_BUILDS, launch, listenQemu, noneMachine, migrateTo, waitMigration, type QemuBuild, type Vm } from '../helpers/qemu.js';

const SIZE = 8 * 1024 * 1024;

interface Setup {
  /** multifd-channels; 0: multifd off. */
  channels: number;
  compression: string;
  /** zero-page-detection (QEMU 9.0+); undefined: the QEMU's default. */
  zpd?: string;
}

/** One migration of `vm` into a fresh mfd recv --qemu; the source must complete. */
async function migrate(t: Test, vm: Vm, dir: string, s: Setup) {
  const out = fs.mkdtempSync(path.join(dir, 'out-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  await vm.qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: s.channels > 0 }] });
  const params: Record<string, unknown> = s.channels > 0 ? { 'multifd-channels': s.channels, 'multifd-compression': s.compression } : {};
  if (s.zpd) params['zero-page-detection'] = s.zpd;
  if (Object.keys(params).length > 0) await vm.qmp.cmd('migrate-set-parameters', params);
  const stop = new AbortController();
  t.teardown(() => stop.abort('test ended'));
  // --channels (the source's multifd-channels) where it is not 1; with 1, as many as connect: both ways on every QEMU.
  const hint = s.channels !== 1 ? { channels: s.channels } : {};
  const { port, result } = await listenQemu({ outputDir: out, timeoutMs: 20_000, signal: stop.signal, ...hint });
  await migrateTo(vm.qmp, port);
  try {
    const r = await result;
    const st = await waitMigration(vm.qmp, 'completed');
    t.equal(st.status, 'completed', `source completed ${st['error-desc'] ?? ''}`);
    return { r, out };
  } finally {
    // Whatever the outcome, the next setup gets an ordinary paused VM: a source that completed stays
    // paused in postmigrate, from which QEMU refuses to migrate; cont and stop make it an ordinary
    // paused VM again (-M none has no CPU: its RAM stays the image). A failed one is cancelled first.
    const st = await vm.qmp.cmd<{ status?: string }>('query-migrate');
    if (st.status !== 'completed' && st.status !== 'failed') {
      await vm.qmp.cmd('migrate_cancel').catch(() => {});
      await waitMigration(vm.qmp, 'cancelled', 10_000);
    }
    await vm.qmp.cmd('cont').catch(() => {});
    await vm.qmp.cmd('stop').catch(() => {});
  }
}

function label(s: Setup): string {
  if (s.channels === 0) return `without multifd${s.zpd ? `, zero-page-detection ${s.zpd}` : ''}: PAGE records on the main channel`;
  return `multifd ${s.compression}, ${s.channels} channels${s.zpd ? `, zero-page-detection ${s.zpd}` : ''}`;
}

function setups(b: QemuBuild): Setup[] {
  const methods = (process.env.QP_METHODS ?? 'none,zlib,zstd').split(',');
  const out: Setup[] = [{ channels: 0, compression: 'none' }];
  if (b.series === '7.2') {
    for (const compression of methods) for (const channels of [1, 4]) out.push({ channels, compression });
  } else {
    for (const zpd of ['multifd', 'legacy', 'none'])
      for (const compression of methods) for (const channels of [1, 4, 8]) out.push({ channels, compression, zpd });
  }
  return out;
}

for (const b of QEMU_BUILDS) {
  t.test(`QEMU ${b.series} -M none into mfd recv --qemu`, { skip: b.missing }, async (t) => {
    const dir = tmpdir(t);
    const image = makeImage(path.join(dir, 'image.ram'), SIZE, 'mixed', 7);
    const imageSha = sha256(image);
    const zeroPages = (() => {
      const buf = fs.readFileSync(image);
      let n = 0;
      for (let p = 0; p < SIZE; p += 4096) if (buf.subarray(p, p + 4096).every((x) => x === 0)) n++;
      return n;
    })();
    const vm = await launch(dir, 'src', noneMachine(image, SIZE), b);
    t.teardown(() => vm.quit());
    for (const setup of setups(b)) {
      await t.test(label(setup), async (t) => {
        const { r, out } = await migrate(t, vm, dir, setup);
        t.equal(sha256(path.join(out, 'mem')), imageSha, 'ramblock mem equals the image');
        const m = r.manifest;
        t.equal(m.channels, setup.channels);
        t.equal(m.method, setup.channels === 0 ? null : setup.compression);
        t.equal(m.qemu.machineType, 'none');
        t.same(
          m.ramblocks.map((x) => [x.name, x.size, x.file]),
          [['mem', SIZE, 'mem']],
        );
        t.equal(m.ramblocks[0]!.digest, pagesDigest(image), 'the manifest has the digest of the image');
        t.equal(m.deviceState.vmDescription, true, 'the stream ended with the VM description');
        t.ok(m.deviceState.size > 0 && fs.statSync(path.join(out, 'device-state')).size === m.deviceState.size, 'device state saved');
        t.same(JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')), m, 'manifest.json written');
        const c = m.counts;
        t.equal(
          m.switchoverStart,
          b.series !== '7.2',
          b.series === '7.2' ? 'no switchover-start before 10.0' : 'QEMU 10.0 sent MIG_CMD_SWITCHOVER_START',
        );
        if (setup.channels > 0) {
          if (b.series === '7.2') t.equal(m.syncMode, 'section', 'QEMU 7.2 syncs per RAM section');
          else t.equal(m.syncMode, 'round', "QEMU 10.0's -M none syncs per pass (MULTIFD_FLUSH)");
        }
        if (setup.channels === 0) {
          t.ok(c.pageRecords! > 0, 'pages came as PAGE records');
          return;
        }
        const syncs = m.syncMode === 'round' ? c.flushRecords! : c.ramSections!;
        t.ok(syncs > 0);
        t.equal(
          c.syncPackets,
          setup.channels * syncs,
          `one SYNC per channel per ${m.syncMode === 'round' ? 'MULTIFD_FLUSH record' : 'RAM section'}`,
        );
        if (setup.zpd === 'multifd') {
          t.equal(c.multifdZeroPages, zeroPages, "every zero page in a multifd packet's zero_pages");
          t.equal(c.zeroRecords, 0, 'no ZERO records on the main channel');
        } else if (setup.zpd === 'none') {
          t.equal(c.multifdZeroPages, 0);
          t.equal(c.zeroRecords, 0);
          t.equal(c.multifdNormalPages, SIZE / 4096, 'zero pages sent as data');
        } else {
          t.equal(c.multifdZeroPages, 0, 'no zero_pages in the packets');
          t.equal(c.zeroRecords, zeroPages, 'zero pages as ZERO records on the main channel');
        }
      });
    }
  });
}
