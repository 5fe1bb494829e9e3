/** mfd accel: CPU features as /proc/cpuinfo has them, devices parsed from a fake sysfs, nothing claimed that was not probed. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { accelReport } from '../../src/accel/report.js';
import { readQatEndpoints, readWorkQueues } from '../../src/offload/sysfs.js';
import { native } from '../../src/native/load.js';
import { tmpdir } from '../helpers/index.js';
import { built, qplPathNoDevice } from '../helpers/build.js';
import { qatzipState, qplState } from '../../src/offload/state.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');

function write(root: string, rel: string, text: string): void {
  fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
  fs.writeFileSync(path.join(root, rel), text + '\n');
}

function fakeSysfs(root: string): void {
  write(root, 'bus/dsa/devices/dsa0/state', 'enabled');
  write(root, 'bus/dsa/devices/iax1/state', 'enabled');
  for (const [wq, mode, size, state] of [
    ['wq0.0', 'shared', '128', 'enabled'],
    ['wq1.0', 'dedicated', '32', 'disabled'],
  ] as const) {
    write(root, `bus/dsa/devices/${wq}/mode`, mode);
    write(root, `bus/dsa/devices/${wq}/size`, size);
    write(root, `bus/dsa/devices/${wq}/state`, state);
    write(root, `bus/dsa/devices/${wq}/type`, 'user');
  }
  const qat = (bdf: string, dev: string, state: string, services: string): void => {
    write(root, `bus/pci/devices/${bdf}/vendor`, '0x8086');
    write(root, `bus/pci/devices/${bdf}/device`, dev);
    write(root, `bus/pci/devices/${bdf}/qat/state`, state);
    write(root, `bus/pci/devices/${bdf}/qat/cfg_services`, services);
  };
  qat('0000:6b:00.0', '0x4940', 'up', 'sym;dc');
  qat('0000:70:00.0', '0x4942', 'down', 'dc');
  qat('0000:71:00.0', '0x4940', 'up', 'asym;sym');
  write(root, 'bus/pci/devices/0000:00:1f.0/vendor', '0x8086');
  write(root, 'bus/pci/devices/0000:00:1f.0/device', '0x1234');
}

t.test('work queues and QAT endpoints from sysfs', async (t) => {
  const root = tmpdir(t);
  fakeSysfs(root);
  const wqs = readWorkQueues(root);
  t.same(wqs.dsa, [{ name: 'wq0.0', device: 'dsa0', mode: 'shared', size: 128, state: 'enabled', type: 'user', path: '/dev/dsa/wq0.0' }]);
  t.same(wqs.iaa, [
    { name: 'wq1.0', device: 'iax1', mode: 'dedicated', size: 32, state: 'disabled', type: 'user', path: '/dev/iax/wq1.0' },
  ]);
  t.same(
    readQatEndpoints(root).map((q) => [q.bdf, q.compressionUp]),
    [
      ['0000:6b:00.0', true],
      ['0000:70:00.0', false],
      ['0000:71:00.0', false],
    ],
    'compression is up only with state up and a dc service; other PCI devices ignored',
  );
});

t.test('this machine: CPU flags match /proc/cpuinfo; what is compiled and what the probes found, nothing claimed', async (t) => {
  const r = accelReport('/nonexistent-sysfs');
  const flags = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '').split(/\s+/);
  for (const f of ['avx2', 'avx512f', 'avx512bw', 'movdir64b', 'enqcmd'] as const) t.equal(r.cpu[f], flags.includes(f), f);
  t.same(r.devices, { iaa: [], dsa: [], qat: [] });
  t.same(Object.keys(r.backends), ['qpl', 'qatzip', 'dsa'], "the backends the registries' methods and zero-page backends report");
  t.equal(
    r.backends.qpl?.compiled,
    built.qpl !== '',
    `QPL ${built.qpl ? `compiled (${built.qpl})` : 'not compiled'} in the addon under test`,
  );
  t.equal(
    r.backends.qatzip?.compiled,
    built.qatzip !== '',
    `QATzip ${built.qatzip ? `compiled (${built.qatzip})` : 'not compiled'} in the addon under test`,
  );
  if (built.qpl) {
    // No IAA here: the hardware probe fails with QPL's own status, the software path runs.
    t.match(r.backends.qpl, {
      state: 'no-device',
      reason: `built with libqpl ${built.qpl}`,
      probes: [{ ok: false, reason: /qpl_init_job\(qpl_path_hardware\) failed with status 50\d/ }],
      softwarePath: { ok: true },
    });
  } else {
    t.match(r.backends.qpl, { state: 'not-compiled', reason: /not compiled: pkg-config found no qpl/, probes: [{ ok: false }] });
    t.notOk(r.backends.qpl?.softwarePath, 'no library software path to report');
  }
  if (built.qatzip) {
    t.match(r.backends.qatzip, {
      state: 'no-device',
      reason: `built with QATzip ${built.qatzip}`,
      probes: [{ ok: false, reason: 'QATzip status -101: no QAT device' }],
      softwarePath: { ok: true },
    });
  } else {
    t.match(r.backends.qatzip, { state: 'not-compiled', reason: /not compiled: pkg-config found no qatzip/, probes: [{ ok: false }] });
  }
  t.match(r.backends.dsa, { compiled: true, probes: [{ ok: false, reason: /none found under \/nonexistent-sysfs/ }] });
  t.ok(r.zeroPage.accelerators.includes(r.zeroPage.selected));
  t.match(r.run, { compression: 'none', zeroPagePath: /^cpu-/ });
});

t.test('the addon file and the software engines found at run time: ISA-L and CRC-32C, or why not', async (t) => {
  const on = spawnSync(process.execPath, [bin, 'accel'], { encoding: 'utf8' });
  const off = spawnSync(process.execPath, [bin, 'accel', '--json'], { encoding: 'utf8', env: { ...process.env, MFD_ISAL_LIBRARY: 'off' } });
  t.equal(off.status, 0);
  const r = JSON.parse(off.stdout) as { software: { addon: string; isal: unknown; crc32c: string } };
  t.ok(fs.existsSync(r.software.addon), `the addon file exists: ${r.software.addon}`);
  // A build without libisal-dev's headers has no ISA-L to turn off, and says so.
  const builtWithout = /^this build has no ISA-L/.test(native.isalUnavailable ?? '');
  t.same(r.software.isal, { unavailable: builtWithout ? native.isalUnavailable : 'ISA-L is turned off (MFD_ISAL_LIBRARY=off)' });
  t.match(r.software.crc32c, /^(sse4\.2|table)$/, 'CRC-32C by the built-in code');
  t.match(on.stdout, /^addon: .*mfd\.node$/m);
  if (native.isalVersion !== null) {
    t.match(on.stdout, /^isa-l: 2\.\d+\.\d+, loaded from .*libisal\.so\.2/m);
    t.match(on.stdout, /^crc-32c: isa-l 2\.\d+\.\d+ crc32_iscsi$/m);
  }
});

t.test('the plan for given flags: the path each backend takes, or why the run would be refused', async (t) => {
  const r = accelReport('/nonexistent-sysfs', {
    compression: 'qpl',
    zeroPageDetection: 'dsa-accel',
    accelPaths: ['dsa:/dev/null'],
    requireHardware: false,
  });
  t.match(r.run.compressionPath, qplPathNoDevice);
  t.match(r.run.zeroPagePath, /dsa:\/dev\/null: dsa via write, single descriptors/);
  t.match(
    r.backends.dsa?.probes,
    [{ target: '/dev/null', ok: false, submission: 'write', reason: /accepted through write but no completion/ }],
    'the probe submitted a NOOP and got no completion',
  );
  const strict = accelReport('/nonexistent-sysfs', {
    compression: 'qatzip',
    zeroPageDetection: 'multifd',
    accelPaths: [],
    requireHardware: true,
  });
  t.match(strict.run.compressionPath, /^refused: qatzip: Intel QAT through QATzip is required/);
});

t.test('mfd accel --json reads the sysfs it is pointed at', async (t) => {
  const root = tmpdir(t);
  fakeSysfs(root);
  const r = spawnSync(process.execPath, [bin, 'accel', '--json'], { encoding: 'utf8', env: { ...process.env, MFD_SYSFS_ROOT: root } });
  t.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  t.equal(j.devices.dsa.length, 1);
  t.equal(j.devices.qat.filter((q: { compressionUp: boolean }) => q.compressionUp).length, 1);
});

t.test('the four states, from the library status a probe returns (busy and hardware cannot be reached here)', async (t) => {
  t.equal(qplState({ ok: false, version: '', status: -1 }), 'not-compiled');
  t.equal(qplState({ ok: false, version: '1.6.0', status: 501 }), 'no-device', 'QPL_STS_INIT_LIBACCEL_NOT_FOUND');
  t.equal(qplState({ ok: false, version: '1.6.0', status: 503 }), 'no-device', 'work queues not available to this process');
  t.equal(qplState({ ok: false, version: '1.6.0', status: 5 }), 'busy', 'QPL_STS_QUEUES_ARE_BUSY_ERR');
  t.equal(qplState({ ok: true, version: '1.6.0', status: 0 }), 'hardware');
  t.equal(qatzipState({ ok: false, version: '', status: 0 }), 'not-compiled');
  t.equal(qatzipState({ ok: false, version: '2.5', status: -101 }), 'no-device', 'QZ_NOSW_NO_HW');
  t.equal(qatzipState({ ok: false, version: '2.5', status: -103 }), 'busy', 'QZ_NOSW_NO_INST_ATTACH: every instance in use');
  t.equal(qatzipState({ ok: true, version: '2.5', status: 0 }), 'hardware');
});

t.test('mfd accel is quiet: the libraries log nothing of their own, each backend says its state', async (t) => {
  const r = spawnSync(process.execPath, [bin, 'accel', '--compression', 'qatzip'], {
    encoding: 'utf8',
    env: { ...process.env, MFD_SYSFS_ROOT: '/nonexistent-sysfs' },
  });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stderr, '', 'nothing on stderr (QATzip would print "[Error] ... Error no hardware")');
  t.notMatch(r.stdout, /\[Error\]|switch to SW/);
  t.match(r.stdout, built.qpl ? /^qpl: compiled, no device, built with libqpl/m : /^qpl: not compiled: pkg-config found no qpl/m);
  t.match(
    r.stdout,
    built.qatzip
      ? /^qatzip: compiled, no device, built with QATzip[^\n]*\n.*probe QATzip hardware session: failed[^\n]*\n.*library software path, QATzip session with sw_backup: usable/m
      : /^qatzip: not compiled/m,
  );
});
