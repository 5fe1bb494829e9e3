/**
 * The shape mfd send --qemu gives the stream (replayShape): the flags when given; else what the
 * machine type's compat properties give a destination of that type; else what the source did.
 */
import t from 'tap';
import { machineVersion, replayShape, type QemuManifest } from '../../src/qemu/manifest.js';

const manifest = (machineType: string | null, syncMode: 'section' | 'round', switchoverStart?: boolean): QemuManifest =>
  ({ qemu: { machineType }, syncMode, ...(switchoverStart === undefined ? {} : { switchoverStart }) }) as unknown as QemuManifest;

t.test('machine type versions', async (t) => {
  t.same(machineVersion('pc-q35-7.2'), [7, 2]);
  t.same(machineVersion('pc-i440fx-10.0'), [10, 0]);
  t.equal(machineVersion('none'), null);
  t.equal(machineVersion(null), null);
});

t.test('a versioned machine type decides, whatever the source did', async (t) => {
  t.match(replayShape(manifest('pc-q35-7.2', 'round', true)), { syncMode: 'section', switchoverStart: false });
  t.match(
    replayShape(manifest('pc-q35-8.0', 'round')),
    { syncMode: 'section', switchoverStart: false },
    '8.0 types flush after each section (hw_compat_8_0)',
  );
  t.match(replayShape(manifest('pc-q35-8.1', 'section')), { syncMode: 'round', switchoverStart: false });
  t.match(
    replayShape(manifest('pc-q35-9.2', 'section')),
    { syncMode: 'round', switchoverStart: false },
    '9.2 types do not send switchover-start (hw_compat_9_2)',
  );
  t.match(replayShape(manifest('pc-q35-10.0', 'section', false)), { syncMode: 'round', switchoverStart: true });
  t.match(
    replayShape(manifest('pc-q35-10.0', 'round', true)).why,
    /multifd-flush-after-each-section off \(machine type pc-q35-10\.0\), send-switchover-start on \(machine type pc-q35-10\.0\)/,
  );
});

t.test('an unversioned machine type: as the source did (an old manifest without switchoverStart: off)', async (t) => {
  t.match(replayShape(manifest('none', 'round', true)), { syncMode: 'round', switchoverStart: true });
  t.match(replayShape(manifest('none', 'section')), { syncMode: 'section', switchoverStart: false });
  t.match(replayShape(manifest('none', 'section')).why, /\(the source \(machine type none has no version\)\)/);
});

t.test('the flags win', async (t) => {
  t.match(replayShape(manifest('pc-q35-10.0', 'round', true), true, false), { syncMode: 'section', switchoverStart: false });
  t.match(replayShape(manifest('none', 'section'), false, true), { syncMode: 'round', switchoverStart: true });
  t.match(
    replayShape(manifest('none', 'section'), false).why,
    /multifd-flush-after-each-section off \(flag\), send-switchover-start off \(the source/,
  );
});

t.test('where zero pages go: in multifd packets for a 9.0+ destination, else ZERO records', async (t) => {
  const withZeros = (machineType: string, switchoverStart: boolean, multifdZeroPages: number): QemuManifest =>
    ({ ...manifest(machineType, 'round', switchoverStart), counts: { multifdZeroPages } }) as QemuManifest;
  t.equal(replayShape(manifest('pc-q35-8.2', 'round')).zeroPageDetection, 'legacy', '8.2 types force legacy (hw_compat_8_2)');
  t.equal(replayShape(manifest('pc-q35-9.0', 'round')).zeroPageDetection, 'multifd');
  t.equal(replayShape(withZeros('none', true, 5)).zeroPageDetection, 'multifd', 'unversioned: as the source did');
  t.equal(replayShape(withZeros('none', true, 0)).zeroPageDetection, 'legacy', 'a source that sent ZERO records');
  t.equal(replayShape(withZeros('none', false, 5)).zeroPageDetection, 'legacy', 'no switchover-start: a destination before 10.0');
  t.equal(replayShape(manifest('none', 'round', true)).zeroPageDetection, 'legacy', 'an old manifest without counts');
  const flag = replayShape(withZeros('none', true, 5), undefined, undefined, 'legacy');
  t.equal(flag.zeroPageDetection, 'legacy', 'the flag wins');
  t.match(flag.why, /zero-page-detection legacy \(flag\)/);
});
